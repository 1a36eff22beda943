"""LoRA (train.peft): BLUR over adapter parameters, on every backend, with exact checks.

One torchrun launch (this file run as a script, ``_worker``) runs a plan of 2-rank runs
sequentially in one process group (local data parallel, ZeRO-2, ZeRO-3); the tests compare
them with single-process LocalBackend runs made in the pytest process:

* one SGD step (lr=1, no clipping) of BLUR-NPO over the adapters is the same whatever the
  split: batch 8 x accum 1 == batch 1 x accum 8 == 2 ranks x 2 x 2 (local DDP, ZeRO-2,
  ZeRO-3), max abs diff of the adapter weights and of xi <= 1e-6; injected bugs (partial
  sums not all-reduced; captures accumulated) and another batch (seed) miss by far more;
* modules_to_save (a fully trained copy beside the adapters) under ZeRO-2, the KL
  reference (adapters disabled, no second copy) under ZeRO-3 over 2 steps;
* the frozen base weights are bit-identical after training (local and ZeRO-3 partitions);
* resume from adapter-only checkpoints is bit-exact (local preemption; ZeRO-3);
* convert merges the adapter: merged logits == adapter-model logits (1e-5), from the
  final adapter dir and from a ZeRO-3 checkpoint; --adapter-only keeps just the adapter;
* BLUR-NPO with LoRA forgets the memorised tiny model's forget set.
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

from tests.integration.helpers import read_log, run_config  # noqa: E402

pytest.importorskip("peft")
pytest.importorskip("deepspeed")

LORA = {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "mlp.down_proj"]}
LORA_MTS = {**LORA, "modules_to_save": ["lm_head"]}
BLUR_NPO = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.3}
BLUR_KL = {"name": "blur", "forget_loss": "npo", "retain_loss": "kl", "gamma": 0.3}
TOL = 1e-6
KL_TOL = 1e-5
LOGIT_TOL = 1e-5
SGD = dict(optimizer="sgd", lr=1.0, max_grad_norm=None)
SPLIT_2x2 = dict(micro_batch_size=2, grad_accum=2)
KL_TRAIN = dict(SGD, lr=0.3, max_steps=2)
RESUME_TRAIN = dict(
    optimizer="adamw", lr=1e-2, max_steps=4, save_every=2, keep_checkpoints=5, **SPLIT_2x2
)

# name -> (method, backend/ds config, train overrides, peft, injected bug)
PLAN = {
    "ddp-2x2": (BLUR_NPO, "local", dict(SGD, **SPLIT_2x2), LORA, None),
    "zero2-2x2": (BLUR_NPO, "zero2", dict(SGD, **SPLIT_2x2), LORA, None),
    "zero3-2x2": (BLUR_NPO, "zero3", dict(SGD, **SPLIT_2x2), LORA, None),
    "zero3-bug-no-all-reduce": (BLUR_NPO, "zero3", dict(SGD, **SPLIT_2x2), LORA, "no_all_reduce"),
    "zero3-bug-accumulate": (BLUR_NPO, "zero3", dict(SGD, **SPLIT_2x2), LORA, "accumulate"),
    "zero2-modules-to-save": (BLUR_NPO, "zero2", dict(SGD, **SPLIT_2x2), LORA_MTS, None),
    "zero3-kl-2steps": (BLUR_KL, "zero3", dict(KL_TRAIN, **SPLIT_2x2), LORA, None),
}
FROZEN_CHECKED = "zero3-2x2"  # the run whose partitioned base weights the worker compares


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "adapter_model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise AssertionError(f"different adapter tensors: {sorted(a.keys() ^ b.keys())[:4]}")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def lora_cfg(model, out, method, embedded, backend, peft, **train) -> dict:
    cfg = run_config(model, out, method, embedded, **train)
    cfg["train"]["peft"] = peft
    if backend != "local":
        cfg["train"].update(backend="deepspeed", deepspeed_config=backend)
    return cfg


def base_name(peft_name: str) -> str:
    """The starting model's name of a frozen PeftModel parameter."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


