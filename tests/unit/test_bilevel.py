"""Unit tests for blur_core.bilevel: the BLUR direction, the weighted sum and clipping.

Hand-worked example used throughout (two "parameters", F and R split the same way):

    F = [1, 0], [2]        R = [0, 1], [1]
    a = <R, F> = 0 + 0 + 2 = 2,   ||F||^2 = 1 + 0 + 4 = 5,   ||R||^2 = 0 + 1 + 1 = 2
    cos(F, R) = 2 / sqrt(10)

forget_priority, gamma = 0.5:  xi = 0.5 - 2/5 = 0.1
    d = R + 0.1 F = [0.1, 1], [1.2];  ||d||^2 = 0.01 + 1 + 1.44 = 2.45;  <d,F> = 2.5 = 0.5 * 5
forget_priority, gamma = 2:    xi = 2 - 0.4 = 1.6
    d = [1.6, 1], [4.2];  ||d||^2 = 2.56 + 1 + 17.64 = 21.2
retain_priority, gamma = 0.5:  xi = 0.5 - 2/2 = -0.5
    d = F - 0.5 R = [1, -0.5], [1.5];  ||d||^2 = 1 + 0.25 + 2.25 = 3.5;  <d,R> = 1 = 0.5 * 2
retain_priority, gamma = 2:    xi = 2 - 1 = 1
    d = F + R = [1, 1], [3];  ||d||^2 = 11
"""

from __future__ import annotations

import math

import pytest
import torch

import blur_core.bilevel as bilevel
from blur_core.bilevel import (
    DirectionStats,
    blur_direction,
    clip_coefficient,
    dual_update,
    partial_sums,
    pdu_direction,
    weighted_sum,
)

F64 = torch.float64
SQRT5, SQRT2 = math.sqrt(5.0), math.sqrt(2.0)
COS_FR = 2.0 / math.sqrt(10.0)


def small(dtype=F64):
    forget = [torch.tensor([1.0, 0.0], dtype=dtype), torch.tensor([2.0], dtype=dtype)]
    retain = [torch.tensor([0.0, 1.0], dtype=dtype), torch.tensor([1.0], dtype=dtype)]
    return forget, retain


def as_list(tensors):
    return [v for t in tensors for v in t.reshape(-1).tolist()]


def fdot(xs, ys):
    """<x, y> over lists of tensors, in float64 (test-side reference)."""
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(xs, ys))


def randn_list(gen, shapes, dtype=F64):
    return [torch.randn(*s, generator=gen, dtype=F64).to(dtype) for s in shapes]


# ----------------------------------------------------------------- hand-computed values

HAND = {
    # (variant, gamma): (xi, d, ||d||^2)
    ("forget_priority", 0.5): (0.1, [0.1, 1.0, 1.2], 2.45),
    ("forget_priority", 2.0): (1.6, [1.6, 1.0, 4.2], 21.2),
    ("retain_priority", 0.5): (-0.5, [1.0, -0.5, 1.5], 3.5),
    ("retain_priority", 2.0): (1.0, [1.0, 1.0, 3.0], 11.0),
}


@pytest.mark.parametrize(("variant", "gamma"), sorted(HAND))
def test_blur_direction_hand_values(variant, gamma):
    forget, retain = small()
    xi, d_exp, sq_d = HAND[(variant, gamma)]
    d, stats = blur_direction(forget, retain, gamma, variant=variant)

    assert [t.shape for t in d] == [torch.Size([2]), torch.Size([1])]
    assert as_list(d) == pytest.approx(d_exp, rel=1e-12, abs=1e-15)
    s = stats.to_dict()
    assert s["xi"] == pytest.approx(xi, rel=1e-12)
    assert s["dot"] == 2.0
    assert s["norm_f"] == pytest.approx(SQRT5, rel=1e-12)
    assert s["norm_r"] == pytest.approx(SQRT2, rel=1e-12)
    assert s["cosine"] == pytest.approx(COS_FR, rel=1e-12)
    assert s["fallback"] == 0.0
    assert s["norm_d"] == pytest.approx(math.sqrt(sq_d), rel=1e-12)
    # norm_d is the norm of the returned d
    assert s["norm_d"] == pytest.approx(math.sqrt(sum(v * v for v in as_list(d))), rel=1e-12)


