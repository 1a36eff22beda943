"""MIA scores, AUC orientation, token statistics and QA memorisation against hand values
and direct per-example computations on a tiny Llama built offline."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from blur_core.eval.mia import (
    TokenStats,
    auc,
    memorisation_from_logits,
    mia_suite,
    min_k,
    min_k_plus_plus,
    qa_memorisation,
    scores_from_stats,
    token_statistics,
    zlib_bytes,
)
from blur_core.eval.muse import muse_min_k_score, muse_privleak_auc

TEXTS = [
    "the cat sat on the mat and the dog sat on the rug",
    "a bird flew over the house",
    "the dog ran to the park and the cat ran to the house and the bird sang",
    "rain fell",
    "the park was green",
]


@pytest.fixture(scope="module")
def tiny():
    from blur_core.tiny import build_tiny_llama, build_tokenizer

    tok = build_tokenizer([*TEXTS, "Question: Answer: what where who"])
    model = build_tiny_llama(
        tok, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=3
    )
    return model, tok


# ---------------------------------------------------------------------------
# scores by hand
# ---------------------------------------------------------------------------


def test_min_k_is_mean_of_lowest_fraction():
    assert min_k([-1.0, -5.0, -2.0, -4.0, -3.0], k=0.4) == pytest.approx(-4.5)  # int(0.4*5) = 2
    assert min_k([-1.0, -5.0, -2.0], k=0.2) == pytest.approx(-5.0)  # int(0.6) = 0 -> at least 1
    assert min_k([-1.0, -3.0], k=1.0) == pytest.approx(-2.0)
    assert muse_min_k_score([-1.0, -5.0, -2.0, -4.0, -3.0]) == pytest.approx(4.5)


def test_min_k_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        min_k([-1.0], k=0.0)
    with pytest.raises(ValueError, match="no token"):
        min_k([], k=0.4)


def test_min_k_plus_plus_standardises_then_takes_lowest():
    lp = [-1.0, -3.0, -2.0, -6.0, -2.0]
    mu = [-1.0, -1.0, -2.0, -2.0, -1.0]
    sigma = [1.0, 2.0, 1.0, 2.0, 0.5]
    # z = [0, -1, 0, -2, -2]; int(0.4*5) = 2 lowest: -2, -2
    assert min_k_plus_plus(lp, mu, sigma, k=0.4) == pytest.approx(-2.0)
    # k = 0.6 -> 3 lowest: -2, -2, -1
    assert min_k_plus_plus(lp, mu, sigma, k=0.6) == pytest.approx(-5.0 / 3.0)
    with pytest.raises(ValueError, match="differ in length"):
        min_k_plus_plus([-1.0], [0.0, 0.0], [1.0], k=0.4)


def test_scores_from_stats_loss_zlib_orientation():
    text = "hello hello hello hello world"
    stats = TokenStats(
        logprob=torch.tensor([-1.0, -2.0, -3.0, -6.0], dtype=torch.float64),
        mu=torch.tensor([-1.0, -1.0, -1.0, -1.0], dtype=torch.float64),
        sigma=torch.ones(4, dtype=torch.float64),
    )
    s = scores_from_stats(stats, text, k=0.5)
    zb = len(zlib.compress(text.encode("utf-8")))
    assert zlib_bytes(text) == zb
    assert s["loss"] == pytest.approx(-3.0)  # mean log-prob = -mean NLL
    assert s["zlib"] == pytest.approx(-3.0 / zb)  # = -(NLL / zlib bytes): higher = member
    assert s["mink"] == pytest.approx(-4.5)  # lowest 2: -6, -3
    assert s["minkpp"] == pytest.approx(-3.5)  # z = [0, -1, -2, -5] -> lowest 2: -5, -2
    assert s["n_tokens"] == 4


# ---------------------------------------------------------------------------
# AUC orientation
# ---------------------------------------------------------------------------


def test_auc_members_positive():
    assert auc([5.0, 6.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [5.0, 6.0]) == 0.0
    assert auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    # pairs (3,2) (3,0) (1,0) member wins, (1,2) loses -> 3/4
    assert auc([3.0, 1.0], [2.0, 0.0]) == pytest.approx(0.75)
    # one tie counts one half: pairs (2,2) tie, (2,1) win -> 1.5/2
    assert auc([2.0], [2.0, 1.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="member"):
        auc([], [1.0])
    with pytest.raises(ValueError, match="not finite"):
        auc([float("nan")], [1.0])


def test_muse_privleak_auc_is_one_minus_ours_on_the_same_scores():
    forget_mink = [-1.0, -2.5, -0.5, -3.0]  # our Min-K (higher = member-like)
    holdout_mink = [-2.0, -2.5, -4.0]
    ours = auc(forget_mink, holdout_mink)  # forget as members
    muse = muse_privleak_auc([-x for x in forget_mink], [-x for x in holdout_mink])
    assert muse == pytest.approx(1.0 - ours)
    # memorised forget set (forget far more likely) -> MUSE AUC 0, ours 1
    assert muse_privleak_auc([0.1, 0.2], [5.0, 6.0]) == pytest.approx(0.0)
    assert auc([-0.1, -0.2], [-5.0, -6.0]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# token statistics vs a direct computation
# ---------------------------------------------------------------------------


def _direct_stats(model, tok, text):
    ids = torch.tensor([tok(text, add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    lp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)
    mu = (p * logp).sum(-1)
    var = (p * logp**2).sum(-1) - mu**2
    return lp, mu, var.clamp(min=0).sqrt()


def test_token_statistics_matches_direct_and_padding_does_not_matter(tiny):
    model, tok = tiny
    batched = token_statistics(model, tok, TEXTS, batch_size=3, max_length=64)
    single = [token_statistics(model, tok, [t], batch_size=1, max_length=64)[0] for t in TEXTS]
    for text, b, s in zip(TEXTS, batched, single):
        lp, mu, sigma = _direct_stats(model, tok, text)
        assert b.n_tokens == len(tok(text)["input_ids"]) - 1
        torch.testing.assert_close(b.logprob, lp, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.mu, mu, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.sigma, sigma, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.logprob, s.logprob, atol=1e-5, rtol=1e-5)


def test_token_statistics_truncates_and_rejects_short_texts(tiny):
    model, tok = tiny
    (st,) = token_statistics(model, tok, [TEXTS[2]], max_length=5)
    assert st.n_tokens == 4 and st.truncated
    with pytest.raises(ValueError, match="text 1 has"):
        token_statistics(model, tok, [TEXTS[0], ""], max_length=64)  # BOS only
    with pytest.raises(ValueError, match="batch_size"):
        token_statistics(model, tok, TEXTS, batch_size=0)


def test_mia_suite_structure(tiny):
    model, tok = tiny
    res = mia_suite(model, tok, TEXTS[:3], TEXTS[3:], k=0.4, batch_size=2, max_length=64)
    assert set(res["auc"]) == {"loss", "zlib", "mink", "minkpp"}
    assert all(0.0 <= v <= 1.0 for v in res["auc"].values())
    assert len(res["per_example"]["member"]) == 3 and len(res["per_example"]["nonmember"]) == 2
    rows = res["per_example"]["member"] + res["per_example"]["nonmember"]
    # aggregates recomputable from per-example values
    assert res["auc"]["mink"] == auc([r["mink"] for r in rows[:3]], [r["mink"] for r in rows[3:]])
    direct = _direct_stats(model, tok, TEXTS[0])[0]
    assert rows[0]["loss"] == pytest.approx(float(direct.mean()), abs=1e-5)
    assert rows[0]["mink"] == pytest.approx(min_k(direct, 0.4), abs=1e-5)


# ---------------------------------------------------------------------------
# memorisation
# ---------------------------------------------------------------------------


def _fixed_logits(predictions: list[int], vocab: int = 6) -> torch.Tensor:
    """Logits [1, T, V] whose argmax at position t is predictions[t]."""
    logits = torch.zeros(1, len(predictions), vocab)
    for t, p in enumerate(predictions):
        logits[0, t, p] = 1.0
    return logits


def test_memorisation_em_es_by_hand():
    # sequence: 2 prompt tokens then 4 answer tokens [1, 2, 3, 4] (labels -100 on the prompt)
    labels = torch.tensor([[-100, -100, 1, 2, 3, 4]])
    # position t predicts labels[t+1]; answer positions are t = 1..4 (answer token j at t = j+1)
    # answer tokens 1,2,3 right (j = 1..3), token 0 wrong -> EM 0.75, k* = 1, ES = 0.75
    em, es = memorisation_from_logits(_fixed_logits([0, 5, 2, 3, 4, 0]), labels)
    assert em.item() == pytest.approx(0.75) and es.item() == pytest.approx(0.75)
    # tokens 0,1,2 right, last wrong -> EM 0.75, ES 0
    em, es = memorisation_from_logits(_fixed_logits([0, 1, 2, 3, 5, 0]), labels)
    assert em.item() == pytest.approx(0.75) and es.item() == pytest.approx(0.0)
    # all right -> 1, 1; all wrong -> 0, 0
    em, es = memorisation_from_logits(_fixed_logits([0, 1, 2, 3, 4, 0]), labels)
    assert (em.item(), es.item()) == (1.0, 1.0)
    em, es = memorisation_from_logits(_fixed_logits([0, 5, 5, 5, 5, 0]), labels)
    assert (em.item(), es.item()) == (0.0, 0.0)


def test_memorisation_ignores_right_padding():
    # row 0: 3 answer tokens then 2 pad columns; last two answer tokens right -> EM 2/3, ES 2/3
    labels = torch.tensor([[-100, 1, 2, 3, -100, -100], [-100, 1, 2, 3, 4, 5]])
    logits = torch.cat([_fixed_logits([5, 2, 3, 0, 0, 0]), _fixed_logits([1, 2, 3, 4, 0, 0])])
    em, es = memorisation_from_logits(logits, labels)
    assert em[0].item() == pytest.approx(2 / 3) and es[0].item() == pytest.approx(2 / 3)
    # row 1: answer [1..5] predicted by t=0..4 as [1,2,3,4,0]: first 4 right, last wrong
    assert em[1].item() == pytest.approx(0.8) and es[1].item() == pytest.approx(0.0)


def test_qa_memorisation_batched_equals_single(tiny):
    from blur_core.data import QAFormat

    model, tok = tiny
    fmt = QAFormat(use_chat_template=False)
    qs = ["where the cat", "who the dog ran", "what rain"]
    ans = ["the cat sat on the mat", "to the park", "fell"]
    batched = qa_memorisation(model, tok, qs, ans, fmt=fmt, batch_size=3, max_length=64)
    for i in range(3):
        single = qa_memorisation(
            model, tok, [qs[i]], [ans[i]], fmt=fmt, batch_size=1, max_length=64
        )
        assert batched["em"][i] == pytest.approx(single["em"][0])
        assert batched["es"][i] == pytest.approx(single["es"][0])
        assert 0.0 <= batched["es"][i] <= 1.0 and 0.0 <= batched["em"][i] <= 1.0
    assert all(not math.isnan(v) for v in batched["em"] + batched["es"])


def test_qa_memorisation_matches_direct_argmax(tiny):
    from blur_core.data import QAFormat, encode_qa

    model, tok = tiny
    fmt = QAFormat(use_chat_template=False)
    q, a = "who the dog ran", "to the park and the cat"
    enc = encode_qa(tok, q, a, fmt, 64)
    ids, labels = torch.tensor([enc["input_ids"]]), torch.tensor(enc["labels"])
    with torch.no_grad():
        pred = model(input_ids=ids).logits[0, :-1].argmax(-1)
    target = labels[1:]
    correct = [bool(p == t) for p, t in zip(pred, target) if t != -100]
    trailing = 0
    for c in reversed(correct):
        if not c:
            break
        trailing += 1
    got = qa_memorisation(model, tok, [q], [a], fmt=fmt, batch_size=1, max_length=64)
    assert got["em"][0] == pytest.approx(sum(correct) / len(correct))
    assert got["es"][0] == pytest.approx(trailing / len(correct))
