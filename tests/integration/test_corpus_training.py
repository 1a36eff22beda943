"""Training on text corpora through the shared loop (the embedded corpus, a tiny Llama):

* the loss is on every token of a chunk (equal to the model's own mean token loss);
* every forget loss that makes sense on text (GA, NPO, SimNPO, RMU) and every retain loss
  (NLL, KL, RMU) trains, with ``<d, F> = gamma ||F||^2`` in every step's statistics;
* BLUR-NPO on text raises the forget corpus's NLL and lowers the retain corpus's;
* a bad corpus file stops the run before any model is loaded, naming the file and line;
* BLUR forget-priority with gamma = 1/alpha under AdamW is the reference BLUR code's WMDP
  update ``g = F + alpha (R - (<F,R>/||F||^2) F)``, step for step (see the test for the
  tolerance and Adam's eps);
* invariance (slow): batch 8 x 1 == 1 x 8 == 2 DDP ranks x 2 x 2 == ZeRO-2 == ZeRO-3
  (2 ranks x 2 x 2), for MUSE chunking and for per-document (RMU-style) examples.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
if str(REPO) not in sys.path:  # when run as a script by torchrun
    sys.path.insert(0, str(REPO))

from tests.integration.helpers import load_weights, max_abs_diff, read_log  # noqa: E402

TOL = 1e-6
# xi = gamma - <R,F>/||F||^2 comes from fp32 dot products over the ~1.5e5 parameters
# (bilevel.partial_sums: torch.dot per chunk, chunks summed in fp64). Their summation order
# depends on the CPU thread count and, under ZeRO, on the shard split: measured |dxi| up to
# 1.6e-6 (relative 1.5e-6) between runs whose weights agree to 2e-8. The weights carry the
# 1e-6 tolerance; xi gets 1e-5.
XI_TOL = 1e-5
# the untrained model's NPO gradients have norms of ~50-170 on these chunks (sequence-level
# sums over 24-128 tokens), so SGD lr 0.1 keeps the one-step update at ~0.1-0.3 per weight:
# large against the tolerance, small enough that fp32 rounding stays far below it
SGD = dict(optimizer="sgd", lr=0.1, max_grad_norm=None)
CHUNKINGS = {"muse": 24, "document": 128}  # text_chunking -> max_length
RMU_LAYER = 2  # hidden_states[2] = the output of model.model.layers[1] (of 3)


def corpus_config(model, out, method, corpus, chunking="document", **train) -> dict:
    base = {
        "max_steps": 1,
        "micro_batch_size": 8,
        "grad_accum": 1,
        **SGD,
        "progress": False,
    }
    base.update(train)
    return {
        "model": str(model),
        "output_dir": str(out),
        "method": method,
        "data": {
            "forget": str(corpus["forget"]),
            "retain": str(corpus["retain"]),
            "format": "text",
            "text_chunking": chunking,
            "max_length": CHUNKINGS[chunking],
        },
        "train": base,
    }


def _run(cfg: dict):
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    return run(parse_run_config(cfg))


# ---------------------------------------------------------------------------------------
# the data path
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_text_loss_is_on_every_token(chunking, corpus):
    from blur_core.data import pad_collate
    from blur_core.losses import IGNORE_INDEX, nll_loss
    from blur_core.methods import build_objective
    from blur_core.models import load_model, load_tokenizer
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import build_dataset

    cfg = parse_run_config(
        corpus_config(corpus["base_model"], "unused", {"name": "ga"}, corpus, chunking)
    )
    tok = load_tokenizer(str(corpus["base_model"]))
    ds = build_dataset(cfg, "forget", tok, build_objective("ga"))
    batch = pad_collate([ds[i] for i in range(len(ds))], tok.pad_token_id)
    lengths = batch["attention_mask"].sum(1)
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])  # every real token
    assert (batch["labels"][~real] == IGNORE_INDEX).all()  # and no padding
    model = load_model(str(corpus["base_model"]))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ours = nll_loss(logits, batch["labels"])
        if chunking == "muse":  # equal lengths: the HF mean over all tokens is the same number
            assert bool((lengths == CHUNKINGS["muse"]).all())
            hf = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        else:  # per-document means, then the mean over documents
            assert len(set(lengths.tolist())) > 1, "documents of one length: no padding tested"
            hf = torch.stack(
                [
                    model(
                        input_ids=batch["input_ids"][i : i + 1, :n],
                        labels=batch["labels"][i : i + 1, :n],
                    ).loss
                    for i, n in enumerate(lengths.tolist())
                ]
            ).mean()
    assert abs(float(ours) - float(hf)) < 1e-5, (float(ours), float(hf))


# forget x retain losses on text; every forget and every retain loss at least once, BLUR and
# the weighted-sum baselines
TEXT_METHODS = {
    "blur-ga-kl": {"name": "blur", "forget_loss": "ga", "retain_loss": "kl", "gamma": 0.1},
    "blur-npo-nll": {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.1},
    "blur-simnpo-rmu": {
        "name": "blur",
        "forget_loss": "simnpo",
        "retain_loss": "rmu",
        "gamma": 0.1,
    },
    "blur-rmu-rmu": {"name": "blur", "forget_loss": "rmu", "retain_loss": "rmu", "gamma": 0.1},
    "blur-rmu-nll": {"name": "blur", "forget_loss": "rmu", "retain_loss": "nll", "gamma": 0.1},
    "npo-kl": {"name": "npo", "retain_loss": "kl"},
    "rmu": {"name": "rmu", "retain_weight": 10.0, "steering_coeff": 2.0},
    # the rivals that need no QA answers (issue 19)
    "wga": {"name": "wga"},
    "satimp": {"name": "satimp"},
    "ceu": {"name": "ceu", "retain_weight": 1.0},
    "undial-kl": {"name": "undial", "retain_weight": 1.0, "retain_loss": "kl"},
    # (beta1 1: on this untrained model p ~ 1/V, and p^5 would make F vanish: BLUR's fallback)
    "blur-satimp-nll": {
        "name": "blur",
        "forget_loss": "satimp",
        "satimp_beta1": 1.0,
        "retain_loss": "nll",
        "gamma": 0.1,
    },
}


@pytest.mark.parametrize("name", sorted(TEXT_METHODS))
def test_every_text_loss_trains(name, corpus, tmp_path):
    method = dict(TEXT_METHODS[name])
    if "rmu" in (method.get("forget_loss"), method.get("retain_loss"), method["name"]):
        method["rmu_layer"] = RMU_LAYER
    cfg = corpus_config(
        corpus["base_model"],
        tmp_path / name,
        method,
        corpus,
        "muse",
        max_steps=2,
        micro_batch_size=4,
        optimizer="adamw",
        lr=1e-3,
        max_grad_norm=1.0,
    )
    result = _run(cfg)
    log = read_log(tmp_path / name)
    assert [r["step"] for r in log] == [1, 2]
    for rec in log:
        assert all(math.isfinite(rec[k]) for k in ("update_norm", "norm_f", "norm_r"))
        assert rec["update_norm"] > 0 and not rec["fallback"]
        if method["name"] == "blur":  # <d, F> = gamma ||F||^2, i.e. xi = gamma - <R,F>/||F||^2
            expected = method["gamma"] - rec["dot"] / rec["norm_f"] ** 2
            assert rec["xi"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # KL and RMU-retain have no gradient at step 1 (policy == reference) but must at step 2
    assert log[1]["norm_r"] > 0
    diff = max_abs_diff(load_weights(corpus["base_model"]), load_weights(result.model_dir))
    assert diff > 1e-5, f"{name}: parameters did not change ({diff})"


def _corpus_nll(model_dir, corpus, which: str) -> float:
    """Mean per-chunk NLL of a corpus (MUSE chunking, 24 tokens) under a model."""
    from blur_core.data import pad_collate
    from blur_core.losses import nll_loss
    from blur_core.methods import build_objective
    from blur_core.models import load_model, load_tokenizer
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import build_dataset

    cfg = parse_run_config(corpus_config(model_dir, "unused", {"name": "ga"}, corpus, "muse"))
    tok = load_tokenizer(str(model_dir))
    ds = build_dataset(cfg, which, tok, build_objective("graddiff"))
    batch = pad_collate([ds[i] for i in range(len(ds))], tok.pad_token_id)
    model = load_model(str(model_dir))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(nll_loss(logits, batch["labels"]))


def test_blur_npo_on_text_forgets_forget_corpus_and_learns_retain(corpus, tmp_path):
    method = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.1}
    cfg = corpus_config(
        corpus["base_model"],
        tmp_path,
        method,
        corpus,
        "muse",
        max_steps=8,
        micro_batch_size=4,
        optimizer="adamw",
        lr=3e-3,
        max_grad_norm=1.0,
    )
    result = _run(cfg)
    before = {w: _corpus_nll(corpus["base_model"], corpus, w) for w in ("forget", "retain")}
    after = {w: _corpus_nll(result.model_dir, corpus, w) for w in ("forget", "retain")}
    print(f"NLL before {before}, after {after}")
    assert after["forget"] > before["forget"] + 0.1
    assert after["retain"] < before["retain"] - 0.1


def test_bad_corpus_file_fails_before_training(corpus, tmp_path, monkeypatch):
    from blur_core.train import loop

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(loop, "build_backend", no_model)
    bad = tmp_path / "bad_forget.jsonl"
    bad.write_text('{"text": "This is a report."}\n\n{"body": "This is not."}\n')
    cfg = corpus_config(corpus["base_model"], tmp_path / "run", {"name": "ga"}, corpus)
    cfg["data"]["forget"] = str(bad)
    with pytest.raises(ValueError, match=r"bad_forget\.jsonl: line 3: missing field 'text'"):
        _run(cfg)
    bad.write_text("")
    with pytest.raises(ValueError, match=r"bad_forget\.jsonl: empty corpus file"):
        _run(cfg)
    bad.write_text('{"text": "ok"}\nThis is a report.\n')
    with pytest.raises(ValueError, match=r"bad_forget\.jsonl: line 2: not JSON lines"):
        _run(cfg)
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


# ---------------------------------------------------------------------------------------
# item 6: BLUR with gamma = 1/alpha is the reference code's WMDP update (AdamW)
# ---------------------------------------------------------------------------------------
ALPHA = 1200.0
STEER = 6.5
TRAINABLE = [r"model\.layers\.[01]\.mlp\.down_proj\.weight"]  # RMU-style layer selection
REF_STEPS = 5
REF_LR = 1e-3
REF_EPS = 1e-8


def _reference_wmdp_run(corpus, steps: int, eps: float) -> tuple[dict, list[dict]]:
    """The reference BLUR WMDP loop, written out: forward hooks on ``model.layers[1]``, the
    MSE losses of RMU (``F.mse_loss`` over batch, positions and hidden units; the chunks
    are of equal length, so there is no padding), ``g = F + alpha (R - (<F,R>/||F||^2) F)``
    put into ``param.grad``, torch AdamW. Same starting model, control vector, batches
    (the loop's sampler) and steps as the run it is compared with."""
    from blur_core.data import pad_collate
    from blur_core.losses import rmu_control_vector
    from blur_core.methods import build_objective
    from blur_core.models import load_model, load_tokenizer
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import build_dataset
    from blur_core.train.sampler import step_indices

    torch.manual_seed(0)
    path = str(corpus["base_model"])
    cfg = parse_run_config(corpus_config(path, "unused", {"name": "ga"}, corpus, "muse"))
    tok = load_tokenizer(path)
    obj = build_objective("graddiff")
    forget_ds, retain_ds = (build_dataset(cfg, w, tok, obj) for w in ("forget", "retain"))
    model, frozen = load_model(path).train(), load_model(path).eval()
    params = [
        p
        for n, p in model.named_parameters()
        if n.endswith("mlp.down_proj.weight") and n.split(".")[2] in ("0", "1")
    ]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=REF_LR, eps=eps, weight_decay=0.0)
    control = rmu_control_vector(model.config.hidden_size, STEER, 0)

    def activations(m, batch):
        cache = []
        handle = m.model.layers[RMU_LAYER - 1].register_forward_hook(
            lambda mod, inp, out: cache.append(out[0] if isinstance(out, tuple) else out)
        )
        m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        handle.remove()
        return cache[0]

    log = []
    for step in range(steps):
        fb = pad_collate([forget_ds[i] for i in step_indices(len(forget_ds), step, 4, 0)], 0)
        rb = pad_collate([retain_ds[i] for i in step_indices(len(retain_ds), step, 4, 0)], 0)
        unlearn_loss = torch.nn.functional.mse_loss(
            activations(model, fb), control.expand(4, 24, -1)
        )
        gf = torch.autograd.grad(unlearn_loss, params)
        with torch.no_grad():
            target = activations(frozen, rb)
        retain_loss = torch.nn.functional.mse_loss(activations(model, rb), target)
        gr = torch.autograd.grad(retain_loss, params)
        upper = sum((a * b).sum() for a, b in zip(gf, gr))
        lower = sum((a * a).sum() for a in gf)
        for p, a, b in zip(params, gf, gr):
            p.grad = a + ALPHA * (b - a * upper / lower)
        optimizer.step()
        optimizer.zero_grad()
        log.append(
            {
                "loss_forget": float(unlearn_loss.detach()),
                "loss_retain": float(retain_loss.detach()),
                "ratio": float(upper / lower),
            }
        )
    return {n: p.detach().clone() for n, p in model.state_dict().items()}, log


