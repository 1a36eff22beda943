"""Gradient backends: where forget/retain gradients accumulate and how the update is applied.

The training loop talks to a backend only through this interface, so a DeepSpeed ZeRO
backend (sharded gradients, engine-owned optimizer) can replace ``LocalBackend`` without
touching the loop:

    backend.begin("forget"); backend.backward(loss_f); backend.end("forget")   # per micro-batch,
    #   after the forward: begin/end only bracket the backward
    backend.begin("retain"); backend.backward(loss_r); backend.end("retain")
    F, R, all_reduce = backend.gradients()     # at the accumulation boundary
    d, stats = blur_direction(F, R, ..., all_reduce=all_reduce, inplace=True)
    backend.apply(d, scale); backend.step(lr); backend.zero()
    backend.save_state(dir) / backend.load_state(dir)     # model + optimizer, for exact resume
    backend.save_model(out_dir, tokenizer, extra_files)    # the final HF model dir (rank 0 writes)
    backend.base_view()                                    # adapters off (LoRA), else None

With ``train.peft`` (LoRA, :mod:`blur_core.train.adapters`) the model is a PeftModel whose
only trainable parameters are the adapters: they are all the buffers, the optimizer and
the checkpoints hold; the reference model is the same module with the adapters disabled;
``save_model`` writes a PEFT adapter dir instead of a full HF model dir.

``LocalBackend`` (single process or data parallel over torch.distributed): two flat
float32 buffers F and R hold the accumulated gradients. For float32 parameters,
``param.grad`` is pointed at a view of F (resp. R) before the backward, so autograd
accumulates straight into the buffer (no copies, no extra gradient memory); other dtypes
are added into the buffer after the backward. Under data parallelism each buffer is
averaged across ranks once per step, before the combination (ranks never diverge).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from blur_core.models import load_model, save_hf_model
from blur_core.train import adapters
from blur_core.train.dist import DistContext

__all__ = ["LocalBackend", "build_backend", "make_optimizer", "select_trainable"]


def select_trainable(model: torch.nn.Module, patterns: list[str]) -> list[torch.nn.Parameter]:
    """The parameters whose names match any regex in ``patterns`` (all trainable if empty);
    the others get ``requires_grad = False``."""
    if not patterns:
        return [p for p in model.parameters() if p.requires_grad]
    regexes = [re.compile(p) for p in patterns]
    chosen = []
    for name, p in model.named_parameters():
        keep = any(r.search(name) for r in regexes)
        p.requires_grad_(keep)
        if keep:
            chosen.append(p)
    if not chosen:
        raise ValueError(f"train.trainable = {patterns} matches no parameter name")
    return chosen


def build_backend(
    model_path: str,
    tcfg,
    ctx: DistContext,
    tokenizer=None,
    extra_files: dict[str, str] | None = None,
):
    """Load the policy model and wrap it in the backend that ``tcfg.backend`` names.

    Returns the backend; ``backend.model`` is what the loop runs forward passes on (the
    model itself, or the DeepSpeed engine) and ``backend.load_reference(model_path)`` loads
    a frozen reference model the way this backend needs it.
    """
    peft_cfg = getattr(tcfg, "peft", None)
    if getattr(tcfg, "backend", "local") == "deepspeed":
        from blur_core.train import zero

        ds_config = zero.build_ds_config(tcfg)
        model = zero.load_policy_model(
            model_path, tcfg.dtype, ctx, ds_config, peft=peft_cfg, seed=tcfg.seed
        )
        model.train()
        params = _trainable(model, tcfg)
        return zero.ZeroBackend(
            model,
            make_optimizer(params, tcfg),
            ctx,
            ds_config,
            tokenizer,
            extra_files,
            model_path=model_path,
        )
    model = load_model(model_path, tcfg.dtype, ctx.device)
    if peft_cfg is not None:
        model = adapters.add_adapters(model, peft_cfg, tcfg.seed)
    model.train()
    params = _trainable(model, tcfg)
    return LocalBackend(
        model, params, make_optimizer(params, tcfg), ctx, dtype=tcfg.dtype, model_path=model_path
    )


def _trainable(model: torch.nn.Module, tcfg) -> list[torch.nn.Parameter]:
    """The adapters' parameters (PeftModel: peft froze the rest), else ``train.trainable``."""
    if adapters.is_peft_model(model):
        return [p for p in model.parameters() if p.requires_grad]
    return select_trainable(model, tcfg.trainable)