def test_default_variant_is_forget_priority():
    forget, retain = small()
    d, _stats = blur_direction(forget, retain, 0.5)
    assert as_list(d) == pytest.approx([0.1, 1.0, 1.2], rel=1e-12)


def test_multidim_tensors_keep_shape():
    # F = [[1, 2], [0, 1]], R = [[1, 0], [1, 1]]: a = 1 + 0 + 0 + 1 = 2, ||F||^2 = 6
    # gamma = 1: xi = 1 - 2/6 = 2/3, d = R + 2/3 F
    forget = [torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64)]
    retain = [torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=F64)]
    d, stats = blur_direction(forget, retain, 1.0)
    assert d[0].shape == (2, 2)
    third = 1.0 / 3.0
    assert d[0].reshape(-1).tolist() == pytest.approx(
        [1 + 2 * third, 4 * third, 1.0, 1 + 2 * third], rel=1e-12
    )
    assert float(stats.xi) == pytest.approx(2 * third, rel=1e-12)


# ----------------------------------------------------------------- the defining property

SHAPES = [(17,), (3, 5), (4, 2, 3)]


def _property_residual(variant, gamma, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    forget = randn_list(gen, SHAPES, dtype)
    retain = randn_list(gen, SHAPES, dtype)
    d, _stats = blur_direction(forget, retain, gamma, variant=variant)
    prio = forget if variant == "forget_priority" else retain
    lhs = fdot(d, prio)
    rhs = gamma * fdot(prio, prio)
    scale = math.sqrt(fdot(forget, forget) * fdot(retain, retain)) + abs(rhs)
    return abs(lhs - rhs) / scale


@pytest.mark.parametrize("variant", ["forget_priority", "retain_priority"])
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0, 5.0])
def test_descent_property_float64_exact(variant, gamma):
    assert _property_residual(variant, gamma, F64) <= 1e-10


@pytest.mark.parametrize("variant", ["forget_priority", "retain_priority"])
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_descent_property_fp32_level(variant, gamma, dtype):
    # <d, F> = gamma ||F||^2 (forget_priority), <d, R> = gamma ||R||^2 (retain_priority),
    # to the fp32-reduction precision the implementation currently has.
    assert _property_residual(variant, gamma, dtype, seed=1) <= 1e-5


def test_property_residual_has_signal():
    # A wrong direction (d = R, i.e. xi forced to 0) violates the property by O(1).
    gen = torch.Generator().manual_seed(0)
    forget, retain = randn_list(gen, SHAPES), randn_list(gen, SHAPES)
    lhs, rhs = fdot(retain, forget), 1.0 * fdot(forget, forget)
    assert abs(lhs - rhs) / (math.sqrt(fdot(forget, forget) * fdot(retain, retain)) + rhs) > 1e-2


@pytest.mark.parametrize("alpha", [2.0, 7.5, 1200.0])
def test_gamma_one_over_alpha_is_the_wmdp_reference_update_scaled(alpha):
    """The reference BLUR code's WMDP update g = F + alpha (R - (<F,R>/||F||^2) F) is
    alpha * d with d the forget-priority direction at gamma = 1/alpha (float64, exact)."""
    gen = torch.Generator().manual_seed(11)
    F = [torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)]
    R = [torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)]
    ratio = sum((f * r).sum() for f, r in zip(F, R)) / sum((f * f).sum() for f in F)
    g = [f + alpha * (r - ratio * f) for f, r in zip(F, R)]
    d, stats = blur_direction(F, R, gamma=1.0 / alpha)
    for gi, di in zip(g, d):
        torch.testing.assert_close(alpha * di, gi, rtol=1e-12, atol=1e-12)
    assert float(stats.xi) == pytest.approx(1.0 / alpha - float(ratio), abs=1e-12)
    assert max(float((gi - di).abs().max()) for gi, di in zip(g, d)) > 1e-3  # alpha matters


def test_orthogonal_gamma_zero_gives_retain_exactly():
    forget = [torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([[0.0, 3.0]], dtype=F64)]
    retain = [torch.tensor([0.0, 2.0, -1.0], dtype=F64), torch.tensor([[5.0, 0.0]], dtype=F64)]
    d, stats = blur_direction(forget, retain, 0.0)
    assert all(torch.equal(x, r) for x, r in zip(d, retain))
    assert float(stats.xi) == 0.0
    assert float(stats.dot) == 0.0
    assert float(stats.cosine) == 0.0
    assert float(stats.fallback) == 0.0