def frozen_base_report(model: torch.nn.Module, start: dict[str, torch.Tensor]) -> dict:
    """Compare every frozen parameter of a PeftModel with the starting model's tensor."""
    frozen = {base_name(n): p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    unequal = [k for k in frozen if k in start and not torch.equal(frozen[k].cpu(), start[k])]
    return {
        "missing": sorted(start.keys() - frozen.keys()),
        "extra": sorted(frozen.keys() - start.keys()),
        "unequal": unequal,
        "n": len(frozen),
    }


# ---------------------------------------------------------------------------------------
# the torchrun worker (this file as a script)
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _patched(bug: str | None, capture: dict | None):
    """Inject a known ZeroBackend bug and/or capture the backend the loop builds."""
    from blur_core.train import loop
    from blur_core.train.zero import ZeroBackend

    originals = {
        "gradients": ZeroBackend.gradients,
        "end": ZeroBackend.end,
        "build": loop.build_backend,
    }

    def gradients_without_all_reduce(self):
        forget, retain, _ = originals["gradients"](self)
        return forget, retain, None

    def end_without_clearing(self, which):
        self._clear_deepspeed_grads = lambda: None
        try:
            originals["end"](self, which)
        finally:
            del self._clear_deepspeed_grads

    def build_and_capture(*args, **kwargs):
        backend = originals["build"](*args, **kwargs)
        capture["backend"] = backend
        return backend

    if bug == "no_all_reduce":
        ZeroBackend.gradients = gradients_without_all_reduce
    elif bug == "accumulate":
        ZeroBackend.end = end_without_clearing
    elif bug is not None:
        raise ValueError(f"unknown bug {bug!r}")
    if capture is not None:
        loop.build_backend = build_and_capture
    try:
        yield
    finally:
        ZeroBackend.gradients, ZeroBackend.end = originals["gradients"], originals["end"]
        loop.build_backend = originals["build"]


def _frozen_check_zero(backend, start_model: str, out: str, ctx) -> None:
    """Gather the (ZeRO-3 partitioned) frozen base weights and compare them on rank 0."""
    import deepspeed
    from safetensors.torch import load_file

    module = backend.engine.module
    frozen = [p for p in module.parameters() if not p.requires_grad]
    with deepspeed.zero.GatheredParameters(frozen):
        if ctx.is_main:
            start = load_file(str(Path(start_model) / "model.safetensors"))
            report = frozen_base_report(module, start)
            report["partitioned"] = sum(hasattr(p, "ds_id") for p in frozen)
            Path(out).write_text(json.dumps(report))
    ctx.barrier()


def _engine_logits(item: dict, ctx) -> None:
    """Load a LoRA ZeRO checkpoint into a fresh engine; write its logits on a fixed batch."""
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
        torch.save({"logits": logits.float(), **batch}, item["out"])


def _worker(plan_path: str) -> None:
    import torch.distributed as dist

    from blur_core.train.config import parse_run_config
    from blur_core.train.dist import init_distributed
    from blur_core.train.loop import run

    ctx = init_distributed()
    for item in json.loads(Path(plan_path).read_text()):
        if item["kind"] == "run":
            capture = {} if item.get("frozen_out") else None
            with _patched(item.get("bug"), capture):
                run(parse_run_config(item["config"]), ctx)
            if capture is not None:
                _frozen_check_zero(
                    capture["backend"], item["config"]["model"], item["frozen_out"], ctx
                )
        elif item["kind"] == "copy":
            if ctx.is_main:
                shutil.copytree(item["src"], item["dst"])
            ctx.barrier()
        elif item["kind"] == "logits":
            _engine_logits(item, ctx)
        dist.barrier()


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dist_runs(target_model, embedded, tmp_path_factory):
    """Every 2-rank run of this module, in one torchrun launch."""
    root = tmp_path_factory.mktemp("lora-dist")
    plan, outs = [], {}
    for name, (method, backend, train, peft, bug) in PLAN.items():
        outs[name] = root / name
        item = {
            "kind": "run",
            "bug": bug,
            "config": lora_cfg(target_model, outs[name], method, embedded, backend, peft, **train),
        }
        if name == FROZEN_CHECKED:
            outs["frozen"] = root / "frozen.json"
            item["frozen_out"] = str(outs["frozen"])
        plan.append(item)
    full, part = root / "resume-full", root / "resume-part"
    outs["resume-full"], outs["resume-part"] = full, part
    ckpt = full / "checkpoints" / "step-000002"
    full_cfg = lora_cfg(target_model, full, BLUR_NPO, embedded, "zero3", LORA, **RESUME_TRAIN)
    part_cfg = lora_cfg(target_model, part, BLUR_NPO, embedded, "zero3", LORA, **RESUME_TRAIN)
    plan += [
        {"kind": "run", "config": full_cfg},
        {"kind": "copy", "src": str(ckpt), "dst": str(part / "checkpoints" / "step-000002")},
        {"kind": "run", "config": part_cfg},
        {
            "kind": "logits",
            "ckpt": str(ckpt),
            "config": full_cfg,
            "out": str(root / "engine_logits.pt"),
        },
    ]
    outs["ckpt"], outs["logits"] = ckpt, root / "engine_logits.pt"
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
    """Single-process references: one SGD step (8 x 1, 1 x 8, another seed), modules_to_save,
    2 KL steps."""
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    root = tmp_path_factory.mktemp("lora-local")
    refs = {
        "8x1": (BLUR_NPO, dict(SGD), LORA),
        "1x8": (BLUR_NPO, dict(SGD, micro_batch_size=1, grad_accum=8), LORA),
        "8x1-seed1": (BLUR_NPO, dict(SGD, seed=1), LORA),
        "8x1-modules-to-save": (BLUR_NPO, dict(SGD), LORA_MTS),
        "kl-2steps": (BLUR_KL, dict(KL_TRAIN), LORA),
    }
    outs = {}
    for name, (method, train, peft) in refs.items():
        outs[name] = root / name
        cfg = lora_cfg(target_model, outs[name], method, embedded, "local", peft, **train)
        run(parse_run_config(cfg))
    return outs


def _initial_adapter(target_model, embedded, tmp_path, peft=LORA) -> dict[str, torch.Tensor]:
    """The adapter as initialised (0 steps is not a run: build it the way the backend does)."""
    from peft import get_peft_model_state_dict

    from blur_core.models import load_model
    from blur_core.train.adapters import add_adapters
    from blur_core.train.config import parse_run_config

    cfg = parse_run_config(lora_cfg(target_model, tmp_path, BLUR_NPO, embedded, "local", peft))
    model = add_adapters(load_model(str(target_model)), cfg.train.peft, cfg.train.seed)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


# ---------------------------------------------------------------------------------------
# tests: exactness
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["1x8", "ddp-2x2", "zero2-2x2", "zero3-2x2"])
def test_lora_step_invariant_to_split_ranks_and_zero(
    name, local_runs, dist_runs, target_model, embedded, tmp_path
):
    ref = adapter_weights(local_runs["8x1"])
    ref_xi = read_log(local_runs["8x1"])[0]["xi"]
    update = max_diff(_initial_adapter(target_model, embedded, tmp_path), ref)
    assert update > 100 * TOL, f"the step barely moved the adapter ({update}): no signal"
    run_dir = local_runs.get(name) or dist_runs[name]
    log = read_log(run_dir)
    assert len(log) == 1 and not log[0]["fallback"]
    diff, dxi = max_diff(ref, adapter_weights(run_dir)), abs(log[0]["xi"] - ref_xi)
    print(f"lora {name}: max|dA|={diff:.3g} |dxi|={dxi:.3g} (update {update:.3g}, xi {ref_xi:.6g})")
    assert diff <= TOL, f"{name}: max abs adapter diff {diff:.3g} > {TOL}"
    assert dxi <= TOL, f"{name}: xi {log[0]['xi']} vs single process {ref_xi}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["adapter"]["rank"] == LORA["rank"]
    assert 0 < summary["trainable_parameters"] < summary["parameters"] / 10