def test_blur_gamma_one_over_alpha_equals_reference_wmdp_update(corpus, tmp_path):
    """``g = alpha * d`` with ``d`` BLUR's forget-priority direction at gamma = 1/alpha.

    Adam divides by ``sqrt(v) + eps``; scaling the gradient by alpha scales ``m`` and
    ``sqrt(v)`` by alpha, so AdamW on ``d`` with ``eps / alpha`` takes exactly the steps
    AdamW on ``g`` takes with ``eps``: checked step for step (the losses of step s see the
    weights after step s-1) within 1e-6 in the weights and the per-step losses and xi.

    The caveat, measured: Adam is invariant to the alpha scale only up to its eps. With the
    *same* eps (1e-8) on both, coordinates whose ``sqrt(v)`` of ``d`` is not large against
    1e-8 take smaller steps than the reference's; on this tiny model that changes the
    weights by a sizeable fraction of the whole update (printed), so reproducing the
    reference needs ``adam_eps = eps / alpha``."""
    ref_weights, ref_log = _reference_wmdp_run(corpus, REF_STEPS, REF_EPS)
    start = load_weights(corpus["base_model"])
    moved = max_abs_diff(start, {k: ref_weights[k] for k in start})
    assert moved > REF_LR  # 5 Adam steps of up to ~lr each: the comparison has signal
    assert ref_log[-1]["loss_forget"] < ref_log[0]["loss_forget"]  # it steers, as RMU should
    method = {
        "name": "blur",
        "forget_loss": "rmu",
        "retain_loss": "rmu",
        "gamma": 1.0 / ALPHA,
        "rmu_layer": RMU_LAYER,
        "steering_coeff": STEER,
        "rmu_seed": 0,
    }
    measured = {}
    for name, eps in (("eps/alpha", REF_EPS / ALPHA), ("same eps", REF_EPS)):
        out = tmp_path / name.replace("/", "-").replace(" ", "-")
        cfg = corpus_config(
            corpus["base_model"],
            out,
            method,
            corpus,
            "muse",
            max_steps=REF_STEPS,
            micro_batch_size=4,
            optimizer="adamw",
            lr=REF_LR,
            adam_eps=eps,
            weight_decay=0.0,
            max_grad_norm=None,
            trainable=TRAINABLE,
        )
        ours = load_weights(_run(cfg).model_dir)
        log = read_log(out)
        measured[name] = {
            "dW": max_abs_diff(ours, {k: ref_weights[k] for k in ours}),
            "loss": max(
                abs(a[k] - b[k]) / max(1.0, abs(b[k]))
                for a, b in zip(log, ref_log)
                for k in ("loss_forget", "loss_retain")
            ),
            "xi": max(abs(a["xi"] - (1.0 / ALPHA - b["ratio"])) for a, b in zip(log, ref_log)),
        }
        frozen = [k for k in start if "down_proj" not in k or k.split(".")[2] == "2"]
        assert max_abs_diff({k: start[k] for k in frozen}, {k: ours[k] for k in frozen}) == 0.0
    print(f"reference moved the weights by {moved:.3g}; vs BLUR: {measured}")
    exact = measured["eps/alpha"]
    assert exact["dW"] <= TOL and exact["loss"] <= TOL and exact["xi"] <= TOL, exact
    assert measured["same eps"]["dW"] > 100 * TOL  # the eps caveat is real at this scale