# ----------------------------------------------------------------- eps fallback


def test_fallback_forget_zero_gives_retain():
    forget = [torch.zeros(2, dtype=F64), torch.zeros(1, dtype=F64)]
    _, retain = small()
    d, stats = blur_direction(forget, retain, 0.5)
    assert as_list(d) == [0.0, 1.0, 1.0]
    s = stats.to_dict()
    assert s["fallback"] == 1.0
    assert s["xi"] == 0.0
    assert s["norm_f"] == 0.0
    assert s["cosine"] == 0.0
    assert s["norm_d"] == pytest.approx(SQRT2, rel=1e-12)
    assert all(math.isfinite(v) for v in s.values())


def test_fallback_tiny_forget_with_large_eps():
    # ||F||^2 = 1e-6 + 4e-6 = 5e-6 <= eps = 1e-3 -> fallback, although F != 0
    forget = [torch.tensor([1e-3, 0.0], dtype=F64), torch.tensor([2e-3], dtype=F64)]
    _, retain = small()
    d, stats = blur_direction(forget, retain, 0.5, eps=1e-3)
    assert as_list(d) == [0.0, 1.0, 1.0]
    assert float(stats.fallback) == 1.0
    assert float(stats.xi) == 0.0
    # same input with the default eps: no fallback, xi = 0.5 - 2e-3 / 5e-6 = -399.5
    _d2, stats2 = blur_direction(forget, retain, 0.5)
    assert float(stats2.fallback) == 0.0
    assert float(stats2.xi) == pytest.approx(-399.5, rel=1e-5)


def test_fallback_retain_priority_retain_zero_gives_forget():
    forget, _ = small()
    retain = [torch.zeros(2, dtype=F64), torch.zeros(1, dtype=F64)]
    d, stats = blur_direction(forget, retain, 0.5, variant="retain_priority")
    assert as_list(d) == [1.0, 0.0, 2.0]
    assert float(stats.fallback) == 1.0
    assert float(stats.xi) == 0.0
    assert float(stats.norm_d) == pytest.approx(SQRT5, rel=1e-12)


def test_retain_priority_does_not_fall_back_on_zero_forget():
    # Only the priority gradient's norm is guarded: retain_priority with F = 0 is regular.
    # a = 0, ||R||^2 = 2, gamma = 0.5: xi = 0.5, d = 0 + 0.5 R
    forget = [torch.zeros(2, dtype=F64), torch.zeros(1, dtype=F64)]
    _, retain = small()
    d, stats = blur_direction(forget, retain, 0.5, variant="retain_priority")
    assert as_list(d) == pytest.approx([0.0, 0.5, 0.5], rel=1e-12)
    assert float(stats.fallback) == 0.0
    assert float(stats.xi) == 0.5


# ----------------------------------------------------------------- inplace


def test_inplace_forget_priority_writes_retain():
    forget, retain = small()
    forget_before = [t.clone() for t in forget]
    ids = [id(t) for t in retain]
    d, _ = blur_direction(forget, retain, 0.5, inplace=True)
    assert [id(t) for t in d] == ids
    assert as_list(retain) == pytest.approx([0.1, 1.0, 1.2], rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(forget, forget_before))


def test_inplace_retain_priority_writes_forget():
    forget, retain = small()
    retain_before = [t.clone() for t in retain]
    ids = [id(t) for t in forget]
    d, _ = blur_direction(forget, retain, 0.5, variant="retain_priority", inplace=True)
    assert [id(t) for t in d] == ids
    assert as_list(forget) == pytest.approx([1.0, -0.5, 1.5], rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(retain, retain_before))


@pytest.mark.parametrize("variant", ["forget_priority", "retain_priority"])
def test_not_inplace_leaves_inputs(variant):
    forget, retain = small()
    before = [t.clone() for t in forget + retain]
    d, _ = blur_direction(forget, retain, 0.5, variant=variant)
    assert all(torch.equal(a, b) for a, b in zip(forget + retain, before))
    assert not any(x is y for x in d for y in forget + retain)


# ----------------------------------------------------------------- sharding / all_reduce