@pytest.mark.parametrize("name", ["8x1-seed1", "zero3-bug-no-all-reduce", "zero3-bug-accumulate"])
def test_lora_comparison_has_signal(name, local_runs, dist_runs):
    """Another global batch, or a ZeRO backend with a known bug, misses xi (and, for the
    batch, the weights) by far more than the tolerance of the exactness test."""
    ref_w, ref_xi = adapter_weights(local_runs["8x1"]), read_log(local_runs["8x1"])[0]["xi"]
    run_dir = local_runs.get(name) or dist_runs[name]
    dxi = abs(read_log(run_dir)[0]["xi"] - ref_xi)
    diff = max_diff(ref_w, adapter_weights(run_dir))
    print(f"lora {name}: |dxi|={dxi:.3g} max|dA|={diff:.3g}")
    assert dxi > 100 * TOL, f"{name}: xi moved by only {dxi:.3g}"
    if name == "8x1-seed1":
        assert diff > 100 * TOL


def test_lora_modules_to_save_and_kl_reference_match_single_process(local_runs, dist_runs):
    d_mts = max_diff(
        adapter_weights(local_runs["8x1-modules-to-save"]),
        adapter_weights(dist_runs["zero2-modules-to-save"]),
    )
    saved = adapter_weights(local_runs["8x1-modules-to-save"])
    assert any("lm_head" in k for k in saved), sorted(saved)[:5]
    d_kl = max_diff(
        adapter_weights(local_runs["kl-2steps"]), adapter_weights(dist_runs["zero3-kl-2steps"])
    )
    kl_log = read_log(dist_runs["zero3-kl-2steps"])
    print(f"modules_to_save zero2: max|dA|={d_mts:.3g}; kl zero3 2 steps: max|dA|={d_kl:.3g}")
    assert d_mts <= TOL
    assert d_kl <= KL_TOL
    # step 1: policy == reference (B = 0), so the KL gradient vanishes; step 2 it must not
    assert kl_log[0]["norm_r"] < 1e-6 < kl_log[1]["norm_r"]