# ---------------------------------------------------------------------------------------
# invariance (slow): one torchrun launch runs the 2-rank DDP and ZeRO runs of both chunkings
# ---------------------------------------------------------------------------------------
INVARIANCE_METHODS = {
    "muse": {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.3},
    # (forget priority: xi = gamma - <R,F>/||F||^2 is known to ~1e-7 * ||R||/||F|| in fp32; the
    # retain-priority mirror would carry ~1e-7 * ||F||/||R|| ~ 1e-5 with these large forget
    # gradients. test_invariance.py checks retain priority on the memorised QA target.)
    "document": {"name": "blur", "forget_loss": "simnpo", "retain_loss": "nll", "gamma": 0.5},
}
DIST_RUNS = {  # name -> train overrides (2 ranks x batch 2 x accumulation 2 = global 8)
    "ddp": dict(micro_batch_size=2, grad_accum=2),
    "zero2": dict(micro_batch_size=2, grad_accum=2, backend="deepspeed", deepspeed_config="zero2"),
    "zero3": dict(micro_batch_size=2, grad_accum=2, backend="deepspeed", deepspeed_config="zero3"),
}


def _worker(plan_path: str) -> None:
    import torch.distributed as dist

    from blur_core.train.config import parse_run_config
    from blur_core.train.dist import init_distributed
    from blur_core.train.loop import run

    ctx = init_distributed()
    for cfg in json.loads(Path(plan_path).read_text()):
        run(parse_run_config(cfg), ctx)
        dist.barrier()