def _full_and_shards():
    # Integer-valued entries: every partial sum is exact in fp32 and fp64, so the sharded and
    # unsharded results must agree exactly.
    f0 = torch.tensor([1.0, -2.0, 3.0, 0.0, 1.0, 2.0], dtype=F64)
    f1 = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]], dtype=F64)
    r0 = torch.tensor([0.0, 1.0, 1.0, -2.0, 4.0, 1.0], dtype=F64)
    r1 = torch.tensor([[1.0, 1.0, 0.0], [2.0, -1.0, 5.0]], dtype=F64)
    full = ([f0, f1], [r0, r1])
    shard0 = ([f0[:3].clone(), f1[0].clone()], [r0[:3].clone(), r1[0].clone()])
    shard1 = ([f0[3:].clone(), f1[1].clone()], [r0[3:].clone(), r1[1].clone()])
    return full, shard0, shard1


def _sums_of(shard):
    forget, retain = shard
    return torch.tensor(
        [fdot(retain, forget), fdot(forget, forget), fdot(retain, retain)], dtype=F64
    )


class AddOther:
    """A fake in-place SUM all-reduce: adds the other rank's partial sums; counts calls."""

    def __init__(self, other: torch.Tensor):
        self.other = other
        self.calls = 0
        self.seen = []

    def __call__(self, t: torch.Tensor):
        self.calls += 1
        self.seen.append((t.dtype, tuple(t.shape)))
        t += self.other


@pytest.mark.parametrize("variant", ["forget_priority", "retain_priority"])
def test_all_reduce_sharded_equals_unsharded(variant):
    full, shard0, shard1 = _full_and_shards()
    d_full, st_full = blur_direction(*full, 0.3, variant=variant)
    ref = st_full.to_dict()

    ar0, ar1 = AddOther(_sums_of(shard1)), AddOther(_sums_of(shard0))
    d0, st0 = blur_direction(*shard0, 0.3, variant=variant, all_reduce=ar0)
    d1, st1 = blur_direction(*shard1, 0.3, variant=variant, all_reduce=ar1)

    assert ar0.calls == 1 and ar1.calls == 1
    assert ar0.seen == [(F64, (3,))]
    assert st0.to_dict() == ref
    assert st1.to_dict() == ref
    # each rank's d is its slice of the unsharded d
    assert torch.equal(torch.cat([d0[0], d1[0]]), d_full[0])
    assert torch.equal(torch.stack([d0[1], d1[1]]), d_full[1])


def test_all_reduce_called_once_per_call():
    _full, shard0, shard1 = _full_and_shards()
    ar = AddOther(_sums_of(shard1))
    for _ in range(3):
        blur_direction(*shard0, 0.3, all_reduce=ar)
    assert ar.calls == 3
    ar_w = AddOther(_sums_of(shard1))
    weighted_sum(*shard0, 1.0, 2.0, all_reduce=ar_w)
    assert ar_w.calls == 1


def test_forgetting_all_reduce_changes_xi():
    full, shard0, _shard1 = _full_and_shards()
    _, st_full = blur_direction(*full, 0.3)
    _, st_local = blur_direction(*shard0, 0.3)  # no all_reduce: local sums only
    assert float(st_local.xi) != pytest.approx(float(st_full.xi), rel=1e-3)
    assert float(st_local.norm_f) != pytest.approx(float(st_full.norm_f), rel=1e-3)


def test_weighted_sum_sharded_equals_unsharded():
    full, shard0, shard1 = _full_and_shards()
    _, st_full = weighted_sum(*full, 1.5, 0.5)
    _, st0 = weighted_sum(*shard0, 1.5, 0.5, all_reduce=AddOther(_sums_of(shard1)))
    assert st0.to_dict() == st_full.to_dict()


def test_partial_sums_values():
    forget, retain = small()
    assert partial_sums(forget, retain).tolist() == [2.0, 5.0, 2.0]
    assert partial_sums(forget, retain).dtype == F64


# ----------------------------------------------------------------- host sync / stats API


def test_stats_are_0dim_float64_tensors():
    forget, retain = small()
    _, stats = blur_direction(forget, retain, 0.5)
    for name in DirectionStats.names():
        v = getattr(stats, name)
        assert isinstance(v, torch.Tensor), name
        assert v.dim() == 0, name
        assert v.dtype == F64, name


