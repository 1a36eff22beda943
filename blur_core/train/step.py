"""Forward passes that turn a batch into the objective's forget or retain loss.

These are the only places the loop calls the model; the loss formulas themselves are
pure functions in ``blur_core.losses``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from blur_core import losses
from blur_core.methods import Objective

__all__ = [
    "LossContext",
    "forget_loss",
    "preferred_view",
    "reference_sequence_logprobs",
    "retain_loss",
]


class LossContext:
    """What the losses need besides the batch: reference model / log-probs, RMU control vector."""

    def __init__(
        self,
        objective: Objective,
        ref_model: torch.nn.Module | None = None,
        ref_logprobs: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
    ):
        self.objective = objective
        self.ref_model = ref_model
        # sequence log-probs indexed by example index: [n_forget] (NPO), or [n_forget, 2] (DPO:
        # column 0 the forget answer, column 1 the preferred answer)
        self.ref_logprobs = ref_logprobs
        self.control = control


def _forward(model: torch.nn.Module, batch: dict, hidden: bool = False):
    return model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=hidden,
        use_cache=False,
    )


def preferred_view(batch: dict) -> dict:
    """The batch with its preferred answers (DPO's chosen ones) as input_ids / labels."""
    return {
        "input_ids": batch["alt_input_ids"],
        "attention_mask": batch["alt_attention_mask"],
        "labels": batch["alt_labels"],
        "index": batch["index"],
    }


def _layer(hidden_states: tuple[torch.Tensor, ...], layer: int) -> torch.Tensor:
    if layer >= len(hidden_states):
        raise ValueError(
            f"rmu_layer = {layer} but the model has hidden_states 0..{len(hidden_states) - 1}"
        )
    return hidden_states[layer]


def forget_loss(model: torch.nn.Module, batch: dict, ctx: LossContext) -> torch.Tensor:
    obj = ctx.objective
    kind = obj.forget_loss
    if kind == "rmu":
        out = _forward(model, batch, hidden=True)
        acts = _layer(out.hidden_states, obj.rmu_layer)
        return losses.rmu_forget_loss(acts, batch["attention_mask"], ctx.control.to(acts.dtype))
    logits = _forward(model, batch).logits
    if kind == "ga":
        return losses.ga_loss(logits, batch["labels"])
    if kind == "idk":
        return losses.idk_loss(logits, batch["labels"])
    if kind == "npo":
        ref = ctx.ref_logprobs[batch["index"].to(ctx.ref_logprobs.device)].to(logits.device)
        return losses.npo_loss(logits, batch["labels"], ref, obj.beta)
    if kind == "simnpo":
        return losses.simnpo_loss(logits, batch["labels"], obj.beta, obj.delta)
    if kind == "dpo":
        chosen = preferred_view(batch)
        ref = ctx.ref_logprobs[batch["index"].to(ctx.ref_logprobs.device)].to(logits.device)
        return losses.dpo_loss(
            _forward(model, chosen).logits,
            chosen["labels"],
            logits,
            batch["labels"],
            ref[:, 1],
            ref[:, 0],
            obj.beta,
        )
    if kind == "undial":
        with torch.no_grad():
            ref_logits = _forward(ctx.ref_model, batch).logits
        return losses.undial_loss(logits, ref_logits, batch["labels"], obj.undial_beta)
    if kind == "wga":
        return losses.wga_loss(logits, batch["labels"], obj.wga_beta)
    if kind == "satimp":
        return losses.satimp_loss(logits, batch["labels"], obj.satimp_beta1, obj.satimp_beta2)
    if kind == "ceu":
        return losses.ceu_loss(logits, batch["labels"], obj.ceu_ignore_first)
    raise ValueError(f"unknown forget loss {kind!r}")


def retain_loss(model: torch.nn.Module, batch: dict, ctx: LossContext) -> torch.Tensor:
    obj = ctx.objective
    kind = obj.retain_loss
    if kind == "nll":
        return losses.nll_loss(_forward(model, batch).logits, batch["labels"])
    if kind == "kl":
        with torch.no_grad():
            ref_logits = _forward(ctx.ref_model, batch).logits
        return losses.kl_loss(_forward(model, batch).logits, ref_logits, batch["labels"])
    if kind == "rmu":
        with torch.no_grad():
            ref_acts = _layer(
                _forward(ctx.ref_model, batch, hidden=True).hidden_states, obj.rmu_layer
            )
        acts = _layer(_forward(model, batch, hidden=True).hidden_states, obj.rmu_layer)
        return losses.rmu_retain_loss(acts, ref_acts, batch["attention_mask"])
    raise ValueError(f"unknown retain loss {kind!r}")


@torch.no_grad()
def reference_sequence_logprobs(
    model: torch.nn.Module,
    batches: Iterable[dict],
    n: int,
    device: torch.device,
    preferred: bool = False,
) -> torch.Tensor:
    """Sequence log-probs log p_ref(y_i | x_i) of every forget example under ``model``.

    Computed once before training (NPO's and DPO's reference is the starting model) and
    stored in checkpoints, so a resumed run uses the same values. Returns float32 [n], or
    with ``preferred`` [n, 2]: column 0 the forget answer, column 1 the preferred answer
    (``alt_*`` of the batch).
    """
    was_training = model.training
    model.eval()
    views = (lambda b: b, preferred_view) if preferred else (lambda b: b,)
    out = torch.full((n, len(views)), float("nan"), dtype=torch.float32, device=device)
    for batch in batches:
        for col, view in enumerate(views):
            b = view(batch)
            seq, _ = losses.sequence_logprobs(_forward(model, b).logits, b["labels"])
            out[batch["index"].to(device), col] = seq.float()
    model.train(was_training)
    out = out if preferred else out[:, 0]
    if torch.isnan(out).any():
        missing = torch.isnan(out.reshape(n, -1)).any(1).nonzero().flatten()[:5].tolist()
        raise RuntimeError(f"reference log-probs missing for forget examples {missing}")
    return out
