"""Packed shared-prefix scoring: grouping, the prefix tree, packing, batching, the tree
mask, and scores equal to one forward pass per (prefix + continuation) on a tiny Llama."""

from __future__ import annotations

import random

import pytest
import torch

from blur_core.eval.packing import (
    ScoreRequest,
    _tree_mask,
    group_by_prefix,
    pack_segments,
    plan_batches,
    prefix_tree,
    score_packed,
    supports_packed,
    token_budget_batches,
)
from blur_core.tiny import build_tiny_llama, build_tokenizer


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer([" ".join(f"w{i}" for i in range(40))])
    model = build_tiny_llama(
        tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3
    )
    with torch.no_grad():  # sharpen the random init so that log-probs differ visibly
        model.lm_head.weight.mul_(10.0)
    model.eval()
    return model, tok


def _random_requests(vocab: int, n: int, seed: int) -> list[ScoreRequest]:
    """Random requests whose continuations often start alike (as TOFU's answer and
    perturbed answers do), so that their prefix trees branch."""
    rng = random.Random(seed)

    def ids(lo, hi):
        return tuple(rng.randrange(4, vocab) for _ in range(rng.randint(lo, hi)))

    def continuations():
        stem = ids(0, 4)
        return tuple(
            stem[: rng.randint(0, len(stem))] + ids(1, 6) for _ in range(rng.randint(1, 5))
        )

    return [ScoreRequest(ids(1, 12), continuations()) for _ in range(n)]


def _reference_sum(model, prefix, cont) -> float:
    """sum_j log p(c_j | prefix, c_<j) from one causal forward of prefix + cont alone."""
    ids = torch.tensor([[*prefix, *cont]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    start = len(prefix) - 1
    return sum(float(logp[start + j, t]) for j, t in enumerate(cont))


def test_group_by_prefix_shares_identical_prefixes_in_first_seen_order():
    pairs = [([1, 2], [5]), ([3], [6, 7]), ([1, 2], [8]), ([1, 2, 0], [9])]
    requests, where = group_by_prefix(pairs)
    assert [r.prefix for r in requests] == [(1, 2), (3,), (1, 2, 0)]
    assert requests[0].continuations == ((5,), (8,))
    assert where == [(0, 0), (1, 0), (0, 1), (2, 0)]
    # segment: prefix once + each continuation's inputs (all but its last token)
    assert requests[1].segment_length == 1 + 1


def test_prefix_tree_shares_common_starts_of_continuations():
    # prefix 1 2; continuations a b c | a d | a b e | f  (a=5, b=6, c=7, d=8, e=9, f=10)
    tree = prefix_tree((1, 2), ((5, 6, 7), (5, 8), (5, 6, 9), (10,)))
    # nodes: 1 2 | 5 (child of 2) | 6 (child of 5); (5, 8) needs only 5; (5, 6, 9) only 5 6
    assert tree.tokens == (1, 2, 5, 6)
    assert tree.parents == (-1, 0, 1, 2)
    assert tree.depths() == [0, 1, 2, 3]
    # the node whose output predicts each continuation token
    assert tree.scored == ((1, 2, 3), (1, 2), (1, 2, 3), (1,))
    branching = prefix_tree((1,), ((5, 6, 7), (5, 8, 9)))
    assert branching.tokens == (1, 5, 6, 8)
    assert branching.parents == (-1, 0, 1, 1)  # 6 and 8 are siblings under 5
    assert branching.depths() == [0, 1, 2, 2]
    assert branching.scored == ((0, 1, 2), (0, 1, 3))
    request = ScoreRequest((1, 2), ((5, 6, 7), (5, 8), (5, 6, 9), (10,)))
    assert request.segment_length == 4  # a flat layout would hold 2 + 2 + 1 + 2 + 0 = 7


def test_tree_mask_hides_sibling_branches():
    allowed = _tree_mask([-1, 0, 1, 1, 3], width=5).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],  # node 3 is node 2's sibling: it does not see it
        [1, 1, 0, 1, 1],
    ]


def test_padding_positions_see_only_themselves():
    requests = [ScoreRequest((5, 6, 7), ((8, 9),)), ScoreRequest((5,), ((6,),))]
    (batch,) = plan_batches(requests, pad_token_id=0, row_tokens=4, batch_tokens=64)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [5, 0, 0, 0]]
    assert batch.real_tokens == 5 and batch.padded_tokens == 8
    pad = batch.allowed[1, 1:].int().tolist()
    assert pad == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert not batch.keep[1, 1:].any()


