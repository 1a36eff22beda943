"""DeepSpeed ZeRO-2/3 backend: the only module of blur_core that imports deepspeed (lazily).

The loop drives ``ZeroBackend`` through the same interface as ``LocalBackend``
(begin/backward/end, gradients, apply, step, zero, save_state/load_state, save_model).
What differs is where the gradients live: each rank holds a disjoint shard of the
(rank-averaged) gradient, ``engine.optimizer.averaged_gradients[g]`` for every parameter
group g (a list of 1-D tensors whose concatenation is the rank's flat fp32 partition of
that group, padding included).

One optimizer step with K micro-batches:

    for each micro-batch and each of forget / retain:
        engine.set_gradient_accumulation_boundary(True)   # DeepSpeed reduces this backward now
        engine.backward(loss / K, scale_wrt_gas=False)    # the loop already divided by K
        F_g += shard_g  (resp. R_g)   # fp32 buffers of this rank's partition size
        shard_g.zero_(); averaged_gradients[g] = None; optimizer.zero_grad()
    F, R, all_reduce = gradients()    # all_reduce: SUM over ranks, called once by the combiner
    d = combiner(F, R)   in place in R (or F)   # shards are disjoint and padding is 0 in
                                                # both, so the partial sums add up exactly
    averaged_gradients[g] = views of scale * d_g;  engine.step()

Every backward is its own DeepSpeed accumulation boundary and DeepSpeed's buffers are
emptied after each capture, so each captured gradient is exactly one backward's
gradient: ZeRO-3 would otherwise add the next backward onto it (it accumulates unless its
micro-step counter is 0), ZeRO-2 in bf16 keeps an fp32 partition buffer that only
``step()`` would clear, and a parameter that a backward does not reach (RMU's layers
above the steering layer) would keep a stale partition. The accumulation over
micro-batches happens in F and R, in fp32.

Extra memory per rank over plain DeepSpeed: F and R, i.e. two fp32 gradient shards.
DeepSpeed's gradient clipping is disabled (``gradient_clipping: 0``); the loop clips the
combined direction by its global norm, computed from the all-reduced sums.

LoRA (``train.peft``): the adapters are added after loading (under ZeRO-3 to the
partitioned base, whose frozen weights stay partitioned and are gathered layer by layer in
the forward as before); DeepSpeed's optimizer groups, hence the gradient shards, F, R and
the optimizer state, hold the adapter parameters only. Checkpoints exclude the frozen
parameters; the final output is a PEFT adapter dir written from the fp32 master weights
(``safe_get_full_fp32_param``, collective); the reference is the same engine with the
adapters disabled.

CPU note: ``deepspeed.init_distributed()`` compiles a shared-memory all-reduce op
(``deepspeed_shm_comm``, ~60 s on a fresh 2-core machine) that training never uses. We
initialise torch.distributed ourselves and create DeepSpeed's communication backend with
that op disabled (``_init_deepspeed_comm``), then pass ``dist_init_required=False``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from blur_core.atomic import atomic_dir
from blur_core.config import ConfigError
from blur_core.train import adapters
from blur_core.train.dist import DistContext

__all__ = [
    "CKPT_TAG",
    "HF_ASSETS",
    "SHIPPED_CONFIGS",
    "ZeroBackend",
    "build_ds_config",
    "consolidate_checkpoint",
    "is_zero_checkpoint",
    "load_policy_model",
    "load_reference_model",
    "resolve_ds_config_path",
]

SHIPPED_CONFIGS = ("zero2", "zero3", "zero3_offload")
CKPT_TAG = "ds"
HF_ASSETS = "hf"  # sub-directory of a training checkpoint with config.json, tokenizer, run config


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
def resolve_ds_config_path(name_or_path: str | None) -> Path:
    """A shipped config name ("zero2", "zero3", "zero3_offload"; None -> "zero2") or a JSON path."""
    name = name_or_path or "zero2"
    if name in SHIPPED_CONFIGS:
        return Path(str(resources.files("blur_core.train") / "ds_configs" / f"{name}.json"))
    path = Path(name)
    if not path.exists():
        raise ConfigError(
            f"train.deepspeed_config: {name!r} is neither a shipped config "
            f"{list(SHIPPED_CONFIGS)} nor an existing JSON file"
        )
    return path


def _set_from_train(ds: dict, key: str, value: Any, where: str) -> None:
    """Set ``ds[key] = value`` unless the JSON gives a different explicit value."""
    current = ds.get(key, "auto")
    if current != "auto" and current != value:
        raise ConfigError(
            f"{where}: {key} = {current!r} disagrees with the train config ({value!r}); "
            f'remove it or set it to "auto" (it is filled in from train.*)'
        )
    ds[key] = value


def build_ds_config(tcfg, source: str | None = None) -> dict:
    """The DeepSpeed config dict of a run: the JSON with the train.* values filled in.

    train_micro_batch_size_per_gpu = train.micro_batch_size, gradient_accumulation_steps =
    train.grad_accum, gradient_clipping = 0 (the loop clips the combined update),
    bf16.enabled = (train.dtype == "bfloat16"); an explicit JSON value that disagrees
    raises ConfigError. fp16 and a DeepSpeed-side "optimizer"/"scheduler" are refused: the
    optimizer is the client torch optimizer built from train.optimizer.
    """
    path = resolve_ds_config_path(
        source if source is not None else getattr(tcfg, "deepspeed_config", None)
    )
    where = f"deepspeed config {path}"
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"{where}: remove {key!r}; the optimizer is train.optimizer (a torch optimizer) "
                f"and the schedule train.schedule"
            )
    if ds.get("fp16", {}).get("enabled") not in (None, False):
        raise ConfigError(f"{where}: fp16 is not supported; use train.dtype: bfloat16")
    stage = ds.get("zero_optimization", {}).get("stage")
    if stage not in (2, 3):
        raise ConfigError(f"{where}: zero_optimization.stage must be 2 or 3, got {stage!r}")
    if "train_batch_size" in ds:
        raise ConfigError(
            f"{where}: remove train_batch_size; it follows from train.micro_batch_size, "
            f"train.grad_accum and the world size"
        )
    _set_from_train(ds, "train_micro_batch_size_per_gpu", tcfg.micro_batch_size, where)
    _set_from_train(ds, "gradient_accumulation_steps", tcfg.grad_accum, where)
    # the combined BLUR direction is clipped by the loop (global norm of d); clipping the
    # raw gradient inside DeepSpeed would clip something else
    _set_from_train(ds, "gradient_clipping", 0.0, where)
    bf16 = dict(ds.get("bf16", {}))
    want = tcfg.dtype == "bfloat16"
    if bf16.get("enabled", "auto") not in ("auto", want):
        raise ConfigError(
            f"{where}: bf16.enabled = {bf16['enabled']!r} disagrees with train.dtype = {tcfg.dtype!r}"
        )
    bf16["enabled"] = want
    ds["bf16"] = bf16
    # train.optimizer: sgd gives a client torch.optim.SGD, which is not on DeepSpeed's list of
    # ZeRO-tested optimizers (torch AdamW is); without this flag DeepSpeed refuses it
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


def zero_stage(ds_config: dict) -> int:
    return int(ds_config["zero_optimization"]["stage"])


def _offload(ds_config: dict) -> bool:
    zo = ds_config["zero_optimization"]
    dev = (zo.get("offload_optimizer") or {}).get("device", "none")
    return dev not in (None, "none")


# ---------------------------------------------------------------------------------------
# process group
# ---------------------------------------------------------------------------------------
def _init_deepspeed_comm(ctx: DistContext) -> None:
    """Make torch.distributed and DeepSpeed's comm backend ready without compiling shm ops.

    A single process still needs a (1-rank) process group for DeepSpeed. On CPU,
    DeepSpeed's TorchBackend would JIT-compile ``deepspeed_shm_comm`` (a shared-memory
    all-reduce for inference); we construct the backend with that build disabled.
    """
    import deepspeed
    import deepspeed.comm.comm as ds_comm

    # DeepSpeed's engine asserts that a launcher set LOCAL_RANK; a single process started
    # with `python -m` (the pipeline's launch line for one rank) has none
    os.environ.setdefault("LOCAL_RANK", str(ctx.local_rank))
    if not dist.is_initialized():
        backend = "nccl" if ctx.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timedelta(seconds=1800)
        )
    if ds_comm.cdb is not None and ds_comm.cdb.is_initialized():
        return
    ds_torch = sys.modules["deepspeed.comm.torch"]  # (deepspeed.comm.torch the attribute is torch)
    original = ds_torch.build_shm_op
    if ctx.device.type == "cpu":
        ds_torch.build_shm_op = lambda: None
    try:
        deepspeed.init_distributed(dist_backend=dist.get_backend(), dist_init_required=False)
    finally:
        ds_torch.build_shm_op = original


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _zero3_load_context(ds_config: dict):
    """While active, ``from_pretrained`` builds the model under ``deepspeed.zero.Init``
    (parameters partitioned as they are created: a 70B model never exists whole on a rank)."""
    if zero_stage(ds_config) != 3:
        yield
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    keep = HfDeepSpeedConfig(ds_config)  # transformers holds only a weak reference
    try:
        yield
    finally:
        del keep
        unset_hf_deepspeed_config()


def load_policy_model(
    path: str, dtype: str, ctx: DistContext, ds_config: dict, peft=None, seed: int = 0
):
    """The trained model: under ZeRO-3 loaded straight into partitions (zero.Init); with
    ``peft`` (an AdapterConfig) wrapped in LoRA adapters (frozen base)."""
    from blur_core.models import load_model

    _init_deepspeed_comm(ctx)
    with _zero3_load_context(ds_config):
        model = load_model(path, dtype, "cpu" if zero_stage(ds_config) == 3 else ctx.device)
    if peft is None:
        return model
    if zero_stage(ds_config) == 3 and peft.modules_to_save:
        raise ConfigError(
            f"train.peft.modules_to_save = {list(peft.modules_to_save)} is not supported under "
            f"ZeRO-3 (peft copies the partitioned module); use ZeRO-2 or the local backend"
        )
    # the adapters are created whole on every rank (same seed, same values);
    # deepspeed.initialize partitions them under ZeRO-3
    return adapters.add_adapters(model, peft, seed)


def load_reference_model(path: str, dtype: str, ctx: DistContext, ds_config: dict):
    """A frozen reference model (KL / RMU) loaded from the model path, never a deepcopy.

    ZeRO-2: replicated on every rank (as in data parallelism). ZeRO-3: partitioned by
    zero.Init and wrapped in an optimizer-less DeepSpeed engine, whose forward gathers the
    parameters layer by layer; every rank runs the same forwards (the loop guarantees it).
    """
    from blur_core.models import load_model

    _init_deepspeed_comm(ctx)
    if zero_stage(ds_config) != 3:
        return load_model(path, dtype, ctx.device).eval().requires_grad_(False)
    import deepspeed

    ref_cfg = {k: v for k, v in ds_config.items() if k not in ("zero_allow_untested_optimizer",)}
    zo = dict(ref_cfg["zero_optimization"])
    zo.pop("offload_optimizer", None)
    ref_cfg["zero_optimization"] = zo
    with _zero3_load_context(ref_cfg):
        model = load_model(path, dtype, "cpu")
    model.eval().requires_grad_(False)
    engine, *_ = deepspeed.initialize(model=model, config=ref_cfg, dist_init_required=False)
    engine.eval()
    return engine


# ---------------------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------------------
class ZeroBackend:
    """Sharded forget/retain gradient buffers over a DeepSpeed ZeRO-2/3 engine."""

    name = "deepspeed"

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        ctx: DistContext,
        ds_config: dict,
        tokenizer=None,
        extra_files: dict[str, str] | None = None,
        model_path: str | None = None,
    ):
        import deepspeed

        _init_deepspeed_comm(ctx)
        self.ctx = ctx
        self.model_path = model_path  # the starting model (an adapter's base)
        self.peft = adapters.is_peft_model(model)
        self.ds_config = ds_config
        self.stage = zero_stage(ds_config)
        self.offload = _offload(ds_config)
        self._client_optimizer = optimizer
        self.engine, self.zero_optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config, dist_init_required=False
        )
        self.model = self.engine  # what the loop calls forward on
        self.zero_stage = self.stage
        self.tokenizer = tokenizer
        self.extra_files = dict(extra_files or {})
        self._bufs: dict[str, list[torch.Tensor]] | None = None
        self._split: list[list[int]] | None = None  # per group: numels of DeepSpeed's shard tensors
        self._dp_group = getattr(self.zero_optimizer, "dp_process_group", None)

    def base_view(self) -> adapters.BaseView | None:
        """The starting model as the engine with the adapters disabled (LoRA), else None."""
        return adapters.BaseView(self.engine, self.engine.module) if self.peft else None

    def load_reference(self, model_path: str):
        """The frozen reference model (KL / RMU): with adapters the engine with them
        disabled (no second copy of the weights), else ``load_reference_model``."""
        if self.peft:
            return self.base_view()
        return load_reference_model(model_path, self._dtype_name(), self.ctx, self.ds_config)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters of the policy (partitioned ones counted in full)."""
        return adapters.parameter_counts(self.engine.module)

    def _dtype_name(self) -> str:
        return "bfloat16" if self.ds_config.get("bf16", {}).get("enabled") else "float32"

    # -- DeepSpeed's per-rank gradient shard -------------------------------------------
    def _n_groups(self) -> int:
        opt = self.zero_optimizer
        return len(opt.fp16_groups) if self.stage == 3 else len(opt.bit16_groups)

    def _shard(self, g: int) -> list[torch.Tensor]:
        """This rank's gradient shard of group g, as DeepSpeed holds it after a boundary backward."""
        opt = self.zero_optimizer
        if self.offload:
            flat = (
                opt.fp32_partitioned_groups_flat[g]
                if self.stage == 3
                else opt.single_partition_of_fp32_groups[g]
            ).grad
            return [flat] if flat is not None else []
        grads = (
            opt.averaged_gradients.get(g)
            if isinstance(opt.averaged_gradients, dict)
            else opt.averaged_gradients[g]
        )
        return [] if grads is None else list(grads)

    def _partition_numel(self, g: int) -> int:
        opt = self.zero_optimizer
        if self.stage == 3:
            return int(opt.fp32_partitioned_groups_flat[g].numel())
        return int(opt.single_partition_of_fp32_groups[g].numel())

    def _clear_deepspeed_grads(self) -> None:
        """Empty every DeepSpeed gradient buffer so the next backward starts from zero."""
        opt = self.zero_optimizer
        for g in range(self._n_groups()):
            for t in self._shard(g):
                t.zero_()  # persistent ZeRO-3 partitions would keep values of params a backward misses
            if not self.offload:
                release = getattr(opt, "_release_preflattened_grad_buffers", None)
                if release is not None:
                    release(g)
                opt.averaged_gradients[g] = None
                if self.stage == 2:
                    opt.all_grad_tensors[g] = None
        opt.zero_grad(set_to_none=True)  # ZeRO-3: micro_step_id = 0, so the next backward copies

    def _buffers(self) -> dict[str, list[torch.Tensor]]:
        if self._bufs is None:
            device = self.ctx.device
            self._bufs = {
                k: [
                    torch.zeros(self._partition_numel(g), dtype=torch.float32, device=device)
                    for g in range(self._n_groups())
                ]
                for k in ("forget", "retain")
            }
        return self._bufs

    # -- accumulation ------------------------------------------------------------------
    def begin(self, which: str) -> None:
        # every backward is a DeepSpeed boundary: reduce-scatter now, we accumulate F/R ourselves
        self.engine.set_gradient_accumulation_boundary(True)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the loop already divides by K

    def end(self, which: str) -> None:
        bufs = self._buffers()[which]
        split = []
        for g, buf in enumerate(bufs):
            shard = self._shard(g)
            numels = [t.numel() for t in shard]
            if sum(numels) > buf.numel():
                raise RuntimeError(
                    f"ZeRO gradient shard of group {g} has {sum(numels)} elements, "
                    f"more than the partition ({buf.numel()})"
                )
            offset = 0
            for t, n in zip(shard, numels):
                buf[offset : offset + n].add_(t.reshape(-1).float())
                offset += n
            split.append(numels)
        if self._split is None:
            self._split = split
        self._clear_deepspeed_grads()

    def gradients(self) -> tuple[list[torch.Tensor], list[torch.Tensor], Callable | None]:
        """(F, R, all_reduce): this rank's fp32 shards (already averaged over ranks by
        DeepSpeed's reduce-scatter) and a SUM over the data-parallel group for the sums."""
        bufs = self._buffers()
        if self.ctx.world_size == 1:
            return bufs["forget"], bufs["retain"], None
        group = self._dp_group

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            return t

        return bufs["forget"], bufs["retain"], all_reduce

    # -- update ------------------------------------------------------------------------
    def apply(self, direction: Sequence[torch.Tensor], scale: torch.Tensor) -> None:
        """Write ``scale * d`` into DeepSpeed's gradient shards (what ``step()`` reads)."""
        if self._split is None:
            raise RuntimeError("ZeroBackend.apply called before any backward of this step")
        opt = self.zero_optimizer
        for g, d in enumerate(direction):
            d.mul_(scale.to(d.dtype))
            if self.offload:
                (target,) = self._shard(g)
                target.copy_(d[: target.numel()])
                continue
            numels = self._split[g]
            used = sum(numels)
            views = list(torch.split(d[:used], numels)) if numels else []
            if used < d.numel():  # padding DeepSpeed left out of its list (zeros in d as well)
                views.append(d[used:])
            opt.averaged_gradients[g] = views

    def step(self, lr: float) -> None:
        for group in self._client_optimizer.param_groups:
            group["lr"] = lr
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.step()

    def zero(self) -> None:
        if self._bufs is not None:
            for bufs in self._bufs.values():
                for b in bufs:
                    b.zero_()
        self._split = None
        self._clear_deepspeed_grads()

    # -- state -------------------------------------------------------------------------
    def _write_hf_assets(self, target: Path) -> None:
        """config.json, tokenizer and run config beside a ZeRO checkpoint, so that
        ``python -m blur_core convert`` needs nothing else (rank 0 writes)."""
        if not self.ctx.is_main:
            return
        target.mkdir(parents=True, exist_ok=True)
        self.engine.module.config.save_pretrained(target)
        generation_config = getattr(self.engine.module, "generation_config", None)
        if generation_config is not None:
            with contextlib.suppress(Exception):
                generation_config.save_pretrained(target)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(target)
        for name, text in self.extra_files.items():
            (target / name).write_text(text)
        if self.peft:  # what a LoRA checkpoint's weights are an adapter of
            config = self.engine.module.peft_config["default"]
            config.base_model_name_or_path = adapters.base_path_text(self.model_path or "")
            config.save_pretrained(str(target))

    def save_state(self, ckpt_dir: Path) -> None:
        """``engine.save_checkpoint`` (collective: every rank writes its shard) + HF assets.
        With adapters the frozen base parameters are left out (they are the starting
        model's); the optimizer shards hold the adapter's state only."""
        ckpt_dir = Path(ckpt_dir)
        self.engine.save_checkpoint(
            str(ckpt_dir), tag=CKPT_TAG, exclude_frozen_parameters=self.peft
        )
        self._write_hf_assets(ckpt_dir / HF_ASSETS)

    def load_state(self, ckpt_dir: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(ckpt_dir),
            tag=CKPT_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
            # an adapter checkpoint holds no frozen base weights (the model has them already)
            load_module_strict=not self.peft,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint {CKPT_TAG!r} in {ckpt_dir}")

    def _full_adapter_state(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter in full from DeepSpeed's fp32 master copy (collective:
        all ranks call it, in the same order)."""
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, p in self.engine.module.named_parameters():
            if p.requires_grad:
                full = safe_get_full_fp32_param(p)
                if full is None:
                    raise RuntimeError(f"DeepSpeed holds no fp32 master copy of {name}")
                state[name] = full.detach().float().cpu().clone()
        return state

    def save_model(self, out_dir: Path, tokenizer, extra_files: dict[str, str]) -> Path | None:
        """The final HF model dir: a ZeRO checkpoint consolidated to fp32 safetensors.

        The same path as ``python -m blur_core convert`` (fp32 master weights, also for bf16
        training). All ranks write their shards; rank 0 converts and removes the shards.
        Needs a filesystem shared by all ranks (as multi-node checkpoints do anyway).
        With adapters: the PEFT adapter dir, the fp32 masters gathered to rank 0 (no shards
        written, no base weights gathered).
        """
        out_dir = Path(out_dir)
        self.tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        self.extra_files = {**self.extra_files, **(extra_files or {})}
        if self.peft:  # the adapter dir straight from the gathered fp32 masters
            state = self._full_adapter_state()
            result = None
            if self.ctx.is_main:
                result = adapters.save_adapter_dir(
                    self.engine.module,
                    out_dir,
                    self.model_path or "",
                    self.tokenizer,
                    self.extra_files,
                    state_dict=state,
                )
            self.ctx.barrier()
            return result
        tmp = out_dir.with_name(out_dir.name + ".zero")
        if self.ctx.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.ctx.barrier()
        self.save_state(tmp)
        self.ctx.barrier()
        result = None
        if self.ctx.is_main:
            result = consolidate_checkpoint(tmp, out_dir)
            shutil.rmtree(tmp)
        self.ctx.barrier()
        return result


# ---------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------
def is_zero_checkpoint(ckpt_dir: str | Path) -> bool:
    """Whether ``ckpt_dir`` holds a DeepSpeed checkpoint (a ``latest`` file or our tag's folder)."""
    ckpt_dir = Path(ckpt_dir)
    return (ckpt_dir / "latest").is_file() or (ckpt_dir / CKPT_TAG).is_dir()


def consolidate_checkpoint(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    hf_dir: str | Path | None = None,
    tag: str | None = None,
) -> Path:
    """Consolidate the ZeRO shards in ``ckpt_dir`` into an HF model dir ``out_dir`` (atomically).

    DeepSpeed's ``zero_to_fp32`` writes the fp32 master weights as safetensors (also for
    bf16 training); config.json, the tokenizer and the run config are copied from
    ``hf_dir`` (default ``ckpt_dir/hf``, written by :class:`ZeroBackend`). ``tag``: the
    checkpoint tag, default the one named in ``latest`` (else ours).

    A LoRA run's checkpoint (``hf_dir`` holds ``adapter_config.json``) holds the adapter
    only: ``out_dir`` becomes a PEFT adapter dir of its fp32 master weights.
    """
    from deepspeed.utils.zero_to_fp32 import (
        convert_zero_checkpoint_to_fp32_state_dict,
        get_fp32_state_dict_from_zero_checkpoint,
    )

    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"ZeRO checkpoint directory not found: {ckpt_dir}")
    if tag is None and not is_zero_checkpoint(ckpt_dir):
        raise FileNotFoundError(
            f"{ckpt_dir} holds no DeepSpeed checkpoint (no 'latest' file and no "
            f"'{CKPT_TAG}/' folder) and is not an HF model dir"
        )
    if tag is None and not (ckpt_dir / "latest").is_file():
        tag = CKPT_TAG
    hf_dir = Path(hf_dir) if hf_dir is not None else ckpt_dir / HF_ASSETS
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no config.json in {hf_dir}; pass hf_dir (e.g. the starting model dir)"
        )
    if (hf_dir / adapters.ADAPTER_CONFIG).is_file():
        state = get_fp32_state_dict_from_zero_checkpoint(
            str(ckpt_dir), tag=tag, exclude_frozen_parameters=True
        )
        return adapters.adapter_dir_from_state(hf_dir, state, out_dir)
    with atomic_dir(out_dir) as tmp:
        convert_zero_checkpoint_to_fp32_state_dict(
            str(ckpt_dir), str(tmp), tag=tag, safe_serialization=True
        )
        for item in hf_dir.iterdir():
            if item.is_file() and not (tmp / item.name).exists():
                shutil.copy2(item, tmp / item.name)
    return out_dir
