"""Zero-shot multiple choice on SmolLM2-135M: blur_core vs lm-evaluation-harness itself.

lm-eval's side is its own machinery, offline: its task yamls (``wmdp_bio``,
``mmlu_<subject>``, loaded with lm-eval's yaml loader) with ``dataset_path`` pointed
at a local JSON Lines copy of the items in the hub schema, ``ConfigurableTask``
building the requests, ``HFLM(pretrained=model, tokenizer=tok).loglikelihood`` scoring
them and ``task.process_results`` giving ``acc``. The runner lives in
``benchmarks/mc_agreement.py`` (``run_lmeval``), which does the same on 400 items.

Tolerance: predictions must agree exactly; log-likelihoods to 1e-4 absolute. Both sides
run fp32 on the same model, tokens and (here) the same batch composition, but ours
projects only the scored positions onto the vocabulary (``logits_to_keep``) and sums in
fp64 where lm-eval computes the full ``[B, T, V]`` log-softmax and sums in fp32, and a
different batch/padding shape changes fp32 matmul blocking: measured differences are
~1e-5 on log-likelihoods of magnitude ~1-20.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from blur_core.data.mc import load_mmlu, load_wmdp, select_items
from blur_core.eval.mc import evaluate_mc, mc_context

pytestmark = pytest.mark.slow

TOL = 1e-4


def _runner():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "mc_agreement.py"
    spec = importlib.util.spec_from_file_location("mc_agreement", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_lmeval


def test_predictions_and_logliks_match_lm_eval(smollm2_dir, shared_data, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import torch

    from blur_core.models import load_model, load_tokenizer

    torch.manual_seed(0)
    model, tok = load_model(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))
    items = select_items(load_wmdp(shared_data / "wmdp", "bio"), 6, seed=1) + select_items(
        load_mmlu(
            shared_data / "mmlu", "test", subjects=["abstract_algebra", "anatomy", "global_facts"]
        ),
        6,
        seed=1,
    )
    assert len({it.subject for it in items}) >= 3

    theirs = _runner()(model, tok, items, batch_size=4, workdir=tmp_path)
    ours = evaluate_mc(model, tok, items, batch_size=4)
    # one-at-a-time reference (no single-forward shortcut, no padding) on half the items:
    # 4 forwards per item, the costliest part of the test
    some = items[:3] + items[6:9]
    single = evaluate_mc(model, tok, some, batch_size=1, single_forward=False)

    assert [mc_context(it) for it in items] == theirs["contexts"]  # prompt strings identical
    their_pred = [max(range(4), key=lambda k: (row[k], -k)) for row in theirs["loglik"]]
    assert [e["pred"] for e in ours["per_example"]] == their_pred
    assert [float(e["correct"]) for e in ours["per_example"]] == theirs["acc"]
    assert ours["accuracy"] == pytest.approx(sum(theirs["acc"]) / len(items))
    for mine, ref in zip(ours["per_example"], theirs["loglik"]):
        assert mine["loglik"] == pytest.approx(ref, abs=TOL)
    for one, i in zip(single["per_example"], [0, 1, 2, 6, 7, 8]):
        assert one["loglik"] == pytest.approx(theirs["loglik"][i], abs=TOL)
        assert one["pred"] == ours["per_example"][i]["pred"]
