"""MUSE-News on the real shared data with SmolLM2-135M (slow; a few items, short lengths)."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def muse_news(shared_data):
    from blur_core.data.muse import load_muse

    root = shared_data / "muse_news"
    if not root.is_dir():
        pytest.skip(f"MUSE-News copy not found at {root}")
    return load_muse(root)


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    from blur_core.models import load_model, load_tokenizer

    return load_model(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))


def test_load_muse_real_counts(muse_news):
    assert muse_news.counts() == {
        "knowmem_forget": 100,
        "knowmem_forget_icl": 10,
        "knowmem_retain": 100,
        "knowmem_retain_icl": 10,
        "verbmem_forget": 100,
        "privleak_forget": 100,
        "privleak_retain": 100,
        "privleak_holdout": 100,
    }
    assert muse_news.raw_forget.name == "forget.txt" and muse_news.raw_retain is not None


def test_evaluate_muse_smollm2_limit3(muse_news, smol):
    from blur_core.eval.muse import add_privleak_reference, evaluate_muse, recompute_aggregates

    model, tok = smol
    res = evaluate_muse(
        model,
        tok,
        muse_news,
        batch_size=3,
        limit=3,
        verbmem_max_new_tokens=8,
        knowmem_max_new_tokens=4,
        privleak_max_length=128,
    )
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert 0.0 <= res["metrics"][name] <= 100.0, name
        assert len(res["per_example"][name]) == 3
        assert all(0.0 <= r["rougeL_f1"] <= 1.0 for r in res["per_example"][name])
    pl = res["per_example"]["privleak"]
    assert len(pl["forget"]) == 3 and len(pl["holdout"]) == 3
    assert all(
        r["n_tokens"] == 127 and r["truncated"] and math.isfinite(r["min_k_score"])
        for r in pl["forget"] + pl["holdout"]
    )
    assert 0.0 <= res["privleak_auc"] <= 1.0
    assert recompute_aggregates(res["per_example"])["privleak_auc"] == res["privleak_auc"]
    add_privleak_reference(res)
    assert res["privleak_reference"] == "muse_news_constant" and math.isfinite(res["privleak"])


def test_generate_raw_batched_equals_single_smollm2(muse_news, smol):
    from blur_core.eval.muse import generate_raw, knowmem_prompt

    model, tok = smol
    icl = muse_news.knowmem_forget_icl
    prompts = [
        knowmem_prompt(
            r["question"], [x["question"] for x in icl[:3]], [x["answer"] for x in icl[:3]]
        )
        for r in muse_news.knowmem_forget[:3]
    ]
    batched = generate_raw(model, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [generate_raw(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_mia_suite_smollm2(muse_news, smol):
    from blur_core.eval.mia import auc, mia_suite
    from blur_core.eval.muse import muse_privleak_auc

    model, tok = smol
    res = mia_suite(
        model,
        tok,
        muse_news.privleak_forget[:3],
        muse_news.privleak_holdout[:3],
        k=0.4,
        batch_size=3,
        max_length=128,
    )
    assert set(res["auc"]) == {"loss", "zlib", "mink", "minkpp"}
    assert all(0.0 <= v <= 1.0 for v in res["auc"].values())
    members, nonmembers = res["per_example"]["member"], res["per_example"]["nonmember"]
    assert [r["n_tokens"] for r in members + nonmembers] == [127] * 6
    for r in members + nonmembers:
        assert all(math.isfinite(r[k]) for k in ("loss", "zlib", "mink", "minkpp"))
    mink_m, mink_n = [r["mink"] for r in members], [r["mink"] for r in nonmembers]
    assert auc(mink_m, mink_n) == res["auc"]["mink"]
    assert muse_privleak_auc([-x for x in mink_m], [-x for x in mink_n]) == pytest.approx(
        1 - res["auc"]["mink"]
    )