@pytest.fixture(scope="module")
def dist_runs(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus-dist")
    plan, outs = [], {}
    needs_ds = any(t.get("backend") == "deepspeed" for t in DIST_RUNS.values())
    if needs_ds:
        pytest.importorskip("deepspeed")
    for chunking, method in INVARIANCE_METHODS.items():
        for name, train in DIST_RUNS.items():
            out = outs[chunking, name] = root / f"{chunking}-{name}"
            plan.append(corpus_config(corpus["base_model"], out, method, corpus, chunking, **train))
    plan_path = root / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE),
        str(plan_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=str(REPO))
    if proc.returncode != 0:
        raise AssertionError(
            f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
        )
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("chunking", sorted(INVARIANCE_METHODS))
def test_corpus_step_invariant_to_split_ranks_and_zero(chunking, corpus, dist_runs, tmp_path):
    method = INVARIANCE_METHODS[chunking]
    local = {
        "8x1": dict(micro_batch_size=8, grad_accum=1),
        "1x8": dict(micro_batch_size=1, grad_accum=8),
        "seed1": dict(seed=1),
    }
    weights, xis = {}, {}
    for name, train in local.items():
        out = tmp_path / name
        _run(corpus_config(corpus["base_model"], out, method, corpus, chunking, **train))
        weights[name], xis[name] = load_weights(out / "model"), read_log(out)[0]["xi"]
    for name in DIST_RUNS:
        out = dist_runs[chunking, name]
        log = read_log(out)
        assert len(log) == 1 and not log[0]["fallback"]
        weights[name], xis[name] = load_weights(out / "model"), log[0]["xi"]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["world_size"] == 2
        assert summary["backend"] == ("local" if name == "ddp" else "deepspeed")
    update = max_abs_diff(load_weights(corpus["base_model"]), weights["8x1"])
    assert update > 1e-3, f"the step barely moved the weights ({update}): no signal"
    for name in ("1x8", *DIST_RUNS):
        diff = max_abs_diff(weights["8x1"], weights[name])
        dxi = abs(xis[name] - xis["8x1"])
        print(f"{chunking} {name}: max|dW|={diff:.3g} |dxi|={dxi:.3g} (update {update:.3g})")
        assert diff <= TOL, f"{chunking} {name} vs 8x1: max abs weight diff {diff:.3g} > {TOL}"
        assert dxi <= XI_TOL, f"{chunking} {name}: xi {xis[name]} vs {xis['8x1']}"
    # signal: another global batch (seed 1) differs by far more than the tolerance
    print(
        f"{chunking} seed 1: max|dW|={max_abs_diff(weights['8x1'], weights['seed1']):.3g} "
        f"|dxi|={abs(xis['seed1'] - xis['8x1']):.3g}"
    )
    assert max_abs_diff(weights["8x1"], weights["seed1"]) > 100 * TOL
    assert abs(xis["seed1"] - xis["8x1"]) > 10 * XI_TOL


