"""Unit tests for blur_core.losses.

Expected values are computed by hand with ``math`` on a handful of numbers: the
toy logits are logs of chosen probabilities, so every log-softmax is known.
"""

from __future__ import annotations

import math

import pytest
import torch

from blur_core import losses as L
from blur_core.losses import IGNORE_INDEX

IGN = IGNORE_INDEX

# Toy batch: B=2, T=3, V=3. PROBS[b][t] is the next-token distribution at
# position t; logits = log(PROBS), so log_softmax(logits) == log(PROBS) exactly
# (each row sums to 1).
PROBS = [
    [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]],
    [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.25, 0.25, 0.5]],
]
# labels[0, 0] = 2 is a valid label but is never scored (nothing predicts it).
# Shifted: example 0 scores logits[0,0]->0 and logits[0,1]->1 (2 tokens);
#          example 1 scores logits[1,0]->1 only (labels[1,2] ignored).
LABELS = [[2, 0, 1], [IGN, 1, IGN]]

LP00 = math.log(0.5)  # example 0, position 0, label 0
LP01 = math.log(0.8)  # example 0, position 1, label 1
LP10 = math.log(0.3)  # example 1, position 0, label 1
S = [LP00 + LP01, LP10]  # sequence log-probs
N = [2, 1]  # valid token counts


def toy(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(PROBS, dtype=torch.float32).log()
    logits.requires_grad_(requires_grad)
    labels = torch.tensor(LABELS, dtype=torch.long)
    return logits, labels


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def close(t: torch.Tensor, expected: float, tol: float = 1e-5) -> bool:
    return abs(float(t) - expected) <= tol * max(1.0, abs(expected))


# ---------------------------------------------------------------------------
# token / sequence log-probs
# ---------------------------------------------------------------------------


def test_token_logprobs_values_shift_and_mask():
    logits, labels = toy()
    logp, mask = L.token_logprobs(logits, labels)
    assert logp.shape == (2, 2) and mask.shape == (2, 2)
    assert logp.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True], [True, False]]
    expected = [[LP00, LP01], [LP10, 0.0]]
    for b in range(2):
        for t in range(2):
            assert abs(float(logp[b, t]) - expected[b][t]) < 1e-6, (b, t)


def test_token_logprobs_ignores_last_position_logits_and_first_label():
    logits, labels = toy()
    logp, _ = L.token_logprobs(logits, labels)
    # The last position's logits predict nothing; the first label is never scored.
    logits2 = logits.clone()
    logits2[:, -1] = torch.tensor([5.0, -3.0, 1.0])
    labels2 = labels.clone()
    labels2[:, 0] = torch.tensor([0, 2])
    logp2, mask2 = L.token_logprobs(logits2, labels2)
    assert torch.equal(logp, logp2)
    assert mask2.tolist() == [[True, True], [True, False]]


def test_token_logprobs_unnormalised_logits():
    # logits [0, ln 2, 0] -> softmax [1/4, 1/2, 1/4]: log-softmax is not the logits.
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[IGN, 1]])
    logp, mask = L.token_logprobs(logits, labels)
    assert mask.tolist() == [[True]]
    assert abs(float(logp[0, 0]) - math.log(0.5)) < 1e-6


def test_sequence_logprobs():
    logits, labels = toy()
    s, n = L.sequence_logprobs(logits, labels)
    assert s.shape == (2,) and n.shape == (2,)
    assert n.dtype == torch.float32
    assert n.tolist() == [2.0, 1.0]
    assert abs(float(s[0]) - S[0]) < 1e-6
    assert abs(float(s[1]) - S[1]) < 1e-6


# ---------------------------------------------------------------------------
# NLL / GA / IdK
# ---------------------------------------------------------------------------


def test_nll_per_example_then_batch_mean():
    logits, labels = toy()
    loss = L.nll_loss(logits, labels)
    expected = 0.5 * (-(LP00 + LP01) / 2 + -LP10 / 1)
    global_token_mean = -(LP00 + LP01 + LP10) / 3
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert close(loss, expected)
    assert abs(expected - global_token_mean) > 1e-3  # the two conventions really differ
    assert not close(loss, global_token_mean)


