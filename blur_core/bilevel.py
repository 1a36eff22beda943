"""The BLUR update direction, the weighted-sum and the primal-dual (PDU) combiners.

Notation (one optimizer step, all trainable parameters viewed as one long vector):
    F = g_f  the forget-loss gradient,  R = g_r  the retain-loss gradient,
    a = <R, F>,  ||F||^2,  ||R||^2  accumulated in float64.

forget_priority (default, BLUR):
    xi = gamma - a / ||F||^2,   d = R + xi * F
    so that <d, F> = gamma * ||F||^2: the forget loss always descends (gamma > 0) and d is
    the retain gradient with its component along F replaced by gamma * F.
retain_priority:
    xi = gamma - a / ||R||^2,   d = F + xi * R,   <d, R> = gamma * ||R||^2.
Guard: when the squared norm in the denominator is <= eps, the projection is undefined
and d = R (forget_priority) or d = F (retain_priority); ``stats.fallback`` is 1.

The gradients are given as lists of tensors (one per parameter, or per shard, or a single
flat buffer). Under sharding (ZeRO), each rank passes its own disjoint shard and an
``all_reduce`` callable (in-place SUM over ranks) that is applied exactly once, to one
stacked float64 tensor of the three partial sums. Replicated gradients (single process or
DDP after averaging) need no all_reduce.

Host synchronisation: none. Every statistic, including xi and the fallback flag, stays on
the device as a tensor; ``DirectionStats.to_dict()`` performs the single ``.tolist()`` that
the training loop does once per step (together with the losses).

The norm of d is obtained from the same three sums, without another pass or collective:
    ||d||^2 = ||R||^2 + 2 xi a + xi^2 ||F||^2   (forget_priority; symmetric otherwise)
which is what gradient clipping needs.

pdu (primal-dual unlearning, Entesari et al. 2025): min L_f  s.t.  L_r <= eps, through the
Lagrangian L_f + lambda (L_r - eps) with lambda >= 0. The primal direction is its gradient,
    d = w_f F + lambda R                                  (``pdu_direction``)
and after the primal step the dual ascends on the constraint violation,
    lambda' = max(0, lambda + eta (L_r - eps))            (``dual_update``)
with L_r the step's global-batch mean retain loss (the value every rank read at the step's
one host synchronisation), so lambda is a plain float, the same on every rank and for every
micro-batch split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch

Tensor = torch.Tensor
VARIANTS = ("forget_priority", "retain_priority")
DEFAULT_EPS = 1e-12
_CHUNK = 1 << 22  # elements per fp32 reduction chunk (16 MiB of temporaries)

__all__ = [
    "DEFAULT_EPS",
    "VARIANTS",
    "DirectionStats",
    "blur_direction",
    "clip_coefficient",
    "dual_update",
    "partial_sums",
    "pdu_direction",
    "weighted_sum",
]


@dataclass(frozen=True)
class DirectionStats:
    """Per-step diagnostics of a combined update, all 0-dim float64 tensors on the grads' device.

    xi        the coefficient of the priority gradient (0 for weighted sums)
    dot       <R, F>
    norm_f    ||F||
    norm_r    ||R||
    cosine    <R, F> / (||R|| ||F||)  (0 when either norm is 0)
    fallback  1.0 when the eps guard fired (d = R, resp. F), else 0.0
    norm_d    ||d|| before clipping
    """

    xi: Tensor
    dot: Tensor
    norm_f: Tensor
    norm_r: Tensor
    cosine: Tensor
    fallback: Tensor
    norm_d: Tensor

    def stacked(self) -> Tensor:
        """All fields as one float64 vector, in field order (one transfer to the host)."""
        return torch.stack([getattr(self, f.name) for f in fields(self)])

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(DirectionStats))

    def to_dict(self) -> dict[str, float]:
        """One host synchronisation: returns python floats keyed by field name."""
        return dict(zip(self.names(), self.stacked().tolist()))


def _check_lists(forget_grads: Sequence[Tensor], retain_grads: Sequence[Tensor]) -> None:
    if len(forget_grads) != len(retain_grads):
        raise ValueError(
            f"forget_grads has {len(forget_grads)} tensors but retain_grads has {len(retain_grads)}"
        )
    if len(forget_grads) == 0:
        raise ValueError("forget_grads and retain_grads are empty: no trainable gradients")
    for i, (f, r) in enumerate(zip(forget_grads, retain_grads)):
        if f.shape != r.shape:
            raise ValueError(
                f"gradient {i}: forget shape {tuple(f.shape)} != retain shape {tuple(r.shape)}"
            )


def partial_sums(
    forget_grads: Sequence[Tensor],
    retain_grads: Sequence[Tensor],
    all_reduce: Callable[[Tensor], object] | None = None,
) -> Tensor:
    """[<R,F>, ||F||^2, ||R||^2] as one float64 tensor of shape [3].

    Inputs may be bf16/fp16/fp32/fp64: products are reduced in fp32 (fp64 for fp64 inputs) per
    chunk of at most ``_CHUNK`` elements and the chunk results summed in float64. ``all_reduce``,
    when given, is called once on that tensor and must sum it in place across ranks.
    """
    _check_lists(forget_grads, retain_grads)
    device = forget_grads[0].device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for f, r in zip(forget_grads, retain_grads):
        f_flat, r_flat = f.detach().reshape(-1), r.detach().reshape(-1)
        acc = torch.promote_types(
            torch.promote_types(f.dtype, r.dtype), torch.float32
        )  # fp64 stays fp64
        # Chunked so that upcasting a huge flat buffer never allocates a full-size copy;
        # each chunk's products are reduced in fp32 and summed in fp64. No host sync.
        for start in range(0, f_flat.numel(), _CHUNK):
            fc = f_flat[start : start + _CHUNK].to(acc)
            rc = r_flat[start : start + _CHUNK].to(acc)
            sums += torch.stack([torch.dot(rc, fc), torch.dot(fc, fc), torch.dot(rc, rc)]).double()
    if all_reduce is not None:
        all_reduce(sums)
    return sums


def _combine(
    base: Sequence[Tensor], other: Sequence[Tensor], coef: Tensor, inplace: bool
) -> list[Tensor]:
    """base + coef * other elementwise, with coef a 0-dim tensor (kept on device)."""
    out = []
    for b, o in zip(base, other):
        c = coef.to(b.dtype)  # 0-dim: broadcasts, fused multiply-add, no full-size temporary
        out.append(b.addcmul_(o, c) if inplace else torch.addcmul(b, o, c))
    return out


def blur_direction(
    forget_grads: Sequence[Tensor],
    retain_grads: Sequence[Tensor],
    gamma: float,
    variant: str = "forget_priority",
    eps: float = DEFAULT_EPS,
    all_reduce: Callable[[Tensor], object] | None = None,
    inplace: bool = False,
) -> tuple[list[Tensor], DirectionStats]:
    """The BLUR direction d and its statistics (see the module docstring for the formulas).

    Args:
        forget_grads, retain_grads: matching lists of tensors (F and R); any float dtype.
        gamma: the forget-descent margin, <d, F> = gamma * ||F||^2 (forget_priority).
        variant: "forget_priority" or "retain_priority".
        eps: guard on the squared norm of the priority gradient.
        all_reduce: optional in-place SUM across ranks for sharded gradients, called once.
        inplace: write d into retain_grads (forget_priority) or forget_grads
            (retain_priority) instead of allocating new tensors.

    Returns:
        (d as a list of tensors shaped like the inputs, DirectionStats).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown BLUR variant {variant!r}; expected one of {VARIANTS}")
    gamma = float(gamma)
    if not torch.isfinite(torch.tensor(gamma)):
        raise ValueError(f"gamma must be finite, got {gamma}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    sums = partial_sums(forget_grads, retain_grads, all_reduce)
    dot, sq_f, sq_r = sums[0], sums[1], sums[2]
    if variant == "forget_priority":
        base, priority, sq_p, sq_b = retain_grads, forget_grads, sq_f, sq_r
    else:
        base, priority, sq_p, sq_b = forget_grads, retain_grads, sq_r, sq_f

    fallback = sq_p <= eps
    safe = torch.where(fallback, torch.ones_like(sq_p), sq_p)
    xi = torch.where(fallback, torch.zeros_like(sq_p), gamma - dot / safe)
    direction = _combine(base, priority, xi, inplace)

    sq_d = (sq_b + 2.0 * xi * dot + xi * xi * sq_p).clamp_min(0.0)
    stats = _make_stats(xi, dot, sq_f, sq_r, fallback.to(torch.float64), sq_d)
    return direction, stats


def weighted_sum(
    forget_grads: Sequence[Tensor],
    retain_grads: Sequence[Tensor],
    forget_weight: float,
    retain_weight: float,
    all_reduce: Callable[[Tensor], object] | None = None,
    inplace: bool = False,
) -> tuple[list[Tensor], DirectionStats]:
    """d = forget_weight * F + retain_weight * R (GradDiff, NPO+GD, ...), with the same stats.

    ``inplace`` writes d into retain_grads. xi is reported as 0 and fallback as 0.
    """
    wf, wr = float(forget_weight), float(retain_weight)
    sums = partial_sums(forget_grads, retain_grads, all_reduce)
    dot, sq_f, sq_r = sums[0], sums[1], sums[2]
    out = []
    for f, r in zip(forget_grads, retain_grads):
        if inplace:
            r.mul_(wr).add_(f, alpha=wf)
            out.append(r)
        else:
            out.append(r * wr + f * wf)
    sq_d = (wf * wf * sq_f + 2.0 * wf * wr * dot + wr * wr * sq_r).clamp_min(0.0)
    zero = torch.zeros_like(dot)
    return out, _make_stats(zero, dot, sq_f, sq_r, zero, sq_d)


def pdu_direction(
    forget_grads: Sequence[Tensor],
    retain_grads: Sequence[Tensor],
    dual: float,
    forget_weight: float = 1.0,
    all_reduce: Callable[[Tensor], object] | None = None,
    inplace: bool = False,
) -> tuple[list[Tensor], DirectionStats]:
    """The primal direction of PDU: d = forget_weight * F + dual * R, the gradient of the
    Lagrangian forget_weight * L_f + dual * (L_r - eps) (eps does not change the gradient).

    ``dual`` is the current multiplier lambda >= 0, a Python float (read at the previous step's
    host synchronisation, so this call needs none). ``inplace`` writes d into retain_grads;
    the stats are those of ``weighted_sum`` (xi and fallback 0).
    """
    dual, forget_weight = float(dual), float(forget_weight)
    if not (math.isfinite(dual) and dual >= 0):
        raise ValueError(f"dual must be a finite number >= 0, got {dual}")
    if not (math.isfinite(forget_weight) and forget_weight > 0):
        raise ValueError(f"forget_weight must be a finite number > 0, got {forget_weight}")
    return weighted_sum(forget_grads, retain_grads, forget_weight, dual, all_reduce, inplace)


def dual_update(dual: float, retain_loss: float, retain_loss_eps: float, step_size: float) -> float:
    """Projected dual ascent on the retain constraint L_r <= eps:

        lambda' = max(0, lambda + step_size * (L_r - eps))

    All arguments are Python floats (float64); ``retain_loss`` is the step's global-batch
    mean, so the result is identical on every rank. A violated constraint (L_r > eps) raises
    lambda, a slack one lowers it, never below 0.
    """
    values = {
        "dual": dual,
        "retain_loss": retain_loss,
        "retain_loss_eps": retain_loss_eps,
        "step_size": step_size,
    }
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    if dual < 0:
        raise ValueError(f"dual must be >= 0, got {dual}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    return max(0.0, float(dual) + float(step_size) * (float(retain_loss) - float(retain_loss_eps)))


def _make_stats(xi, dot, sq_f, sq_r, fallback, sq_d) -> DirectionStats:
    norm_f, norm_r = sq_f.sqrt(), sq_r.sqrt()
    denom = norm_f * norm_r
    cosine = torch.where(
        denom > 0,
        dot / torch.where(denom > 0, denom, torch.ones_like(denom)),
        torch.zeros_like(dot),
    )
    return DirectionStats(
        xi=xi,
        dot=dot,
        norm_f=norm_f,
        norm_r=norm_r,
        cosine=cosine,
        fallback=fallback,
        norm_d=sq_d.sqrt(),
    )


def clip_coefficient(norm: Tensor, max_norm: float | None) -> Tensor:
    """Scale factor that brings a vector of global norm ``norm`` down to ``max_norm``.

    min(1, max_norm / norm) as a 0-dim tensor (1 when max_norm is None or norm == 0), so the
    applied update has norm exactly ``max_norm`` when it exceeded it. No host sync.
    """
    one = torch.ones_like(norm)
    if max_norm is None:
        return one
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0 or None, got {max_norm}")
    safe = torch.where(norm > 0, norm, one)
    return torch.where(norm > max_norm, max_norm / safe, one)
