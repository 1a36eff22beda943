"""The DeepSpeed ZeRO-2/3 backend on 2 CPU ranks (gloo, torchrun) against the single process.

One torchrun launch (this file run as a script, ``_worker``) executes a plan of runs
sequentially in one process group; the tests below compare its outputs with
single-process LocalBackend runs made in the pytest process:

* one SGD step (lr=1, no clipping) of BLUR-NPO on forget/retain batches that share tokens,
  ZeRO-2 and ZeRO-3, accumulation 1 (2 ranks x 4) and 2 (2 ranks x 2 x 2), equals the
  single-process full-batch (8 x 1) update within 1e-6 in the weights and in xi;
* the comparison has signal: the same runs with a bug injected (the two partial sums not
  all-reduced; the retain backward adding onto the captured forget gradient) miss xi by
  far more than 1e-6;
* AdamW, 5 steps, ZeRO-3 vs single process within 1e-5;
* a weighted-sum baseline (GradDiff) and a KL-retain method (reference model under ZeRO-3);
* resume from a ZeRO checkpoint reproduces the uninterrupted run, and the converted
  checkpoint's logits equal the engine's within 1e-6;
* PDU, two SGD steps under ZeRO-2 and ZeRO-3 (2 ranks x 2 x 2), equals the single process in
  the weights and the dual within 1e-6, and a ZeRO-2 resume restores the dual bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
if str(REPO) not in sys.path:  # when run as a script by torchrun
    sys.path.insert(0, str(REPO))

from tests.integration.helpers import load_weights, max_abs_diff, read_log, run_config  # noqa: E402

pytest.importorskip("deepspeed")

BLUR_NPO = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.3}
GRADDIFF = {"name": "graddiff"}
SFT = {"name": "sft"}  # fine-tuning (the pipeline's target / retain models and relearning)
BLUR_KL = {"name": "blur", "forget_loss": "npo", "retain_loss": "kl", "gamma": 0.3}
# the dual rises from 0.5 by ~0.6 after step 1 (eps below the retain NLL), so step 2 uses it
PDU = {
    "name": "pdu",
    "forget_loss": "npo",
    "retain_loss": "nll",
    "retain_loss_eps": 0.0,
    "dual_step_size": 20.0,
    "dual_init": 0.5,
}
# DPO: a second forward pass on the preferred answers, [n, 2] reference log-probs from the
# ZeRO-3 engine; UNDIAL: a frozen ZeRO-3 reference engine's logits on the forget batch
BLUR_DPO = {"name": "blur", "forget_loss": "dpo", "retain_loss": "nll", "gamma": 0.01}
UNDIAL = {"name": "undial", "beta": 3.0, "retain_weight": 1.0}
TOL = 1e-6
ADAM_TOL = 1e-5
LOGIT_TOL = 1e-6

# name -> (method, deepspeed config, train overrides, injected bug)
SGD = dict(optimizer="sgd", lr=1.0, max_grad_norm=None)
EXACT = {
    f"{stage}-accum{k}": (
        BLUR_NPO,
        stage,
        dict(SGD, micro_batch_size=8 // (2 * k), grad_accum=k),
        None,
    )
    for stage in ("zero2", "zero3")
    for k in (1, 2)
}
BUGS = {
    "bug-no-all-reduce": (
        BLUR_NPO,
        "zero3",
        dict(SGD, micro_batch_size=2, grad_accum=2),
        "no_all_reduce",
    ),
    "bug-accumulate-captures": (
        BLUR_NPO,
        "zero3",
        dict(SGD, micro_batch_size=2, grad_accum=2),
        "accumulate_captures",
    ),
}
# adam_eps 1e-6 (not 1e-8): Adam divides by sqrt(v) + eps, so coordinates whose gradient is
# ~1e-9 (pure fp32 reduction-order noise, different between 1 and 2 ranks) would otherwise get
# updates of ~lr/10 that differ by ~1e-5 between two correct runs.
ADAMW = dict(
    optimizer="adamw",
    lr=1e-3,
    max_steps=5,
    max_grad_norm=1.0,
    micro_batch_size=2,
    grad_accum=2,
    adam_eps=1e-6,
)
OTHER = {
    "zero3-adamw-5": (BLUR_NPO, "zero3", ADAMW, None),
    "zero2-graddiff": (GRADDIFF, "zero2", dict(SGD, micro_batch_size=2, grad_accum=2), None),
    "zero3-sft": (
        SFT,
        "zero3",
        dict(SGD, lr=0.3, max_steps=2, micro_batch_size=2, grad_accum=2),
        None,
    ),
    "zero3-kl-2steps": (
        BLUR_KL,
        "zero3",
        dict(SGD, lr=0.3, max_steps=2, micro_batch_size=2, grad_accum=2),
        None,
    ),
    "zero3-dpo-2steps": (
        BLUR_DPO,
        "zero3",
        dict(SGD, lr=0.3, max_steps=2, micro_batch_size=2, grad_accum=2),
        None,
    ),
    "zero3-undial-2steps": (
        UNDIAL,
        "zero3",
        dict(SGD, lr=0.3, max_steps=2, micro_batch_size=2, grad_accum=2),
        None,
    ),
}
PDU_TRAIN = dict(SGD, lr=0.3, max_steps=2)
PDU_RUNS = {
    f"{stage}-pdu-2steps": (PDU, stage, dict(PDU_TRAIN, micro_batch_size=2, grad_accum=2), None)
    for stage in ("zero2", "zero3")
}
RESUME_TRAIN = dict(
    optimizer="adamw",
    lr=1e-3,
    max_steps=4,
    save_every=2,
    keep_checkpoints=5,
    micro_batch_size=2,
    grad_accum=2,
)


# ---------------------------------------------------------------------------------------
# the torchrun worker (this file as a script)
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _injected_bug(bug: str | None):
    """Patch ZeroBackend (in this worker process only) with a known bug:
    "no_all_reduce": combine the local shard sums without summing them over ranks;
    "accumulate_captures": keep DeepSpeed's gradient buffers between captures, so the
    retain backward adds onto the captured forget gradient."""
    from blur_core.train.zero import ZeroBackend

    originals = {"gradients": ZeroBackend.gradients, "end": ZeroBackend.end}

    def gradients_without_all_reduce(self):
        forget, retain, _ = originals["gradients"](self)
        return forget, retain, None

    def end_without_clearing(self, which):
        self._clear_deepspeed_grads = lambda: None  # instance attribute shadows the method
        try:
            originals["end"](self, which)
        finally:
            del self._clear_deepspeed_grads

    if bug == "no_all_reduce":
        ZeroBackend.gradients = gradients_without_all_reduce
    elif bug == "accumulate_captures":
        ZeroBackend.end = end_without_clearing
    elif bug is not None:
        raise ValueError(f"unknown bug {bug!r}")
    try:
        yield
    finally:
        ZeroBackend.gradients, ZeroBackend.end = originals["gradients"], originals["end"]


def _worker(plan_path: str) -> None:
    import torch.distributed as dist

    from blur_core.train.config import parse_run_config
    from blur_core.train.dist import init_distributed
    from blur_core.train.loop import run

    ctx = init_distributed()
    plan = json.loads(Path(plan_path).read_text())
    for item in plan:
        kind = item["kind"]
        if kind == "run":
            with _injected_bug(item.get("bug")):
                run(parse_run_config(item["config"]), ctx)
        elif kind == "copy":
            if ctx.is_main:
                shutil.copytree(item["src"], item["dst"])
            ctx.barrier()
        elif kind == "logits":
            _engine_logits(item, ctx)
        dist.barrier()


def _engine_logits(item: dict, ctx) -> None:
    """Load a ZeRO checkpoint into a fresh engine and write its logits on a fixed batch."""
    from blur_core.data import pad_collate
    from blur_core.methods import build_objective
    from blur_core.models import load_tokenizer
    from blur_core.train.backend import build_backend
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import build_dataset

    cfg = parse_run_config(item["config"])
    tok = load_tokenizer(cfg.model)
    backend = build_backend(cfg.model, cfg.train, ctx, tok)
    backend.load_state(Path(item["ckpt"]))
    ds = build_dataset(cfg, "retain", tok, build_objective("blur", {}))
    batch = pad_collate([ds[i] for i in range(6)], tok.pad_token_id)
    backend.model.eval()
    with torch.no_grad():
        logits = backend.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    if ctx.is_main:
        torch.save(
            {
                "logits": logits.float(),
                "input_ids": batch["input_ids"],
                "attention_mask": batch["attention_mask"],
            },
            item["out"],
        )


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------
def _zero_cfg(model, out, method, embedded, ds_config, **train):
    cfg = run_config(model, out, method, embedded, **train)
    cfg["train"].update(backend="deepspeed", deepspeed_config=ds_config)
    return cfg


@pytest.fixture(scope="module")
def zero_runs(target_model, embedded, tmp_path_factory):
    """All 2-rank DeepSpeed runs of this module, in one torchrun launch."""
    root = tmp_path_factory.mktemp("zero")
    plan, outs = [], {}
    for name, (method, ds, train, bug) in {**EXACT, **BUGS, **OTHER, **PDU_RUNS}.items():
        outs[name] = root / name
        plan.append(
            {
                "kind": "run",
                "bug": bug,
                "config": _zero_cfg(target_model, outs[name], method, embedded, ds, **train),
            }
        )
    # resume: an uninterrupted 4-step run that checkpoints at step 2; a second run that
    # starts from a copy of that checkpoint and does steps 3-4
    outs["resume-full"], outs["resume-part"] = root / "resume-full", root / "resume-part"
    ckpt = outs["resume-full"] / "checkpoints" / "step-000002"
    # ... and exports its weights after step 2 (per-checkpoint evaluation), which must change
    # nothing in the training (the resumed run, without exports, ends with the same weights)
    full_cfg = _zero_cfg(
        target_model,
        outs["resume-full"],
        BLUR_NPO,
        embedded,
        "zero3",
        **RESUME_TRAIN,
        export_steps=[2],
    )
    plan.append({"kind": "run", "config": full_cfg})
    plan.append(
        {
            "kind": "copy",
            "src": str(ckpt),
            "dst": str(outs["resume-part"] / "checkpoints" / "step-000002"),
        }
    )
    plan.append(
        {
            "kind": "run",
            "config": _zero_cfg(
                target_model, outs["resume-part"], BLUR_NPO, embedded, "zero3", **RESUME_TRAIN
            ),
        }
    )
    # PDU under ZeRO-2: the same resume, the dual restored from the step-2 checkpoint
    outs["pdu-resume-full"], outs["pdu-resume-part"] = root / "pdu-full", root / "pdu-part"
    for key in ("pdu-resume-full", "pdu-resume-part"):
        if key == "pdu-resume-part":
            src = outs["pdu-resume-full"] / "checkpoints" / "step-000002"
            dst = outs[key] / "checkpoints" / "step-000002"
            plan.append({"kind": "copy", "src": str(src), "dst": str(dst)})
        cfg = _zero_cfg(target_model, outs[key], PDU, embedded, "zero2", **RESUME_TRAIN)
        plan.append({"kind": "run", "config": cfg})
    outs["logits"] = root / "engine_logits.pt"
    plan.append(
        {"kind": "logits", "ckpt": str(ckpt), "config": full_cfg, "out": str(outs["logits"])}
    )
    outs["ckpt"] = ckpt

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


@pytest.fixture(scope="module")
def local_runs(target_model, embedded, tmp_path_factory):
    """Single-process LocalBackend references (full batch 8 x 1 unless the run accumulates)."""
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    root = tmp_path_factory.mktemp("local")
    refs = {
        "sgd": (BLUR_NPO, dict(SGD)),
        "adamw-5": (BLUR_NPO, dict(ADAMW, micro_batch_size=8, grad_accum=1)),
        "graddiff": (GRADDIFF, dict(SGD)),
        "sft-2steps": (SFT, dict(SGD, lr=0.3, max_steps=2)),
        "kl-2steps": (BLUR_KL, dict(OTHER["zero3-kl-2steps"][2], micro_batch_size=8, grad_accum=1)),
        "pdu-2steps": (PDU, dict(PDU_TRAIN)),
        "dpo-2steps": (
            BLUR_DPO,
            dict(OTHER["zero3-dpo-2steps"][2], micro_batch_size=8, grad_accum=1),
        ),
        "undial-2steps": (
            UNDIAL,
            dict(OTHER["zero3-undial-2steps"][2], micro_batch_size=8, grad_accum=1),
        ),
    }
    outs = {}
    for name, (method, train) in refs.items():
        outs[name] = root / name
        run(parse_run_config(run_config(target_model, outs[name], method, embedded, **train)))
    return outs


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXACT))
def test_zero_sgd_step_equals_single_process(name, zero_runs, local_runs, target_model):
    ref_w, ref_xi = load_weights(local_runs["sgd"] / "model"), read_log(local_runs["sgd"])[0]["xi"]
    update = max_abs_diff(load_weights(target_model), ref_w)
    assert update > 1e-3, f"the reference step barely moved the weights ({update}): no signal"
    log = read_log(zero_runs[name])
    assert len(log) == 1 and not log[0]["fallback"]
    diff = max_abs_diff(ref_w, load_weights(zero_runs[name] / "model"))
    dxi = abs(log[0]["xi"] - ref_xi)
    print(f"{name}: max|dW|={diff:.3g} |dxi|={dxi:.3g} (update {update:.3g}, xi {ref_xi:.6g})")
    assert diff <= TOL, f"{name}: max abs weight diff {diff:.3g} > {TOL}"
    assert dxi <= TOL, f"{name}: xi {log[0]['xi']} vs single process {ref_xi}"
    summary = json.loads((zero_runs[name] / "summary.json").read_text())
    assert summary["backend"] == "deepspeed" and summary["world_size"] == 2
    assert summary["zero_stage"] == int(name[4])


@pytest.mark.parametrize("name", sorted(BUGS))
def test_zero_comparison_detects_injected_bugs(name, zero_runs, local_runs):
    """Each injected bug moves xi by far more than the tolerance the exactness test uses."""
    ref_xi = read_log(local_runs["sgd"])[0]["xi"]
    bad_xi = read_log(zero_runs[name])[0]["xi"]
    dxi = abs(bad_xi - ref_xi)
    diff = max_abs_diff(
        load_weights(local_runs["sgd"] / "model"), load_weights(zero_runs[name] / "model")
    )
    print(f"{name}: |dxi|={dxi:.3g} max|dW|={diff:.3g}")
    assert dxi > 100 * TOL, f"{name}: the injected bug changed xi by only {dxi:.3g}"


def test_zero3_adamw_five_steps_equal_single_process(zero_runs, local_runs):
    diff = max_abs_diff(
        load_weights(local_runs["adamw-5"] / "model"),
        load_weights(zero_runs["zero3-adamw-5"] / "model"),
    )
    zlog, llog = read_log(zero_runs["zero3-adamw-5"]), read_log(local_runs["adamw-5"])
    dxi = max(abs(a["xi"] - b["xi"]) for a, b in zip(zlog, llog))
    print(f"zero3 adamw 5 steps: max|dW|={diff:.3g} max|dxi|={dxi:.3g}")
    assert len(zlog) == 5
    assert diff <= ADAM_TOL


def test_zero_graddiff_and_kl_reference_equal_single_process(zero_runs, local_runs):
    """The weighted-sum path (ZeRO-2) and a KL reference model under ZeRO-3 (2 steps)."""
    d_gd = max_abs_diff(
        load_weights(local_runs["graddiff"] / "model"),
        load_weights(zero_runs["zero2-graddiff"] / "model"),
    )
    d_kl = max_abs_diff(
        load_weights(local_runs["kl-2steps"] / "model"),
        load_weights(zero_runs["zero3-kl-2steps"] / "model"),
    )
    kl_log = read_log(zero_runs["zero3-kl-2steps"])
    print(f"graddiff zero2: max|dW|={d_gd:.3g}; kl zero3 2 steps: max|dW|={d_kl:.3g}")
    assert d_gd <= TOL
    assert d_kl <= ADAM_TOL
    # the KL gradient is 0 at step 1 (policy == reference) and must not be 0 at step 2
    assert kl_log[1]["norm_r"] > 0


@pytest.mark.parametrize("name", ["dpo", "undial"])
def test_zero3_dpo_and_undial_equal_single_process(name, zero_runs, local_runs, target_model):
    """Two SGD steps of BLUR-DPO (preferred answers, [n, 2] reference log-probs) and UNDIAL
    (reference engine's logits) under ZeRO-3, 2 ranks x 2 x 2 == one process 8 x 1."""
    local, zero = local_runs[f"{name}-2steps"], zero_runs[f"zero3-{name}-2steps"]
    diff = max_abs_diff(load_weights(local / "model"), load_weights(zero / "model"))
    moved = max_abs_diff(load_weights(local / "model"), load_weights(target_model))
    l_log, z_log = read_log(local), read_log(zero)
    print(f"{name} zero3 2 steps: max|dW|={diff:.3g} (update {moved:.3g})")
    assert moved > 1e-3 and diff <= TOL
    for a, b in zip(l_log, z_log):
        assert b["loss_forget"] == pytest.approx(a["loss_forget"], rel=1e-5)


def test_zero3_fine_tuning_equals_single_process(zero_runs, local_runs, target_model):
    """sft (how the pipeline fine-tunes target / retain models and relearns) under ZeRO-3 on
    2 ranks x 2 x 2 equals the single process at 8 x 1, two SGD steps."""
    ref = load_weights(local_runs["sft-2steps"] / "model")
    moved = max_abs_diff(load_weights(target_model), ref)
    diff = max_abs_diff(ref, load_weights(zero_runs["zero3-sft"] / "model"))
    zlog, llog = read_log(zero_runs["zero3-sft"]), read_log(local_runs["sft-2steps"])
    print(f"sft zero3 2 steps: max|dW|={diff:.3g} (moved {moved:.3g})")
    assert moved > 1e-3, "fine-tuning barely moved the weights: no signal"
    assert diff <= TOL, f"ZeRO-3 fine-tuning differs from the single process by {diff:.3g}"
    assert [r["loss_retain"] for r in zlog] == pytest.approx(
        [r["loss_retain"] for r in llog], rel=1e-6
    )
    summary = json.loads((zero_runs["zero3-sft"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["zero_stage"] == 3


def test_zero_resume_reproduces_uninterrupted_run(zero_runs):
    full, part = zero_runs["resume-full"], zero_runs["resume-part"]
    assert json.loads((part / "summary.json").read_text())["resumed_from"] == 2
    diff = max_abs_diff(load_weights(full / "model"), load_weights(part / "model"))
    print(f"resume: max|dW|={diff:.3g}")
    assert diff == 0.0, f"resumed run differs from the uninterrupted one by {diff:.3g}"
    assert [r["step"] for r in read_log(part)] == [3, 4]
    assert read_log(part)[0]["loss_forget"] == read_log(full)[2]["loss_forget"]


def _final_dual(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["dual"]


@pytest.mark.parametrize("name", sorted(PDU_RUNS))
def test_zero_pdu_equals_single_process(name, zero_runs, local_runs, target_model):
    """PDU's dual comes from the all-reduced retain loss: the same on both ranks and equal
    to the single process's, so the second step's direction is too."""
    ref = local_runs["pdu-2steps"]
    ref_w, ref_log = load_weights(ref / "model"), read_log(ref)
    assert ref_log[1]["dual"] > PDU["dual_init"] + 0.1, "the dual barely moved: no signal"
    assert max_abs_diff(load_weights(target_model), ref_w) > 1e-3
    diff = max_abs_diff(ref_w, load_weights(zero_runs[name] / "model"))
    # the dual of each step and the final one (after step 2's ascent)
    duals = [*(r["dual"] for r in read_log(zero_runs[name])), _final_dual(zero_runs[name])]
    ref_duals = [*(r["dual"] for r in ref_log), _final_dual(ref)]
    d_dual = max(abs(a - b) for a, b in zip(duals, ref_duals))
    print(f"{name}: max|dW|={diff:.3g} max|d dual|={d_dual:.3g} (duals {duals})")
    assert diff <= TOL, f"{name}: max abs weight diff {diff:.3g} > {TOL}"
    assert d_dual <= TOL, f"{name}: duals {duals} vs single process {ref_duals}"


def test_zero_pdu_resume_restores_the_dual(zero_runs):
    full, part = zero_runs["pdu-resume-full"], zero_runs["pdu-resume-part"]
    assert json.loads((part / "summary.json").read_text())["resumed_from"] == 2
    diff = max_abs_diff(load_weights(full / "model"), load_weights(part / "model"))
    full_duals = [r["dual"] for r in read_log(full)]
    print(f"pdu zero2 resume: max|dW|={diff:.3g}; duals {full_duals}")
    assert full_duals[2] > 2 * PDU["dual_init"], "the dual barely moved: a lost dual would not show"
    assert diff == 0.0, f"resumed PDU run differs from the uninterrupted one by {diff:.3g}"
    assert [r["dual"] for r in read_log(part)] == full_duals[2:]
    assert _final_dual(full) == _final_dual(part)


def test_zero_exported_step_equals_its_checkpoint(zero_runs, tmp_path):
    """train.export_steps under ZeRO-3: the weights written after step 2 are the step-2
    checkpoint's consolidated fp32 weights, bit for bit (and, by the resume test above, the
    export left the rest of the run unchanged)."""
    from blur_core.convert import convert_checkpoint, is_hf_model_dir

    exported = zero_runs["resume-full"] / "steps_weights" / "2"
    assert is_hf_model_dir(exported) and (exported / "run_config.yaml").is_file()
    converted = convert_checkpoint(zero_runs["ckpt"], tmp_path / "ckpt2")
    diff = max_abs_diff(load_weights(exported), load_weights(converted))
    assert diff == 0.0, f"exported step 2 differs from its checkpoint by {diff:.3g}"
    assert not list((zero_runs["resume-full"] / "steps_weights").glob("*.zero"))


def test_zero_checkpoint_converts_to_hf_model(zero_runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "converted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "blur_core", "convert", str(zero_runs["ckpt"]), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "run_config.yaml"):
        assert (out / name).is_file(), f"{name} missing from the converted dir"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    AutoTokenizer.from_pretrained(out)
    ref = torch.load(zero_runs["logits"])
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    diff = float((logits.float() - ref["logits"]).abs().max())
    print(f"convert: max|dlogits|={diff:.3g}")
    assert diff <= LOGIT_TOL


def test_convert_copies_an_hf_model_dir(target_model, tmp_path):
    """The pipeline's convert step also receives local-backend outputs (already HF dirs)."""
    from blur_core.cli import main

    out = tmp_path / "copied"
    assert main(["convert", str(target_model), str(out)]) == 0
    assert max_abs_diff(load_weights(target_model), load_weights(out)) == 0.0
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2


def test_ds_config_follows_train_config(tmp_path):
    from blur_core.config import ConfigError
    from blur_core.train.config import parse_run_config
    from blur_core.train.zero import build_ds_config

    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    base = {
        "model": "m",
        "output_dir": str(tmp_path / "o"),
        "data": {"forget": str(data), "retain": str(data)},
    }
    cfg = parse_run_config(
        {
            **base,
            "train": {
                "max_steps": 1,
                "backend": "deepspeed",
                "micro_batch_size": 3,
                "grad_accum": 4,
                "dtype": "bfloat16",
            },
        }
    )
    assert cfg.train.deepspeed_config == "zero2"
    ds = build_ds_config(cfg.train)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.0 and ds["bf16"]["enabled"] is True
    assert ds["zero_optimization"]["stage"] == 2
    assert build_ds_config(cfg.train, "zero3_offload")["zero_optimization"]["stage"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"zero_optimization": {"stage": 3}, "gradient_accumulation_steps": 2})
    )
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        build_ds_config(cfg.train, str(bad))
    with pytest.raises(ConfigError, match="deepspeed_config"):
        parse_run_config(
            {**base, "train": {"max_steps": 1, "backend": "deepspeed", "deepspeed_config": "zero9"}}
        )
    with pytest.raises(ConfigError, match="backend"):
        parse_run_config({**base, "train": {"max_steps": 1, "deepspeed_config": "zero3"}})
    with pytest.raises(ConfigError, match="backend"):
        parse_run_config({**base, "train": {"max_steps": 1, "backend": "megatron"}})


if __name__ == "__main__":
    _worker(sys.argv[1])