def test_nll_batch_split_is_exact():
    logits, labels = toy()
    full = L.nll_loss(logits, labels)
    halves = 0.5 * (L.nll_loss(logits[:1], labels[:1]) + L.nll_loss(logits[1:], labels[1:]))
    assert torch.allclose(full, halves, atol=1e-7)
    # and the halves' gradients average to the full-batch gradient
    lg = logits.clone().requires_grad_(True)
    L.nll_loss(lg, labels).backward()
    g_full = lg.grad.clone()
    lg.grad = None
    (0.5 * L.nll_loss(lg[:1], labels[:1])).backward()
    (0.5 * L.nll_loss(lg[1:], labels[1:])).backward()
    assert torch.allclose(g_full, lg.grad, atol=1e-7)


def test_ga_is_negative_nll():
    logits, labels = toy()
    expected = -0.5 * (-(LP00 + LP01) / 2 + -LP10)
    assert close(L.ga_loss(logits, labels), expected)
    assert expected < 0


def test_idk_equals_nll():
    logits, labels = toy()
    expected = 0.5 * (-(LP00 + LP01) / 2 + -LP10)
    assert close(L.idk_loss(logits, labels), expected)


# ---------------------------------------------------------------------------
# NPO / SimNPO
# ---------------------------------------------------------------------------


def test_npo_value():
    logits, labels = toy()
    beta = 0.5
    ref = [-1.0, -2.0]
    terms = [math.log(sigmoid(-beta * (S[i] - ref[i]))) for i in range(2)]
    expected = -(2.0 / beta) * (terms[0] + terms[1]) / 2
    loss = L.npo_loss(logits, labels, torch.tensor(ref), beta)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert close(loss, expected)


def test_npo_at_reference_is_2_over_beta_log2():
    logits, labels = toy()
    for beta in (0.1, 1.0, 3.0):
        loss = L.npo_loss(logits, labels, torch.tensor(S), beta)
        assert close(loss, (2.0 / beta) * math.log(2.0)), beta


def test_npo_reference_is_treated_as_constant():
    logits, labels = toy(requires_grad=True)
    ref = torch.tensor([-1.0, -2.0], requires_grad=True)
    L.npo_loss(logits, labels, ref, 1.0).backward()
    assert ref.grad is None
    assert logits.grad is not None


def test_simnpo_value():
    logits, labels = toy()
    beta, delta = 2.0, 0.5
    terms = [math.log(sigmoid(-(beta / N[i]) * S[i] - delta)) for i in range(2)]
    expected = -(2.0 / beta) * (terms[0] + terms[1]) / 2
    assert close(L.simnpo_loss(logits, labels, beta, delta), expected)
    # delta = 0 gives a different (hand-computed) value
    terms0 = [math.log(sigmoid(-(beta / N[i]) * S[i])) for i in range(2)]
    assert close(L.simnpo_loss(logits, labels, beta, 0.0), -(2.0 / beta) * sum(terms0) / 2)


# ---------------------------------------------------------------------------
# KL
# ---------------------------------------------------------------------------

REF_PROBS = [
    [[0.25, 0.5, 0.25], [0.2, 0.6, 0.2], [0.5, 0.25, 0.25]],
    [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]],
]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pv * (math.log(pv) - math.log(qv)) for pv, qv in zip(p, q))


def test_kl_value():
    logits, labels = toy()
    ref_logits = torch.tensor(REF_PROBS).log()
    # valid positions: (0,0), (0,1), (1,0); (1,1) ignored, last position unused.
    kl0 = (_kl(REF_PROBS[0][0], PROBS[0][0]) + _kl(REF_PROBS[0][1], PROBS[0][1])) / 2
    kl1 = _kl(REF_PROBS[1][0], PROBS[1][0])  # identical rows -> 0
    expected = (kl0 + kl1) / 2
    assert kl1 == pytest.approx(0.0, abs=1e-12)
    assert expected > 0.01
    assert close(L.kl_loss(logits, ref_logits, labels), expected)