def test_no_host_sync_inside_combiners(monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("host synchronisation inside the combiner")

    forget, retain = small()
    # (__bool__ is not patched: the gamma check tests a host-side tensor built from a float.)
    for attr in ("item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, attr, boom)
    try:
        _, st = blur_direction(forget, retain, 0.5)
        _, _st_r = blur_direction(forget, retain, 0.5, variant="retain_priority")
        _, _st_w = weighted_sum(forget, retain, 1.0, 1.0)
        coef = clip_coefficient(st.norm_d, 1.0)
    except AssertionError as exc:  # pragma: no cover - only on failure
        monkeypatch.undo()
        pytest.fail(str(exc))
    monkeypatch.undo()
    assert isinstance(coef, torch.Tensor)
    assert float(st.xi) == pytest.approx(0.1, rel=1e-12)


def test_to_dict_returns_floats():
    forget, retain = small()
    _, stats = blur_direction(forget, retain, 0.5)
    out = stats.to_dict()
    assert list(out) == list(DirectionStats.names())
    assert all(type(v) is float for v in out.values())


def test_names_order_matches_stacked():
    forget, retain = small()
    _, stats = blur_direction(forget, retain, 0.5)
    names = DirectionStats.names()
    assert set(names) == {"xi", "dot", "norm_f", "norm_r", "cosine", "fallback", "norm_d"}
    stacked = stats.stacked()
    assert stacked.shape == (len(names),)
    assert stacked.dtype == F64
    # the hand example's stats are pairwise distinct, so a permuted order would be caught
    values = stacked.tolist()
    assert len(set(values)) == len(values)
    for i, name in enumerate(names):
        assert values[i] == float(getattr(stats, name)), name


# ----------------------------------------------------------------- dtypes and validation


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", ["forget_priority", "retain_priority"])
def test_low_precision_inputs(dtype, variant):
    forget, retain = small(dtype)
    xi, d_exp, sq_d = HAND[(variant, 0.5)]
    d, stats = blur_direction(forget, retain, 0.5, variant=variant)
    assert all(t.dtype == dtype for t in d)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert [float(v) for t in d for v in t.float().reshape(-1)] == pytest.approx(
        d_exp, rel=tol, abs=tol
    )
    for name in DirectionStats.names():
        assert getattr(stats, name).dtype == F64, name
    # integer-valued inputs: the sums are exact even in bf16
    assert float(stats.dot) == 2.0
    assert float(stats.norm_f) ** 2 == pytest.approx(5.0, rel=1e-12)
    assert float(stats.xi) == pytest.approx(xi, rel=1e-12)
    assert float(stats.norm_d) == pytest.approx(math.sqrt(sq_d), rel=1e-12)


def test_mismatched_shapes_raise():
    forget = [torch.zeros(2, dtype=F64), torch.zeros(3, dtype=F64)]
    retain = [torch.zeros(2, dtype=F64), torch.zeros(4, dtype=F64)]
    with pytest.raises(ValueError, match=r"gradient 1.*shape \(3,\).*\(4,\)"):
        blur_direction(forget, retain, 0.1)


def test_mismatched_list_lengths_raise():
    forget, retain = small()
    with pytest.raises(ValueError, match=r"2 tensors.*1"):
        blur_direction(forget, retain[:1], 0.1)


def test_empty_lists_raise():
    with pytest.raises(ValueError, match="empty"):
        blur_direction([], [], 0.1)
    with pytest.raises(ValueError, match="empty"):
        weighted_sum([], [], 1.0, 1.0)


def test_bad_variant_raises():
    forget, retain = small()
    with pytest.raises(ValueError, match="sideways"):
        blur_direction(forget, retain, 0.1, variant="sideways")


@pytest.mark.parametrize("gamma", [math.inf, -math.inf, math.nan])
def test_non_finite_gamma_raises(gamma):
    forget, retain = small()
    with pytest.raises(ValueError, match="gamma must be finite"):
        blur_direction(forget, retain, gamma)


def test_negative_eps_raises():
    forget, retain = small()
    with pytest.raises(ValueError, match="eps"):
        blur_direction(forget, retain, 0.1, eps=-1.0)


# ----------------------------------------------------------------- weighted_sum


def test_weighted_sum_values():
    # d = 2F + 3R = [2, 3], [7];  ||d||^2 = 4 + 9 + 49 = 62
    forget, retain = small()
    d, stats = weighted_sum(forget, retain, 2.0, 3.0)
    assert as_list(d) == [2.0, 3.0, 7.0]
    s = stats.to_dict()
    assert s["norm_d"] == pytest.approx(math.sqrt(62.0), rel=1e-12)
    assert s["xi"] == 0.0
    assert s["fallback"] == 0.0
    assert s["dot"] == 2.0
    assert s["norm_f"] == pytest.approx(SQRT5, rel=1e-12)
    assert s["norm_r"] == pytest.approx(SQRT2, rel=1e-12)
    assert s["cosine"] == pytest.approx(COS_FR, rel=1e-12)


def test_weighted_sum_negative_and_zero_weights():
    # d = -1 F + 0 R = [-1, 0], [-2];  ||d||^2 = 5
    forget, retain = small()
    d, stats = weighted_sum(forget, retain, -1.0, 0.0)
    assert as_list(d) == [-1.0, 0.0, -2.0]
    assert float(stats.norm_d) == pytest.approx(SQRT5, rel=1e-12)


def test_weighted_sum_inplace():
    forget, retain = small()
    forget_before = [t.clone() for t in forget]
    ids = [id(t) for t in retain]
    d, _ = weighted_sum(forget, retain, 2.0, 3.0, inplace=True)
    assert [id(t) for t in d] == ids
    assert as_list(retain) == [2.0, 3.0, 7.0]
    assert all(torch.equal(a, b) for a, b in zip(forget, forget_before))


def test_weighted_sum_not_inplace_leaves_inputs():
    forget, retain = small()
    before = [t.clone() for t in forget + retain]
    d, _ = weighted_sum(forget, retain, 2.0, 3.0)
    assert all(torch.equal(a, b) for a, b in zip(forget + retain, before))
    assert not any(x is y for x in d for y in forget + retain)


# ----------------------------------------------------------------- PDU


def test_pdu_direction_values():
    # d = 0.5 F + 2 R = [0.5, 2], [3];  ||d||^2 = 0.25 + 4 + 9 = 13.25
    forget, retain = small()
    d, stats = pdu_direction(forget, retain, dual=2.0, forget_weight=0.5)
    assert as_list(d) == [0.5, 2.0, 3.0]
    s = stats.to_dict()
    assert s["norm_d"] == pytest.approx(math.sqrt(13.25), rel=1e-12)
    assert (s["xi"], s["fallback"], s["dot"]) == (0.0, 0.0, 2.0)
    assert s["cosine"] == pytest.approx(COS_FR, rel=1e-12)


def test_pdu_direction_inplace_and_zero_dual():
    # dual 0 (constraint slack): d = F = [1, 0], [2], written into the retain buffers
    forget, retain = small()
    ids = [id(t) for t in retain]
    d, stats = pdu_direction(forget, retain, dual=0.0, inplace=True)
    assert [id(t) for t in d] == ids
    assert as_list(retain) == [1.0, 0.0, 2.0]
    assert float(stats.norm_d) == pytest.approx(SQRT5, rel=1e-12)


def test_pdu_direction_sharded_equals_unsharded():
    full, shard0, shard1 = _full_and_shards()
    d_full, st_full = pdu_direction(*full, 0.75, 1.5)
    ar0 = AddOther(_sums_of(shard1))
    d0, st0 = pdu_direction(*shard0, 0.75, 1.5, all_reduce=ar0)
    assert ar0.calls == 1
    assert st0.to_dict() == st_full.to_dict()
    assert torch.equal(d0[0], d_full[0][:3]) and torch.equal(d0[1], d_full[1][0])
    # d = 1.5 F + 0.75 R on the first parameter: integer-valued inputs, exact
    assert d_full[0].tolist() == [1.5, -2.25, 5.25, -1.5, 4.5, 3.75]


@pytest.mark.parametrize(
    ("dual", "weight", "name"),
    [(-0.1, 1.0, "dual"), (math.inf, 1.0, "dual"), (1.0, 0.0, "forget_weight")],
)
def test_pdu_direction_bad_arguments_raise(dual, weight, name):
    forget, retain = small()
    with pytest.raises(ValueError, match=name):
        pdu_direction(forget, retain, dual, weight)


@pytest.mark.parametrize(
    ("dual", "loss", "eps", "eta", "expected"),
    [
        (1.0, 0.8, 0.5, 2.0, 1.6),  # violated by 0.3: 1 + 2 * 0.3
        (1.0, 0.5, 0.5, 2.0, 1.0),  # on the boundary: unchanged
        (1.0, 0.25, 0.5, 2.0, 0.5),  # slack 0.25: 1 - 2 * 0.25
        (0.25, 0.1, 0.5, 1.0, 0.0),  # 0.25 - 0.4 < 0: projected to 0
        (0.0, 0.1, 0.5, 1.0, 0.0),  # at 0 and slack: stays at 0
        (0.0, 1.5, 0.5, 0.5, 0.5),  # at 0 and violated by 1: leaves 0
    ],
)
def test_dual_update_hand_values(dual, loss, eps, eta, expected):
    assert dual_update(dual, loss, eps, eta) == pytest.approx(expected, abs=1e-15)


def test_dual_update_returns_float():
    assert type(dual_update(1, 2, 1, 1)) is float


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1.0, 0.5, 0.1, 1.0), "dual"),
        ((1.0, math.nan, 0.1, 1.0), "retain_loss"),
        ((1.0, 0.5, math.inf, 1.0), "retain_loss_eps"),
        ((1.0, 0.5, 0.1, 0.0), "step_size"),
    ],
)
def test_dual_update_bad_arguments_name_them(args, name):
    with pytest.raises(ValueError, match=name):
        dual_update(*args)