if __name__ == "__main__":
    _worker(sys.argv[1])


def test_embedded_corpus_feeds_the_muse_suite_and_cloze_questions(corpus):
    """The prepared embedded corpus is what the evaluation code reads: the ``muse`` suite on
    the prepared dir (VerbMem, KnowMem, PrivLeak, MIA) and 4-way cloze questions."""
    from blur_core.data import QAFormat, load_corpus_mc
    from blur_core.eval.suites import cloze_mc, parse_suite, run_suite
    from blur_core.models import load_model, load_tokenizer

    model, tok = load_model(str(corpus["base_model"])), load_tokenizer(str(corpus["base_model"]))
    cfg = parse_suite(
        {
            "kind": "muse",
            "source": str(corpus["root"]),
            "limit": 3,
            "verbmem_max_new_tokens": 16,
            "max_new_tokens": 8,
        }
    )
    result = run_suite("muse_embedded", cfg, model, tok, self_reference=True)
    for key in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "mia_loss_auc"):
        assert math.isfinite(result["metrics"][key]), key
    assert result["metrics"]["privleak"] == 0.0  # self reference
    for which in ("forget", "retain"):
        items = load_corpus_mc(corpus["root"], which)[:8]
        mc = cloze_mc(model, tok, items, QAFormat(), batch_size=16, max_length=64)
        assert mc["n"] == 8 and 0.0 <= mc["accuracy"] <= 1.0