def test_kl_direction_is_ref_to_theta():
    # KL(p_ref || p_theta) != KL(p_theta || p_ref) for these rows.
    logits = torch.tensor([[[0.9, 0.05, 0.05], [1.0, 1.0, 1.0]]]).log()
    ref = torch.tensor([[[1 / 3, 1 / 3, 1 / 3], [1.0, 1.0, 1.0]]]).log()
    labels = torch.tensor([[IGN, 0]])
    p_ref, p_th = [1 / 3] * 3, [0.9, 0.05, 0.05]
    assert abs(_kl(p_ref, p_th) - _kl(p_th, p_ref)) > 0.1
    assert close(L.kl_loss(logits, ref, labels), _kl(p_ref, p_th))


def test_kl_zero_iff_same():
    logits, labels = toy()
    assert abs(float(L.kl_loss(logits, logits.clone(), labels))) < 1e-6
    assert float(L.kl_loss(logits, logits + 0.7, labels)) == pytest.approx(0.0, abs=1e-6)
    other = logits.clone()
    other[0, 1] = torch.tensor([2.0, -1.0, 0.0])
    assert float(L.kl_loss(logits, other, labels)) > 1e-3


def test_kl_ref_logits_detached_and_zero_prob_ref():
    logits, labels = toy(requires_grad=True)
    ref = torch.tensor(REF_PROBS).log().requires_grad_(True)
    ref_inf = ref.detach().clone()
    ref_inf[0, 0, 2] = float("-inf")  # reference puts zero mass on a token
    loss = L.kl_loss(logits, ref, labels)
    loss.backward()
    assert ref.grad is None
    assert torch.isfinite(logits.grad).all()
    # -inf reference logit: 0 * log 0 counts as 0, no NaN
    p = [1 / 3 * 0 + 1 / 3, 2 / 3, 0.0]  # softmax of log[.25, .5, 0] = [1/3, 2/3, 0]
    q = PROBS[0][0]
    kl00 = sum(pv * (math.log(pv) - math.log(qv)) for pv, qv in zip(p, q) if pv > 0)
    kl0 = (kl00 + _kl(REF_PROBS[0][1], PROBS[0][1])) / 2
    out = L.kl_loss(logits.detach(), ref_inf, labels)
    assert torch.isfinite(out)
    assert close(out, kl0 / 2)


# ---------------------------------------------------------------------------
# RMU
# ---------------------------------------------------------------------------