def make_optimizer(params: Sequence[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """AdamW or SGD from a TrainConfig (lr is set per step by the loop)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
            foreach=True,
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


class LocalBackend:
    """Flat fp32 forget/retain gradient buffers over ``params``; torch optimizer."""

    name = "local"

    def __init__(
        self,
        model: torch.nn.Module,
        params: Sequence[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        ctx: DistContext,
        dtype: str = "float32",
        model_path: str | None = None,
    ):
        self.model = model
        self.dtype = dtype
        self.model_path = model_path  # the starting model (an adapter's base)
        self.peft = adapters.is_peft_model(model)
        self.zero_stage = None
        self.params = list(params)
        if not self.params:
            raise ValueError("no trainable parameters")
        self.optimizer = optimizer
        self.ctx = ctx
        device = self.params[0].device
        total = sum(p.numel() for p in self.params)
        self._flat = {
            k: torch.zeros(total, dtype=torch.float32, device=device) for k in ("forget", "retain")
        }
        self._views: dict[str, list[torch.Tensor]] = {k: [] for k in self._flat}
        offset = 0
        for p in self.params:
            n = p.numel()
            for k, buf in self._flat.items():
                self._views[k].append(buf[offset : offset + n].view_as(p))
            offset += n
        self._active: str | None = None

    def base_view(self) -> adapters.BaseView | None:
        """The starting model as the policy with its adapters disabled (LoRA), else None."""
        return adapters.BaseView(self.model, self.model) if self.peft else None

    def load_reference(self, model_path: str):
        """The frozen starting model: with adapters the policy with them disabled (no copy
        of the weights), else a copy loaded from its path (replicated)."""
        if self.peft:
            return self.base_view()
        return load_model(model_path, self.dtype, self.ctx.device).eval().requires_grad_(False)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters of the policy."""
        return adapters.parameter_counts(self.model)

    # -- accumulation ------------------------------------------------------------------
    def begin(self, which: str) -> None:
        """Route the next backward's gradients into buffer ``which``."""
        self._active = which
        for p, v in zip(self.params, self._views[which]):
            p.grad = v if p.dtype == torch.float32 else None

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def end(self, which: str) -> None:
        for p, v in zip(self.params, self._views[which]):
            if p.dtype != torch.float32 and p.grad is not None:
                v.add_(p.grad.float())
            p.grad = None
        self._active = None

    def gradients(self) -> tuple[list[torch.Tensor], list[torch.Tensor], Callable | None]:
        """(F, R, all_reduce) at the accumulation boundary, averaged over ranks.

        The buffers are replicated after averaging, so the combiner's sums need no
        further all-reduce (None).
        """
        for buf in self._flat.values():
            self.ctx.all_reduce_mean_(buf)
        return [self._flat["forget"]], [self._flat["retain"]], None

    # -- update ------------------------------------------------------------------------
    def apply(self, direction: Sequence[torch.Tensor], scale: torch.Tensor) -> None:
        """Hand ``scale * direction`` (the combined, clipped update) to the optimizer."""
        (flat,) = direction
        flat.mul_(scale.to(flat.dtype))
        # the combiner ran in place, so d lives in one of the two buffers
        which = next(
            (k for k, buf in self._flat.items() if buf.data_ptr() == flat.data_ptr()), None
        )
        if which is None:
            raise ValueError(
                "LocalBackend.apply expects the direction computed in place in a gradient buffer"
            )
        for p, v in zip(self.params, self._views[which]):
            p.grad = v if p.dtype == torch.float32 else v.to(p.dtype)

    def step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()

    def zero(self) -> None:
        for p in self.params:
            p.grad = None
        for buf in self._flat.values():
            buf.zero_()

    # -- state -------------------------------------------------------------------------
    def save_state(self, ckpt_dir: Path) -> None:
        """Model and optimizer state (replicated: rank 0 writes) into ``ckpt_dir``; with
        adapters only the adapter tensors (the frozen base is the starting model's)."""
        if self.ctx.is_main:
            model_state = (
                adapters.adapter_state(self.model) if self.peft else self.model.state_dict()
            )
            torch.save(
                {
                    "model": model_state,
                    "adapter_only": self.peft,
                    "optimizer": self.optimizer.state_dict(),
                },
                Path(ckpt_dir) / "local_state.pt",
            )

    def load_state(self, ckpt_dir: Path) -> None:
        path = Path(ckpt_dir) / "local_state.pt"
        state = torch.load(path, map_location=self.params[0].device, weights_only=False)
        if state.get("adapter_only", False) != self.peft:
            raise RuntimeError(
                f"{path} holds {'an adapter' if state.get('adapter_only') else 'a full model'}"
                f" but this run trains {'adapters' if self.peft else 'the full model'}"
            )
        if self.peft:
            adapters.load_adapter_state(self.model, state["model"], str(path))
        else:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save_model(self, out_dir: Path, tokenizer, extra_files: dict[str, str]) -> Path | None:
        """The final HF model dir, or with adapters the PEFT adapter dir (rank 0 writes;
        returns None on other ranks)."""
        if not self.ctx.is_main:
            return None
        if self.peft:
            return adapters.save_adapter_dir(
                self.model, out_dir, self.model_path, tokenizer, extra_files
            )
        return save_hf_model(self.model, tokenizer, out_dir, extra_files)