# ---------------------------------------------------------------------------------------
# tests: frozen base, resume, conversion
# ---------------------------------------------------------------------------------------
def test_frozen_base_weights_bit_identical_zero3(dist_runs):
    report = json.loads(Path(dist_runs["frozen"]).read_text())
    assert report["n"] > 0 and report["partitioned"] == report["n"], report
    assert not report["missing"] and not report["extra"], report
    assert not report["unequal"], f"base weights changed under ZeRO-3: {report['unequal'][:5]}"


def test_lora_local_trains_only_adapters_and_resumes_exactly(
    target_model, embedded, tmp_path, monkeypatch
):
    """Frozen base bit-identical, every adapter tensor moved; a preempted run resumes
    from an adapter-only checkpoint to the same adapter, bit for bit."""
    from safetensors.torch import load_file

    from blur_core.train import backend as backend_mod
    from blur_core.train import loop
    from blur_core.train.config import parse_run_config

    train = dict(
        max_steps=4, optimizer="adamw", lr=1e-2, save_every=2, micro_batch_size=4, grad_accum=2
    )
    captured = {}
    real_build = loop.build_backend

    def build_and_capture(*args, **kwargs):
        captured["backend"] = real_build(*args, **kwargs)
        return captured["backend"]

    monkeypatch.setattr(loop, "build_backend", build_and_capture)
    full = loop.run(
        parse_run_config(
            lora_cfg(target_model, tmp_path / "full", BLUR_NPO, embedded, "local", LORA, **train)
        )
    )
    start = load_file(str(target_model / "model.safetensors"))
    report = frozen_base_report(captured["backend"].model, start)
    assert report["n"] == len(start) and not report["missing"] and not report["extra"], report
    assert not report["unequal"], f"base weights changed: {report['unequal'][:5]}"
    init, final = (
        _initial_adapter(target_model, embedded, tmp_path),
        adapter_weights(full.output_dir),
    )
    assert init.keys() == final.keys()
    unmoved = [k for k in init if torch.equal(init[k], final[k])]
    assert not unmoved, f"adapter tensors that never changed: {unmoved[:4]}"

    ckpt = full.output_dir / "checkpoints" / "step-000002" / "local_state.pt"
    state = torch.load(ckpt, weights_only=False)
    assert state["adapter_only"] and all("lora_" in k for k in state["model"]), list(state["model"])

    cut_cfg = parse_run_config(
        lora_cfg(target_model, tmp_path / "cut", BLUR_NPO, embedded, "local", LORA, **train)
    )
    real_step, calls = backend_mod.LocalBackend.step, {"n": 0}

    def preempted(self, lr):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated preemption")
        real_step(self, lr)

    monkeypatch.setattr(backend_mod.LocalBackend, "step", preempted)
    with pytest.raises(KeyboardInterrupt):
        loop.run(cut_cfg)
    monkeypatch.setattr(backend_mod.LocalBackend, "step", real_step)
    resumed = loop.run(cut_cfg)
    a, b = adapter_weights(full.output_dir), adapter_weights(resumed.output_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), f"max abs diff {max_diff(a, b)}"
    assert json.loads((resumed.output_dir / "summary.json").read_text())["resumed_from"] == 2
    assert [r["xi"] for r in read_log(resumed.output_dir)] == [
        r["xi"] for r in read_log(full.output_dir)
    ]


