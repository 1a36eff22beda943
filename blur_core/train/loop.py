"""The training loop shared by BLUR and every baseline.

One optimizer step (K = grad_accum micro-batches, docs/architecture.md section 4):
  1. for each micro-batch: forget forward, backward(L_f / K) into buffer F;
     retain forward, backward(L_r / K) into buffer R (separate forward passes);
  2. at the boundary: F, R averaged over data-parallel ranks (by the backend);
  3. d = combiner(F, R) (BLUR direction, weighted sum or PDU), computed in place;
  4. d scaled to max_grad_norm if its global norm exceeds it, then one optimizer step;
  5. one host synchronisation reads losses and statistics; a non-finite value stops
     the run before the step is applied, with an error naming the step;
  6. PDU only: the dual ascends on the step's global-batch retain loss (a float, no sync).

Outputs in ``output_dir``: ``train_log.jsonl`` (one JSON object per step),
``run_config.yaml`` (resolved), ``checkpoints/step-N`` (exact resume), with
``train.export_steps`` the weights after those steps in ``<export_dir>/<N>/`` (written
like the final model; per-checkpoint evaluation), ``model/`` (the
final HF model dir, only written when training finished cleanly; with ``train.peft`` a
PEFT adapter dir, which ``python -m blur_core convert`` merges) and ``summary.json``.

With ``train.peft`` (LoRA) the reference of KL / RMU and NPO's reference log-probs come
from the policy with its adapters disabled (``backend.base_view()``), the starting model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from blur_core.bilevel import (
    DirectionStats,
    blur_direction,
    clip_coefficient,
    dual_update,
    pdu_direction,
    weighted_sum,
)
from blur_core.config import ConfigError, to_dict
from blur_core.data import (
    IDK_ANSWERS,
    QADataset,
    TextChunkDataset,
    alternate_answers,
    load_records,
    load_refusals,
    pad_collate,
    refusal_answer,
)
from blur_core.data.corpus import load_texts
from blur_core.methods import Objective
from blur_core.models import load_tokenizer
from blur_core.provenance import now, provenance
from blur_core.train import step as step_losses
from blur_core.train.backend import build_backend
from blur_core.train.checkpoint import (
    discard_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from blur_core.train.config import RunConfig
from blur_core.train.dist import DistContext, init_distributed
from blur_core.train.sampler import rank_micro_batches, step_indices
from blur_core.train.schedule import lr_factor

__all__ = ["NonFiniteError", "RunResult", "build_dataset", "run", "seed_everything"]

LOG_NAME = "train_log.jsonl"
MODEL_DIR = "model"


class NonFiniteError(RuntimeError):
    """A loss or the update became NaN/inf; the run stops without writing a final model."""


@dataclass
class RunResult:
    output_dir: Path
    model_dir: Path | None
    steps: int
    last_log: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_dataset(cfg: RunConfig, which: str, tokenizer, objective: Objective):
    """The forget or retain dataset of a run, tokenised (IdK answers substituted, or DPO's
    preferred answers added, if the objective needs them)."""
    paths = cfg.data.files(which)
    path = ", ".join(paths)
    max_length = cfg.data.max_length_of(which)
    if cfg.data.format_of(which) == "text":
        # schema errors name the file and line (missing field, empty file, not JSON lines)
        texts = [t for p in paths for t in load_texts(p, cfg.data.text_key)]
        try:
            return TextChunkDataset(texts, tokenizer, max_length, cfg.data.text_chunking)
        except ValueError as err:
            raise ValueError(f"data.{which}: {path}: {err}") from None
    records = [rec for p in paths for rec in load_records(p)]
    if not records:
        raise ValueError(f"data.{which}: {path} holds no examples")
    fmt = cfg.data.qa_format()
    override = preferred = None
    if which == "forget":
        override, preferred = _forget_answers(cfg, objective, records, path)
    return QADataset(
        records,
        tokenizer,
        max_length=max_length,
        fmt=fmt,
        answer_override=override,
        source=str(path),
        preferred_answer=preferred,
    )


def _forget_answers(cfg: RunConfig, objective: Objective, records: list[dict], path: str):
    """(answer_override, preferred_answer) of the forget set: IdK's refusals replace the
    answers; DPO's refusals or alternate answers are added as the preferred answers."""
    data = cfg.data
    idk = None
    if "idk" in (objective.forget_answers, objective.preferred_answers):
        try:
            refusals = load_refusals(data.idk_file) if data.idk_file else IDK_ANSWERS
        except ValueError as err:
            raise ValueError(f"data.idk_file: {err}") from None
        idk = refusal_answer(refusals)
    if objective.preferred_answers == "alternate":
        alt_files = data.files("alternate_file")
        alts = alternate_answers(
            records,
            data.alternate_key,
            [rec for f in alt_files for rec in load_records(f)] if alt_files else None,
            source=f"data.forget: {path}",
            alt_source=f"data.alternate_file: {', '.join(alt_files)}",
        )
        return None, lambda index, record=None: alts[index]
    if objective.preferred_answers == "idk":
        return None, idk
    return (idk if objective.forget_answers == "idk" else None), None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _total_steps(
    cfg: RunConfig, objective: Objective, n_forget: int, n_retain: int, global_batch: int
) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    n = n_forget if objective.uses_forget else n_retain
    return max(1, math.ceil(cfg.train.epochs * n / global_batch))


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc="unlearn", unit="step", dynamic_ncols=True
            )

    def update(self, rec: dict) -> None:
        if self.bar is None:
            return
        post = {}
        for key, label in (
            ("loss_forget", "L_f"),
            ("loss_retain", "L_r"),
            ("xi", "xi"),
            ("dual", "dual"),
        ):
            if rec.get(key) is not None:
                post[label] = f"{rec[key]:.4g}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(cfg: RunConfig, ctx: DistContext | None = None) -> RunResult:
    """Train ``cfg`` to completion (resuming if a checkpoint exists); return where things are."""
    ctx = ctx or init_distributed()
    started = now()
    tcfg = cfg.train
    objective = cfg.objective()
    out = Path(cfg.output_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        # a stale final model from an earlier run must not survive a failed rerun
        if cfg.final_model_path.exists():
            shutil.rmtree(cfg.final_model_path)
        (out / "run_config.yaml").write_text(yaml.safe_dump(cfg.resolved(), sort_keys=False))
    ctx.barrier()

    seed_everything(tcfg.seed)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    # the data first: a bad file fails before any model is loaded (the error names it)
    forget_ds = (
        build_dataset(cfg, "forget", tokenizer, objective) if objective.uses_forget else None
    )
    retain_ds = (
        build_dataset(cfg, "retain", tokenizer, objective) if objective.uses_retain else None
    )
    backend = build_backend(
        cfg.model,
        tcfg,
        ctx,
        tokenizer,
        {"run_config.yaml": yaml.safe_dump(cfg.resolved(), sort_keys=False)},
    )
    model = backend.model  # the module itself, or the DeepSpeed engine wrapping it

    base_view = backend.base_view()  # LoRA: the starting model, adapters disabled
    ref_model = backend.load_reference(cfg.model) if objective.needs_reference_model else None
    control = None
    if objective.rmu_layers_used:
        hidden_size = getattr(
            model, "module", model
        ).config.hidden_size  # (a DeepSpeed engine wraps it)
        control = step_losses.losses.rmu_control_vector(
            hidden_size, objective.steering_coeff, objective.rmu_seed
        ).to(ctx.device)

    mb, K, W = tcfg.micro_batch_size, tcfg.grad_accum, ctx.world_size
    global_batch = mb * K * W
    total = _total_steps(cfg, objective, len(forget_ds or []), len(retain_ds or []), global_batch)
    pad_id = tokenizer.pad_token_id

    def micro_batches(ds, step: int) -> list[dict]:
        idx = step_indices(len(ds), step, global_batch, tcfg.seed)
        return [
            _to_device(pad_collate([ds[i] for i in chunk], pad_id), ctx.device)
            for chunk in rank_micro_batches(idx, ctx.rank, W, K)
        ]

    exports, export_root = tcfg.export_steps, cfg.export_path
    if exports and exports[-1] > total:
        raise ConfigError(
            f"train.export_steps = {exports}: step {exports[-1]} is beyond the run's {total} steps"
        )
    start_step, ref_logprobs = 0, None
    dual = objective.dual_init if objective.combiner == "pdu" else None  # PDU's multiplier
    fingerprint = run_fingerprint(cfg)
    # never resume past an export step whose weights are missing (Snakemake removes a job's
    # outputs before it restarts it): resume from a checkpoint at or before the first of them
    missing = [s for s in exports if not (export_root / str(s)).is_dir()]
    ckpt = (
        latest_checkpoint(out, fingerprint, at_most=missing[0] if missing else None)
        if tcfg.resume == "auto"
        else None
    )
    ctx.barrier()  # every rank has chosen before rank 0 removes anything
    if ckpt is None and ctx.is_main:
        # checkpoints of other settings, data or starting model must never be resumed from
        stale = discard_checkpoints(out)
        if stale:
            print(
                f"discarded {len(stale)} checkpoint(s) in {out / 'checkpoints'} written for other "
                f"settings, data or starting model",
                file=sys.stderr,
            )
    ctx.barrier()
    if ckpt is not None:
        state = load_checkpoint(ckpt, backend, ctx)
        start_step, ref_logprobs = state["step"], state.get("ref_logprobs")
        if dual is not None:
            if state.get("dual") is None:
                raise RuntimeError(f"checkpoint {ckpt} holds no PDU dual variable")
            dual = state["dual"]
        if ref_logprobs is not None:
            ref_logprobs = ref_logprobs.to(ctx.device)
    if ctx.is_main:
        _truncate_log(out / LOG_NAME, start_step)
        _prune_exports(export_root, start_step)
    ctx.barrier()
    extra_files = {"run_config.yaml": yaml.safe_dump(cfg.resolved(), sort_keys=False)}

    def export(step: int) -> None:
        """The weights after ``step`` steps, as the final model is written (collective)."""
        backend.save_model(export_root / str(step), tokenizer, extra_files)

    if start_step in missing:  # resumed from exactly an export step's checkpoint
        export(start_step)
    if objective.needs_reference_logprobs and ref_logprobs is None:
        batches = (
            _to_device(
                pad_collate([forget_ds[i] for i in range(s, min(s + mb, len(forget_ds)))], pad_id),
                ctx.device,
            )
            for s in range(0, len(forget_ds), mb)
        )
        ref_logprobs = step_losses.reference_sequence_logprobs(
            base_view or model,
            batches,
            len(forget_ds),
            ctx.device,
            preferred=objective.preferred_answers is not None,
        )
    loss_ctx = step_losses.LossContext(objective, ref_model, ref_logprobs, control)

    # closed in the finally below (a with-block would indent the whole loop once more)
    log_file = open(out / LOG_NAME, "a") if ctx.is_main else None  # noqa: SIM115
    progress = _Progress(total, start_step, tcfg.progress and ctx.is_main)
    t_start, tokens, last = time.perf_counter(), 0, {}
    n_tok = torch.zeros(
        (), dtype=torch.float64, device=ctx.device
    )  # summed on device, read at the sync
    try:
        for step in range(start_step, total):
            t0 = time.perf_counter()
            backend.zero()
            loss_f = torch.zeros((), dtype=torch.float64, device=ctx.device)
            loss_r = torch.zeros((), dtype=torch.float64, device=ctx.device)
            f_batches = micro_batches(forget_ds, step) if objective.uses_forget else [None] * K
            r_batches = micro_batches(retain_ds, step) if objective.uses_retain else [None] * K
            for fb, rb in zip(f_batches, r_batches):
                if fb is not None:
                    loss_f += _micro_step(
                        backend, "forget", step_losses.forget_loss(model, fb, loss_ctx) / K
                    )
                    n_tok += fb["attention_mask"].sum()
                if rb is not None:
                    loss_r += _micro_step(
                        backend, "retain", step_losses.retain_loss(model, rb, loss_ctx) / K
                    )
                    n_tok += rb["attention_mask"].sum()
            # the logged losses are the global-batch means
            loss_f, loss_r = ctx.all_reduce_mean_(loss_f), ctx.all_reduce_mean_(loss_r)

            F, R, all_reduce = backend.gradients()
            if objective.combiner == "blur":
                direction, stats = blur_direction(
                    F,
                    R,
                    objective.gamma,
                    objective.variant,
                    objective.eps,
                    all_reduce=all_reduce,
                    inplace=True,
                )
            elif objective.combiner == "pdu":
                direction, stats = pdu_direction(
                    F, R, dual, objective.forget_weight, all_reduce=all_reduce, inplace=True
                )
            else:
                direction, stats = weighted_sum(
                    F,
                    R,
                    objective.forget_weight,
                    objective.retain_weight,
                    all_reduce=all_reduce,
                    inplace=True,
                )
            scale = clip_coefficient(stats.norm_d, tcfg.max_grad_norm)

            # the one host synchronisation of the step
            values = torch.cat(
                [torch.stack([loss_f, loss_r, scale.double(), n_tok]), stats.stacked()]
            ).tolist()
            tokens = int(values.pop(3))
            rec = _step_record(step, values, objective, stats, dual)
            lr = tcfg.lr * lr_factor(step, total, tcfg.warmup_steps, tcfg.schedule)
            bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise NonFiniteError(
                    f"non-finite {', '.join(bad)} at step {step + 1} of {total} "
                    f"({', '.join(f'{k}={rec[k]}' for k in bad)}); no final model written; "
                    f"lower train.lr (now {tcfg.lr}) or check the data"
                )
            backend.apply(direction, scale)
            backend.step(lr)
            dual = _next_dual(objective, dual, step, rec["loss_retain"])
            rec.update(lr=lr, step_time_s=time.perf_counter() - t0)
            last = rec
            if log_file is not None:
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
            progress.update(rec)
            done = step + 1
            if done in exports:
                export(done)
            if tcfg.save_every and done % tcfg.save_every == 0 and done < total:
                save_checkpoint(
                    out,
                    done,
                    {
                        "ref_logprobs": None if ref_logprobs is None else ref_logprobs.cpu(),
                        "dual": dual,
                    },
                    backend,
                    ctx,
                    tcfg.keep_checkpoints,
                    fingerprint,
                )
    finally:
        progress.close()
        if log_file is not None:
            log_file.close()

    wall = time.perf_counter() - t_start
    model_dir = backend.save_model(
        cfg.final_model_path,
        tokenizer,
        {"run_config.yaml": yaml.safe_dump(cfg.resolved(), sort_keys=False)},
    )
    trainable, n_params = backend.parameter_counts()
    if ctx.is_main:
        summary = {
            "steps": total,
            "adapter": None if tcfg.peft is None else to_dict(tcfg.peft),
            "trainable_parameters": trainable,
            "parameters": n_params,
            "resumed_from": start_step,
            "world_size": W,
            "backend": backend.name,
            "zero_stage": getattr(backend, "zero_stage", None),
            "wall_time_s": wall,
            "tokens": tokens * W,
            "tokens_per_s": tokens * W / wall if wall > 0 else None,
            "peak_memory_mb": _peak_memory_mb(ctx.device),
            "final": last,
            "dual": dual,  # PDU: the multiplier after the last step's ascent
            "provenance": provenance(
                "unlearn",
                config=cfg.resolved(),
                data=[*cfg.data.files("forget"), *cfg.data.files("retain")],
                world_size=W,
                started=started,
            ),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ctx.barrier()
    return RunResult(out, model_dir, total, last)


_BOOKKEEPING = ("save_every", "keep_checkpoints", "resume", "progress", "export_steps")


def _prune_exports(root: Path, keep_steps: int) -> None:
    """Remove exported weights of steps after ``keep_steps`` (all of them on a fresh start):
    they belong to an earlier attempt and are rewritten."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        step = int(path.name) if path.name.isdigit() else None
        if step is None or step > keep_steps:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_fingerprint(cfg: RunConfig) -> str:
    """What a checkpoint must match to be resumed: the resolved settings (less bookkeeping
    and output paths) and the identity (name, size, mtime) of the starting model's and the
    data's files. A changed setting or a retrained input model starts the run afresh."""
    resolved = cfg.resolved()
    for key in ("output_dir", "final_model_dir", "export_dir"):
        resolved.pop(key, None)
    for key in _BOOKKEEPING:
        resolved["train"].pop(key, None)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode())
    paths = [Path(cfg.model), *(Path(p) for w in ("forget", "retain") for p in cfg.data.files(w))]
    paths += [Path(p) for key in ("idk_file", "alternate_file") for p in cfg.data.files(key)]
    for path in paths:
        files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.exists():
                st = f.stat()
                digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _micro_step(backend, which: str, loss: torch.Tensor) -> torch.Tensor:
    """Backward one micro-batch loss into gradient buffer ``which``; its detached value (fp64)."""
    backend.begin(which)
    backend.backward(loss)
    backend.end(which)
    return loss.detach().double()


def _truncate_log(path: Path, keep_steps: int) -> None:
    """Drop log lines past ``keep_steps`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    if keep_steps == 0:
        path.unlink()
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["step"] <= keep_steps]
    path.write_text("".join(ln + "\n" for ln in kept))


def _next_dual(objective: Objective, dual: float | None, step: int, loss_retain: float):
    """PDU's multiplier after step ``step`` (0-based): held during the warmup steps, then the
    projected ascent on that step's global-batch retain loss; None for other combiners."""
    if objective.combiner != "pdu" or step < objective.dual_warmup_steps:
        return dual
    return dual_update(dual, loss_retain, objective.retain_loss_eps, objective.dual_step_size)


def _step_record(
    step: int,
    values: list[float],
    objective: Objective,
    stats: DirectionStats,
    dual: float | None = None,
) -> dict:
    loss_f, loss_r, scale, *stat_values = values
    s = dict(zip(stats.names(), stat_values))
    return {
        "step": step + 1,
        "loss_forget": loss_f if objective.uses_forget else None,
        "loss_retain": loss_r if objective.uses_retain else None,
        "xi": s["xi"] if objective.combiner == "blur" else None,
        "dual": dual,  # PDU: the multiplier that weighted this step's retain gradient
        "dot": s["dot"],
        "norm_f": s["norm_f"],
        "norm_r": s["norm_r"],
        "cosine": s["cosine"],
        "fallback": bool(s["fallback"]),
        "update_norm_raw": s["norm_d"],
        "update_norm": s["norm_d"] * scale,
        "clip_scale": scale,
    }


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except Exception:  # pragma: no cover - non-POSIX
        return None