def test_score_request_rejects_empty_parts():
    with pytest.raises(ValueError, match="non-empty prefix"):
        ScoreRequest((), ((1,),))
    with pytest.raises(ValueError, match="continuation 1 of a ScoreRequest is empty"):
        ScoreRequest((1,), ((2,), ()))


def test_pack_segments_first_fit_decreasing_and_oversized_rows():
    rows = pack_segments([5, 3, 9, 2, 4], row_tokens=8)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert rows[0] == [2]  # longer than a row: alone
    lengths = [5, 3, 9, 2, 4]
    assert all(sum(lengths[i] for i in row) <= 8 for row in rows[1:])
    assert len(rows) == 3  # 9 | 5+3 | 4+2
    with pytest.raises(ValueError, match="segment 1 has length 0"):
        pack_segments([3, 0], 8)
    with pytest.raises(ValueError, match="row_tokens"):
        pack_segments([3], 0)


def test_token_budget_batches_bound_padded_size():
    lengths = [10, 3, 7, 7, 2, 9, 1]
    batches = token_budget_batches(lengths, batch_tokens=20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * width <= 20, (b, width)
    assert token_budget_batches([50], 20) == [[0]]  # an over-budget row still runs alone


def test_block_mask_and_positions_of_one_segment():
    (batch,) = plan_batches([ScoreRequest((11, 12), ((21, 22, 23), (31, 32)))], pad_token_id=0)
    assert batch.input_ids.tolist() == [[11, 12, 21, 22, 31]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2]]
    allowed = batch.allowed[0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # the second continuation sees the prefix, not the first one
    ]
    # c_0 of both continuations is read at the prefix's last position (index 1)
    assert batch.flat_pos.tolist() == [1, 2, 3, 1, 4]
    assert batch.targets.tolist() == [21, 22, 23, 31, 32]
    assert batch.owner.tolist() == [0, 0, 0, 1, 1]
    assert batch.real_tokens == batch.padded_tokens == 5


def test_segments_in_one_row_never_see_each_other():
    requests = [ScoreRequest((5, 6), ((7,),)), ScoreRequest((8,), ((9, 10),))]
    (batch,) = plan_batches(requests, pad_token_id=0, row_tokens=16)
    assert batch.input_ids.shape == (1, 4)
    seg = [0, 0, 1, 1]  # longest segment first: (5, 6) then (8, 9)
    assert batch.input_ids[0].tolist() == [5, 6, 8, 9]
    for q in range(4):
        for k in range(4):
            if seg[q] != seg[k]:
                assert not batch.allowed[0, q, k]


def test_packed_scores_equal_one_forward_per_pair(tiny):
    model, tok = tiny
    assert supports_packed(model)
    requests = _random_requests(len(tok), 30, seed=0)
    sums, counts = score_packed(model, requests, pad_token_id=0, row_tokens=24, batch_tokens=64)
    plans = plan_batches(requests, 0, 24, 64)
    assert len(plans) > 2 and any(b.input_ids.shape[0] > 1 for b in plans)
    assert any(len(r.continuations) > 1 for r in requests)
    flat = [len(r.prefix) + sum(len(c) - 1 for c in r.continuations) for r in requests]
    merged = sum(r.segment_length < n for r, n in zip(requests, flat))
    assert merged >= 5, merged  # the trees really share nodes
    worst = 0.0
    for req, row_sums, row_counts in zip(requests, sums, counts):
        assert row_counts == [len(c) for c in req.continuations]
        for cont, value in zip(req.continuations, row_sums):
            worst = max(worst, abs(value - _reference_sum(model, req.prefix, cont)))
    assert worst <= 1e-4, worst


def test_packed_scoring_refuses_a_model_without_4d_masks(tiny):
    model, _ = tiny
    impl = model.config._attn_implementation
    model.config._attn_implementation = "flash_attention_2"
    try:
        assert not supports_packed(model)
        with pytest.raises(ValueError, match="'flash_attention_2'"):
            score_packed(model, [ScoreRequest((5,), ((6,),))], pad_token_id=0)
    finally:
        model.config._attn_implementation = impl
