"""Unit tests for blur_core.train.sampler (per-step indices) and blur_core.train.schedule (lr)."""

from __future__ import annotations

import math

import pytest

from blur_core.train.sampler import rank_micro_batches, step_indices
from blur_core.train.schedule import lr_factor

# ====================================================================== step_indices


def stream(n, steps, global_batch, seed):
    out = []
    for s in range(steps):
        idx = step_indices(n, s, global_batch, seed)
        assert len(idx) == global_batch
        out.extend(idx)
    return out


def test_deterministic_for_a_seed():
    a = [step_indices(10, s, 4, seed=3) for s in range(6)]
    b = [step_indices(10, s, 4, seed=3) for s in range(6)]
    assert a == b
    # a step can be recomputed on its own (resume needs no sampler state)
    assert step_indices(10, 4, 4, seed=3) == a[4]


def test_indices_are_plain_ints_in_range():
    idx = step_indices(7, 2, 5, seed=0)
    assert all(type(i) is int for i in idx)
    assert all(0 <= i < 7 for i in idx)


@pytest.mark.parametrize(("n", "g"), [(12, 4), (12, 3), (8, 8), (6, 1), (10, 2)])
def test_each_epoch_is_a_permutation_when_g_divides_n(n, g):
    steps_per_epoch = n // g
    s = stream(n, 3 * steps_per_epoch, g, seed=5)
    for e in range(3):
        epoch = s[e * n : (e + 1) * n]
        assert sorted(epoch) == list(range(n)), f"epoch {e} is not a permutation"


def test_epochs_are_shuffled_differently():
    n = 20
    s = stream(n, 2 * n // 4, 4, seed=0)
    assert s[:n] != s[n:]
    assert s[:n] != list(range(n))  # shuffled, not the identity


@pytest.mark.parametrize(("n", "g"), [(5, 3), (7, 4), (10, 3), (4, 9)])
def test_crossing_epoch_boundaries(n, g):
    # G does not divide n: a step takes the tail of one epoch and the head of the next.
    # The concatenated steps must equal the 1-per-step stream and split into permutations.
    steps = n * 3  # n*3*g indices = 3g whole epochs
    s = stream(n, steps, g, seed=11)
    assert s == stream(n, steps * g, 1, seed=11)
    assert len(s) % n == 0
    for e in range(len(s) // n):
        assert sorted(s[e * n : (e + 1) * n]) == list(range(n)), f"epoch {e}"


def test_boundary_step_explicit():
    # n = 5, G = 3: step 1 covers stream positions 3, 4 (epoch 0) and 5 (epoch 1, first element).
    one = stream(5, 15, 1, seed=2)
    assert step_indices(5, 1, 3, seed=2) == one[3:6]
    assert step_indices(5, 3, 3, seed=2) == one[9:12]


def test_independent_of_split():
    # The same global batch G gives the same indices however G is composed; a step of G = 8
    # is two consecutive steps of G = 4.
    for s in range(5):
        assert step_indices(13, s, 8, seed=4) == step_indices(13, 2 * s, 4, seed=4) + step_indices(
            13, 2 * s + 1, 4, seed=4
        )


def test_different_seeds_differ():
    a = stream(30, 3, 10, seed=0)
    b = stream(30, 3, 10, seed=1)
    assert a != b
    assert sorted(a) == sorted(b) == list(range(30))


@pytest.mark.parametrize("n", [0, -1])
def test_empty_dataset_raises(n):
    with pytest.raises(ValueError, match="empty"):
        step_indices(n, 0, 4, seed=0)


# ====================================================================== rank_micro_batches


@pytest.mark.parametrize(
    ("world", "accum", "mb"), [(1, 8, 1), (1, 1, 8), (2, 2, 2), (2, 1, 4), (4, 2, 1)]
)
def test_rank_micro_batches_concat_to_step(world, accum, mb):
    g = world * accum * mb
    assert g == 8
    idx = step_indices(11, 3, g, seed=7)
    parts = []
    for rank in range(world):
        mbs = rank_micro_batches(idx, rank, world, accum)
        assert len(mbs) == accum
        assert all(len(m) == mb for m in mbs)
        for m in mbs:
            parts.extend(m)
    assert parts == idx


def test_rank_micro_batches_explicit():
    idx = [10, 11, 12, 13, 14, 15, 16, 17]
    assert rank_micro_batches(idx, 0, 2, 2) == [[10, 11], [12, 13]]
    assert rank_micro_batches(idx, 1, 2, 2) == [[14, 15], [16, 17]]
    assert rank_micro_batches(idx, 0, 1, 8) == [[i] for i in idx]
    assert rank_micro_batches(idx, 0, 1, 1) == [idx]


def test_same_examples_for_all_splits():
    # batch 8 x accum 1 == batch 1 x accum 8 == 2 ranks x batch 2 x accum 2: same example set per step
    for step in range(4):
        idx = step_indices(9, step, 8, seed=1)
        flat = {}
        for world, accum in [(1, 1), (1, 8), (2, 2)]:
            flat[(world, accum)] = [
                i for r in range(world) for m in rank_micro_batches(idx, r, world, accum) for i in m
            ]
        assert flat[(1, 1)] == flat[(1, 8)] == flat[(2, 2)] == idx


# ====================================================================== lr_factor


def test_warmup_values():
    # (step + 1) / (warmup + 1)
    assert lr_factor(0, 100, 4, "constant") == pytest.approx(1 / 5)
    assert lr_factor(1, 100, 4, "linear") == pytest.approx(2 / 5)
    assert lr_factor(3, 100, 4, "cosine") == pytest.approx(4 / 5)
    assert lr_factor(0, 100, 1, "constant") == pytest.approx(1 / 2)


def test_warmup_never_zero():
    assert lr_factor(0, 10, 9, "linear") > 0


@pytest.mark.parametrize("step", [0, 1, 5, 99, 100, 1000])
def test_constant_is_one(step):
    assert lr_factor(step, 100, 0, "constant") == 1.0


def test_constant_after_warmup():
    assert lr_factor(4, 100, 4, "constant") == 1.0
    assert lr_factor(50, 100, 4, "constant") == 1.0


def test_linear():
    assert lr_factor(0, 10, 0, "linear") == 1.0
    assert lr_factor(5, 10, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(10, 10, 0, "linear") == 0.0
    assert lr_factor(15, 10, 0, "linear") == 0.0  # clamped past the end
    # with warmup 2 and 12 total steps: decay over 10 steps starting at step 2
    assert lr_factor(2, 12, 2, "linear") == 1.0
    assert lr_factor(7, 12, 2, "linear") == pytest.approx(0.5)
    assert lr_factor(12, 12, 2, "linear") == 0.0
    assert lr_factor(4, 12, 2, "linear") == pytest.approx(0.8)


def test_cosine():
    assert lr_factor(0, 10, 0, "cosine") == 1.0
    assert lr_factor(5, 10, 0, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, 0, "cosine") == pytest.approx(0.0, abs=1e-15)
    # right after warmup: 1;  midpoint of the decay: 0.5
    assert lr_factor(4, 24, 4, "cosine") == 1.0
    assert lr_factor(14, 24, 4, "cosine") == pytest.approx(0.5)
    # a quarter of the way: 0.5 (1 + cos(pi/4)) = 0.5 + sqrt(2)/4
    assert lr_factor(9, 24, 4, "cosine") == pytest.approx(0.5 + math.sqrt(2) / 4)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="'step'"):
        lr_factor(5, 10, 0, "step")
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_factor(0, 10, 0, "exponential")