def test_rmu_control_vector_norm_determinism_dtype():
    c = L.rmu_control_vector(64, 6.5, seed=3)
    assert c.shape == (64,) and c.dtype == torch.float32
    assert abs(math.sqrt(sum(v * v for v in c.tolist())) - 6.5) < 1e-4
    assert (c >= 0).all()  # u ~ U[0, 1)
    assert torch.equal(c, L.rmu_control_vector(64, 6.5, seed=3))
    assert not torch.equal(c, L.rmu_control_vector(64, 6.5, seed=4))
    # spec: c * u / ||u||, u = torch.rand(H) from a Generator seeded with `seed`
    u = torch.rand(64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(c, 6.5 * u / u.norm())
    cb = L.rmu_control_vector(64, 6.5, seed=3, dtype=torch.bfloat16)
    assert cb.dtype == torch.bfloat16
    assert torch.allclose(cb.float(), c, rtol=1e-2)


# activations [B=2, T=2, H=2]; example 1's second token is padding.
ACTS = [[[1.0, 2.0], [0.0, 0.0]], [[3.0, -1.0], [100.0, 100.0]]]
AMASK = [[1, 1], [1, 0]]


def test_rmu_forget_value():
    acts = torch.tensor(ACTS)
    mask = torch.tensor(AMASK)
    control = torch.tensor([1.0, 0.0])
    # ex0: t0 ((0)^2 + (2)^2)/2 = 2; t1 ((-1)^2 + 0)/2 = 0.5 -> mean 1.25
    # ex1: t0 ((2)^2 + (-1)^2)/2 = 2.5; t1 padding -> 2.5
    expected = (1.25 + 2.5) / 2
    loss = L.rmu_forget_loss(acts, mask, control)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert close(loss, expected)
    # float mask and bool mask behave the same
    assert close(L.rmu_forget_loss(acts, mask.float(), control), expected)
    assert close(L.rmu_forget_loss(acts, mask.bool(), control), expected)


def test_rmu_retain_value_and_detach():
    acts = torch.tensor(ACTS, requires_grad=True)
    ref = torch.tensor([[[1.0, 1.0], [2.0, 0.0]], [[3.0, 1.0], [0.0, 0.0]]], requires_grad=True)
    mask = torch.tensor(AMASK)
    # ex0: t0 (0 + 1)/2 = 0.5; t1 (4 + 0)/2 = 2 -> 1.25; ex1: t0 (0 + 4)/2 = 2
    expected = (1.25 + 2.0) / 2
    loss = L.rmu_retain_loss(acts, ref, mask)
    assert close(loss.detach(), expected)
    loss.backward()
    assert ref.grad is None
    assert torch.isfinite(acts.grad).all()
    assert torch.equal(acts.grad[1, 1], torch.zeros(2))  # padding gets no gradient
    assert float(L.rmu_retain_loss(acts.detach(), acts.detach(), mask)) == 0.0


def test_rmu_bf16_activations():
    acts = torch.tensor(ACTS).bfloat16()
    loss = L.rmu_forget_loss(acts, torch.tensor(AMASK), torch.tensor([1.0, 0.0]))
    assert loss.dtype == torch.float32
    assert close(loss, 1.875)


def test_rmu_empty_example_counts_as_zero():
    acts = torch.tensor(ACTS)
    mask = torch.tensor([[1, 1], [0, 0]])
    loss = L.rmu_forget_loss(acts, mask, torch.tensor([1.0, 0.0]))
    assert torch.isfinite(loss)
    assert close(loss, 1.25 / 2)


# ---------------------------------------------------------------------------
# empty examples, gradients, dtypes
# ---------------------------------------------------------------------------


def test_zero_valid_token_example_is_finite_and_counts_as_zero():
    logits, _ = toy()
    labels = torch.tensor([[2, 0, 1], [IGN, IGN, IGN]])
    nll = L.nll_loss(logits, labels)
    assert torch.isfinite(nll)
    assert close(nll, (-(LP00 + LP01) / 2 + 0.0) / 2)
    ref = torch.tensor([S[0], -7.0])
    npo = L.npo_loss(logits, labels, ref, 1.0)
    assert torch.isfinite(npo) and close(npo, 2.0 * math.log(2.0) / 2)
    beta, delta = 1.0, 0.0
    sim = L.simnpo_loss(logits, labels, beta, delta)
    exp0 = -(2.0 / beta) * math.log(sigmoid(-(beta / 2) * S[0] - delta))
    assert torch.isfinite(sim) and close(sim, exp0 / 2)
    kl = L.kl_loss(logits, logits + torch.randn_like(logits), labels.clone().fill_(IGN))
    assert torch.isfinite(kl) and float(kl) == 0.0


@pytest.mark.parametrize(
    "fn",
    [
        lambda lg, lb: L.nll_loss(lg, lb),
        lambda lg, lb: L.ga_loss(lg, lb),
        lambda lg, lb: L.idk_loss(lg, lb),
        lambda lg, lb: L.npo_loss(lg, lb, torch.tensor([-1.0, -2.0]), 0.5),
        lambda lg, lb: L.simnpo_loss(lg, lb, 2.0, 0.5),
        lambda lg, lb: L.kl_loss(lg, torch.tensor(REF_PROBS).log(), lb),
    ],
    ids=["nll", "ga", "idk", "npo", "simnpo", "kl"],
)
def test_gradients_flow(fn):
    logits, labels = toy(requires_grad=True)
    labels = labels.clone()
    labels[1] = IGN  # include an empty example
    fn(logits, labels).backward()
    g = logits.grad
    assert g is not None and torch.isfinite(g).all()
    assert g[0, :2].abs().sum() > 0  # scored positions get gradient
    assert torch.equal(g[:, -1], torch.zeros_like(g[:, -1]))  # last position predicts nothing
    assert torch.equal(g[1], torch.zeros_like(g[1]))  # empty example gets none


def test_ga_gradient_is_negated_nll_gradient():
    logits, labels = toy(requires_grad=True)
    L.nll_loss(logits, labels).backward()
    g_nll = logits.grad.clone()
    logits.grad = None
    L.ga_loss(logits, labels).backward()
    assert torch.allclose(logits.grad, -g_nll)
    assert g_nll.abs().sum() > 0


def test_nll_gradient_hand_value():
    # d/dz of -log softmax(z)[y] = softmax(z) - onehot(y); one example, one token.
    logits = torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1.0, 1.0]]]).log().requires_grad_(True)
    labels = torch.tensor([[IGN, 1]])
    L.nll_loss(logits, labels).backward()
    assert torch.allclose(logits.grad[0, 0], torch.tensor([0.5, -0.75, 0.25]), atol=1e-6)