def test_lora_zero3_resume_reproduces_uninterrupted_run(dist_runs):
    full, part = dist_runs["resume-full"], dist_runs["resume-part"]
    assert json.loads((part / "summary.json").read_text())["resumed_from"] == 2
    diff = max_diff(adapter_weights(full), adapter_weights(part))
    assert diff == 0.0, f"resumed run differs from the uninterrupted one by {diff:.3g}"
    assert [r["step"] for r in read_log(part)] == [3, 4]
    assert read_log(part)[0]["loss_forget"] == read_log(full)[2]["loss_forget"]
    # the checkpoint holds the adapter only: no frozen base weights in DeepSpeed's files
    module_states = torch.load(
        dist_runs["ckpt"] / "ds" / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=False
    )["module"]
    assert module_states and all("lora_" in k for k in module_states), list(module_states)[:4]


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _convert(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "blur_core", "convert", *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_convert_merges_adapter_and_keeps_it(local_runs, target_model, tmp_path):
    """Merged logits == adapter-model logits (1e-5); the adapter dir loads with
    PeftModel.from_pretrained; adapters disabled give the base model exactly."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    src = local_runs["kl-2steps"] / "model"
    out = tmp_path / "merged"
    _convert(str(src), str(out))
    for name in ("model.safetensors", "config.json", "tokenizer.json", "run_config.yaml"):
        assert (out / name).is_file(), f"{name} missing from the merged dir"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "adapter_config.json").exists()  # the merged dir is a plain HF dir
    batch = {
        "input_ids": torch.randint(4, 60, (4, 16), generator=torch.Generator().manual_seed(0)),
        "attention_mask": torch.ones(4, 16, dtype=torch.long),
    }
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(target_model).eval()
    base_logits = _logits(base, batch)
    adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    adapter_logits = _logits(adapted, batch)
    diff = float((_logits(merged, batch) - adapter_logits).abs().max())
    moved = float((adapter_logits - base_logits).abs().max())
    print(f"merge: max|dlogits|={diff:.3g} (adapter moved logits by {moved:.3g})")
    assert moved > 1e-3, "the adapter does not change the logits: no signal"
    assert diff <= LOGIT_TOL
    with adapted.disable_adapter():
        assert torch.equal(_logits(adapted, batch), base_logits)

    only = tmp_path / "adapter-only"
    _convert(str(src), str(only), "--adapter-only")
    assert (only / "adapter_config.json").is_file() and not (only / "model.safetensors").exists()
    # transformers loads an adapter dir as base + adapter (what evaluation does with it)
    via_hf = AutoModelForCausalLM.from_pretrained(only).eval()
    assert float((_logits(via_hf, batch) - adapter_logits).abs().max()) <= LOGIT_TOL


def test_convert_merges_a_lora_zero3_checkpoint(dist_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "from-ckpt"
    _convert(str(dist_runs["ckpt"]), str(out))
    ref = torch.load(dist_runs["logits"])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    diff = float((_logits(merged, ref).float() - ref["logits"]).abs().max())
    print(f"convert zero3 lora checkpoint: max|dlogits|={diff:.3g}")
    assert diff <= LOGIT_TOL
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


# ---------------------------------------------------------------------------------------
# tests: it unlearns
# ---------------------------------------------------------------------------------------
def test_blur_npo_with_lora_forgets_the_memorised_set(target_model, embedded, tmp_path):
    from blur_core.convert import convert_checkpoint
    from blur_core.data import load_records
    from blur_core.models import load_model, load_tokenizer
    from blur_core.scoring import score_qa
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    method = {"name": "blur", "forget_loss": "npo", "retain_loss": "nll", "gamma": 0.1}
    cfg = lora_cfg(
        target_model,
        tmp_path / "run",
        method,
        embedded,
        "local",
        {"rank": 8, "alpha": 16.0},
        max_steps=20,
        optimizer="adamw",
        lr=1e-2,
        max_grad_norm=1.0,
    )
    result = run(parse_run_config(cfg))
    log = read_log(result.output_dir)
    assert log[-1]["loss_forget"] < 0.5 * log[0]["loss_forget"], (
        log[0]["loss_forget"],
        log[-1]["loss_forget"],
    )
    merged = convert_checkpoint(result.model_dir, tmp_path / "merged")

    def nll(model_dir, which):
        model, tok = load_model(str(model_dir)), load_tokenizer(str(model_dir))
        return score_qa(model, tok, load_records(embedded[which]), max_length=64)["nll"]

    before, after = nll(target_model, "forget"), nll(merged, "forget")
    print(f"lora blur-npo: forget NLL {before:.3f} -> {after:.3f}")
    assert before < 0.5, f"target model did not memorise the forget set (NLL {before})"
    assert after > before + 2.0, f"forget NLL {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize(
    "method",
    [
        {"name": "dpo", "beta": 0.5},
        {"name": "undial", "beta": 3.0, "retain_weight": 1.0},
    ],
    ids=["dpo", "undial"],
)
def test_lora_reference_of_dpo_and_undial_is_the_starting_model(
    method, target_model, embedded, tmp_path
):
    """With adapters the reference (DPO's log-probs, UNDIAL's teacher) is the policy with its
    adapters disabled: at step 1 (B = 0) it is the starting model, so the first forget loss
    equals a full-parameter run's, where the reference is loaded from the model's path."""
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    train = dict(max_steps=3, optimizer="adamw", lr=1e-2, max_grad_norm=1.0)
    peft = {"rank": 4, "alpha": 8.0}
    run(
        parse_run_config(
            lora_cfg(target_model, tmp_path / "lora", method, embedded, "local", peft, **train)
        )
    )
    run(
        parse_run_config(run_config(target_model, tmp_path / "full", method, embedded, max_steps=1))
    )
    lora, full = read_log(tmp_path / "lora"), read_log(tmp_path / "full")
    assert lora[0]["loss_forget"] == pytest.approx(full[0]["loss_forget"], rel=1e-5)
    if method["name"] == "dpo":  # policy == reference: (2 / beta) log 2
        assert lora[0]["loss_forget"] == pytest.approx(4 * 0.6931472, rel=1e-5)
    assert lora[-1]["loss_forget"] != lora[0]["loss_forget"]  # the adapters moved the policy


if __name__ == "__main__":
    _worker(sys.argv[1])