# ----------------------------------------------------------------- clip_coefficient


def test_clip_above_max():
    norm = torch.tensor(4.0, dtype=F64)
    c = clip_coefficient(norm, 1.0)
    assert isinstance(c, torch.Tensor) and c.dim() == 0
    assert float(c) == 0.25
    assert float(c * norm) == 1.0


def test_clip_applied_to_direction_gives_max_norm():
    forget, retain = small()
    d, stats = blur_direction(forget, retain, 2.0)  # ||d|| = sqrt(21.2) ~ 4.6
    c = clip_coefficient(stats.norm_d, 1.5)
    scaled = [t * c for t in d]
    assert math.sqrt(fdot(scaled, scaled)) == pytest.approx(1.5, rel=1e-12)


@pytest.mark.parametrize(
    ("norm", "max_norm"), [(0.5, 1.0), (1.0, 1.0), (3.0, None), (0.0, 1.0), (0.0, None)]
)
def test_clip_is_one(norm, max_norm):
    c = clip_coefficient(torch.tensor(norm, dtype=F64), max_norm)
    assert float(c) == 1.0


@pytest.mark.parametrize("max_norm", [0.0, -1.0])
def test_clip_bad_max_norm_raises(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        clip_coefficient(torch.tensor(2.0, dtype=F64), max_norm)


# ----------------------------------------------------------------- chunked reduction


@pytest.mark.parametrize("variant", ["forget_priority", "retain_priority"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_chunked_equals_unchunked(monkeypatch, variant, dtype):
    gen = torch.Generator().manual_seed(3)
    shapes = [(50,), (23,), (2, 13)]  # none a multiple of the chunk size 7
    forget, retain = randn_list(gen, shapes, dtype), randn_list(gen, shapes, dtype)

    d_ref, st_ref = blur_direction(forget, retain, 0.7, variant=variant)
    sums_ref = partial_sums(forget, retain)
    monkeypatch.setattr(bilevel, "_CHUNK", 7)
    d_chk, st_chk = blur_direction(forget, retain, 0.7, variant=variant)
    sums_chk = partial_sums(forget, retain)

    assert sums_chk.tolist() == pytest.approx(sums_ref.tolist(), rel=1e-6)
    # and both match a float64 reference (catches a dropped or doubled tail chunk)
    exact = [fdot(retain, forget), fdot(forget, forget), fdot(retain, retain)]
    assert sums_chk.tolist() == pytest.approx(exact, rel=1e-6)
    for name, v in st_chk.to_dict().items():
        assert v == pytest.approx(st_ref.to_dict()[name], rel=1e-6, abs=1e-9), name
    for a, b in zip(d_chk, d_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