def test_bf16_logits_accepted():
    logits, labels = toy()
    lb = logits.bfloat16()
    for fn in (L.nll_loss, L.ga_loss, L.idk_loss):
        out = fn(lb, labels)
        assert out.dtype == torch.float32
        assert torch.allclose(out, fn(logits, labels), atol=2e-2)
    logp, _ = L.token_logprobs(lb, labels)
    assert logp.dtype == torch.float32
    out = L.npo_loss(lb, labels, torch.tensor([-1.0, -2.0]), 0.5)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out = L.kl_loss(lb, torch.tensor(REF_PROBS).log().bfloat16(), labels)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    lbg = lb.clone().requires_grad_(True)
    L.simnpo_loss(lbg, labels, 1.0, 0.0).backward()
    assert lbg.grad.dtype == torch.bfloat16 and torch.isfinite(lbg.grad.float()).all()


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0, 0.0, -1.5, float("nan"), float("inf")])
def test_bad_beta_raises(beta):
    logits, labels = toy()
    with pytest.raises(
        ValueError, match=r"beta.*" + repr(beta).replace("(", r"\(").replace(")", r"\)")
    ):
        L.npo_loss(logits, labels, torch.tensor(S), beta)
    with pytest.raises(ValueError, match="beta"):
        L.simnpo_loss(logits, labels, beta, 0.0)


def test_bad_delta_raises():
    logits, labels = toy()
    with pytest.raises(ValueError, match=r"delta.*nan"):
        L.simnpo_loss(logits, labels, 1.0, float("nan"))


def test_shape_mismatch_raises():
    logits, _ = toy()
    bad_labels = torch.zeros(2, 4, dtype=torch.long)
    for fn in (L.nll_loss, L.ga_loss, L.idk_loss, L.token_logprobs, L.sequence_logprobs):
        with pytest.raises(ValueError, match=r"\(2, 4\)"):
            fn(logits, bad_labels)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        L.nll_loss(logits[0], torch.zeros(2, 3, dtype=torch.long))  # 2-D logits
    with pytest.raises(ValueError, match="dtype"):
        L.nll_loss(logits, torch.zeros(2, 3))  # float labels
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        L.kl_loss(logits, torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


def test_ref_seq_logprobs_wrong_length_raises():
    logits, labels = toy()
    with pytest.raises(ValueError, match=r"\(3,\)"):
        L.npo_loss(logits, labels, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        L.npo_loss(logits, labels, torch.zeros(2, 1), 1.0)


def test_rmu_validation():
    acts = torch.tensor(ACTS)
    mask = torch.tensor(AMASK)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        L.rmu_forget_loss(acts, mask, torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        L.rmu_forget_loss(acts, torch.ones(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
        L.rmu_retain_loss(acts, torch.zeros(2, 2, 3), mask)
    with pytest.raises(ValueError, match=r"hidden_size.*0"):
        L.rmu_control_vector(0, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"steering_coeff.*-2"):
        L.rmu_control_vector(4, -2.0, seed=0)
