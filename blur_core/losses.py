"""Unlearning losses: pure functions on logits, log-probs and activations.

Nothing here calls a model, touches global state or synchronises with the host
(no ``.item()``, no data-dependent Python branching on tensor values), so every
function is safe inside a training step and under gradient accumulation.

Conventions (shared by every loss in this module)
--------------------------------------------------
* **Labels** are Hugging Face style: ``labels`` has the same shape as
  ``input_ids``, ``[B, T]``; positions equal to :data:`IGNORE_INDEX` are not
  scored. Functions shift internally: ``logits[:, t]`` predicts
  ``labels[:, t + 1]``, so ``labels[:, 0]`` and ``logits[:, -1]`` never take
  part in a loss. Label *values* are not range-checked (that would need a host
  sync); an out-of-range label makes ``torch.gather`` fail.
* **Precision**: log-softmax (and every reduction after it) is computed in
  float32; bf16/fp16 logits and activations are upcast with ``.float()``.
  All returned losses are float32 scalars.
* **Reduction**: every loss is first reduced *per example* (mean over that
  example's valid tokens, or the example's own sequence-level term), and the
  per-example values are then averaged with a plain mean over the ``B``
  examples of the batch. Because of this, splitting a batch into micro-batches
  of equal size and averaging their losses reproduces the full-batch loss (and
  gradient) exactly, which is what makes gradient accumulation and data
  parallelism exact (docs/architecture.md section 4). Note that this is *not* a global
  mean over all tokens of the batch: examples weigh equally whatever their
  length.
* **Empty examples**: an example with zero valid tokens (all labels ignored,
  or an all-zero attention mask for RMU) never produces NaN. Its per-example
  value counts as 0 -- token counts are clamped to at least 1 and the sequence
  level losses (NPO, SimNPO) explicitly zero such an example -- and it still
  counts as one of the ``B`` examples in the batch mean. It receives no
  gradient.
* **Validation** raises :class:`ValueError` naming the bad value (never
  ``assert``).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from blur_core.data.collate import IGNORE_INDEX  # the label of unscored positions

__all__ = [
    "IGNORE_INDEX",
    "ceu_loss",
    "dpo_loss",
    "drop_first_answer_tokens",
    "ga_loss",
    "idk_loss",
    "kl_loss",
    "nll_loss",
    "npo_loss",
    "rmu_control_vector",
    "rmu_forget_loss",
    "rmu_retain_loss",
    "satimp_loss",
    "sequence_logprobs",
    "simnpo_loss",
    "token_logprobs",
    "undial_loss",
    "wga_loss",
]


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    _check_tensor("logits", logits)
    _check_tensor("labels", labels)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape [B, T, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, T], got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if tuple(logits.shape[:2]) != tuple(labels.shape):
        raise ValueError(
            "logits [B, T, V] and labels [B, T] disagree on [B, T]: logits shape "
            f"{tuple(logits.shape)}, labels shape {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError(
            f"batch must hold at least one example, got logits shape {tuple(logits.shape)}"
        )
    if logits.shape[1] == 0:
        raise ValueError(f"sequence length T must be >= 1, got logits shape {tuple(logits.shape)}")
    if logits.shape[2] == 0:
        raise ValueError(f"vocabulary size V must be >= 1, got logits shape {tuple(logits.shape)}")


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number > 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _check_non_negative(name: str, value: object) -> float:
    v = _check_finite(name, value)
    if v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _check_reference(name: str, ref: Tensor, like_name: str, like: Tensor) -> None:
    """A reference tensor (``ref_logits``, ``ref_activations``): floating point, shaped
    like the policy's ``like``."""
    _check_tensor(name, ref)
    if tuple(ref.shape) != tuple(like.shape):
        raise ValueError(
            f"{name} must have the shape of {like_name} {tuple(like.shape)}, got shape "
            f"{tuple(ref.shape)}"
        )
    if not ref.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {ref.dtype}")


def _check_ref_logits(logits: Tensor, ref_logits: Tensor) -> None:
    _check_reference("ref_logits", ref_logits, "logits", logits)


def _check_ref_seq(name: str, ref: Tensor, batch: int) -> None:
    _check_tensor(name, ref)
    if ref.dim() != 1 or ref.shape[0] != batch:
        raise ValueError(f"{name} must have shape [B] = [{batch}], got shape {tuple(ref.shape)}")
    if not ref.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {ref.dtype}")


def _per_example_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [B, N] over the ``mask`` [B, N] positions of each row -> [B].

    Rows with no valid position give 0 (count clamped to 1).
    """
    maskf = mask.to(values.dtype)
    total = (values * maskf).sum(dim=1)
    count = maskf.sum(dim=1).clamp(min=1.0)
    return total / count


# ---------------------------------------------------------------------------
# log-probabilities
# ---------------------------------------------------------------------------


def token_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of each next label token.

    ``logp[b, t] = log_softmax(logits[b, t])[labels[b, t + 1]]`` for
    ``t = 0 .. T-2``, computed in float32; ``logp[b, t] = 0`` where
    ``labels[b, t + 1] == IGNORE_INDEX``.

    Args:
        logits: ``[B, T, V]`` float tensor (any float dtype; upcast to float32).
        labels: ``[B, T]`` integer tensor, HF-style (not shifted), with
            :data:`IGNORE_INDEX` at positions that are not scored.

    Returns:
        ``(logp, mask)``: ``logp`` ``[B, T-1]`` float32, ``mask`` ``[B, T-1]``
        bool, True at valid (scored) positions.

    Only one ``[B, T-1, V]`` float32 tensor (the log-softmax) is kept; the
    target log-probs are picked out with ``gather``.
    """
    _check_logits_labels(logits, labels)
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    index = torch.where(mask, shift_labels, torch.zeros_like(shift_labels)).long()
    logsm = F.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V] float32
    logp = logsm.gather(dim=-1, index=index.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    logp = logp.masked_fill(~mask, 0.0)
    return logp, mask


def sequence_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Sequence log-probability of the labelled tokens of each example.

    ``s_i = sum_t logp[i, t]`` over the valid positions of example ``i`` (see
    :func:`token_logprobs`) and ``n_i`` = number of valid positions.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``.

    Returns:
        ``(s, n)``: both ``[B]`` float32. ``s_i = 0`` and ``n_i = 0`` for an
        example with no valid token (``n`` is *not* clamped here).
    """
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(dim=1), mask.sum(dim=1).to(torch.float32)


# ---------------------------------------------------------------------------
# token-level losses
# ---------------------------------------------------------------------------


def nll_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Negative log-likelihood, per-example token mean then batch mean.

    ``L = (1/B) * sum_i ( -s_i / max(n_i, 1) )`` with ``s_i``, ``n_i`` from
    :func:`sequence_logprobs`. An example with no valid token contributes 0.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``.

    Returns:
        float32 scalar.
    """
    s, n = sequence_logprobs(logits, labels)
    return (-s / n.clamp(min=1.0)).mean()


def ga_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Gradient-ascent forget loss: ``L_GA = -nll_loss(logits, labels)``.

    Minimising it raises the NLL of the forget answers (unbounded below).

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``.

    Returns:
        float32 scalar.
    """
    return -nll_loss(logits, labels)


def idk_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """IdK forget loss: NLL on refusal answers.

    The data layer substitutes "I don't know"-style answers into the forget
    batch; this loss trains the model to produce them. The value is exactly
    :func:`nll_loss`: ``L = (1/B) * sum_i ( -s_i / max(n_i, 1) )``.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` labels of the refusal answers.

    Returns:
        float32 scalar.
    """
    return nll_loss(logits, labels)


# ---------------------------------------------------------------------------
# preference-style forget losses
# ---------------------------------------------------------------------------


def npo_loss(logits: Tensor, labels: Tensor, ref_seq_logprobs: Tensor, beta: float) -> Tensor:
    """Negative Preference Optimization (Zhang et al. 2024), sequence level.

    ``L = -(2/beta) * (1/B) * sum_i logsigmoid(-beta * (s_i - ref_i))``

    with ``s_i`` the policy's sequence log-prob of example ``i`` (SUM over its
    valid tokens, :func:`sequence_logprobs`) and ``ref_i`` the reference
    model's, precomputed once and treated as a constant (detached). At
    ``s_i = ref_i`` the per-example term is ``(2/beta) * log 2``. An example
    with no valid token contributes 0.

    Args:
        logits: ``[B, T, V]`` policy logits.
        labels: ``[B, T]``.
        ref_seq_logprobs: ``[B]`` reference sequence log-probs.
        beta: inverse temperature, ``> 0``.

    Returns:
        float32 scalar.
    """
    beta = _check_positive("beta", beta)
    _check_logits_labels(logits, labels)
    _check_tensor("ref_seq_logprobs", ref_seq_logprobs)
    batch = logits.shape[0]
    if ref_seq_logprobs.dim() != 1 or ref_seq_logprobs.shape[0] != batch:
        raise ValueError(
            f"ref_seq_logprobs must have shape [B] = [{batch}], got shape "
            f"{tuple(ref_seq_logprobs.shape)}"
        )
    if not ref_seq_logprobs.is_floating_point():
        raise ValueError(
            f"ref_seq_logprobs must be a floating-point tensor, got dtype {ref_seq_logprobs.dtype}"
        )
    s, n = sequence_logprobs(logits, labels)
    ref = ref_seq_logprobs.detach().to(device=s.device, dtype=torch.float32)
    per_example = -(2.0 / beta) * F.logsigmoid(-beta * (s - ref))
    per_example = torch.where(n > 0, per_example, torch.zeros_like(per_example))
    return per_example.mean()


def simnpo_loss(logits: Tensor, labels: Tensor, beta: float, delta: float) -> Tensor:
    """SimNPO (Fan et al. 2024): length-normalised NPO without a reference model.

    ``L = -(2/beta) * (1/B) * sum_i logsigmoid(-(beta / n_i) * s_i - delta)``

    with ``s_i`` the sequence log-prob (SUM over valid tokens) and ``n_i`` the
    number of valid tokens of example ``i``. An example with no valid token
    contributes 0.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``.
        beta: inverse temperature, ``> 0``.
        delta: reward margin (the paper's gamma), any finite number
            (usually ``>= 0``).

    Returns:
        float32 scalar.
    """
    beta = _check_positive("beta", beta)
    delta = _check_finite("delta", delta)
    s, n = sequence_logprobs(logits, labels)
    per_example = -(2.0 / beta) * F.logsigmoid(-(beta / n.clamp(min=1.0)) * s - delta)
    per_example = torch.where(n > 0, per_example, torch.zeros_like(per_example))
    return per_example.mean()


def dpo_loss(
    chosen_logits: Tensor,
    chosen_labels: Tensor,
    rejected_logits: Tensor,
    rejected_labels: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
) -> Tensor:
    """DPO as an unlearning loss (Rafailov et al. 2023; IdkDPO in Maini et al. 2024, TOFU;
    AltPO in Mekala et al. 2024), sequence level:

    ``L = -(2/beta) * (1/B) * sum_i logsigmoid(beta * ((w_i - wref_i) - (l_i - lref_i)))``

    with ``w_i`` / ``l_i`` the policy's sequence log-probs (SUM over valid tokens,
    :func:`sequence_logprobs`) of the chosen answer (a refusal or an alternate answer) and
    of the rejected one (the forget answer) of forget question ``i``, and ``wref_i`` /
    ``lref_i`` the reference model's, precomputed once and treated as constants. This is
    open-unlearning's ``compute_dpo_loss`` (win = alternate, lose = original; the ``2/beta``
    scale makes NPO its rejected-only case). At the reference the term is
    ``(2/beta) * log 2``. An example whose chosen or rejected answer has no valid token
    contributes 0.

    Args:
        chosen_logits / rejected_logits: ``[B, T_w, V]`` / ``[B, T_l, V]`` policy logits.
        chosen_labels / rejected_labels: ``[B, T_w]`` / ``[B, T_l]``.
        ref_chosen / ref_rejected: ``[B]`` reference sequence log-probs.
        beta: inverse temperature, ``> 0``.

    Returns:
        float32 scalar.
    """
    beta = _check_positive("beta", beta)
    _check_logits_labels(chosen_logits, chosen_labels)
    _check_logits_labels(rejected_logits, rejected_labels)
    batch = chosen_logits.shape[0]
    if rejected_logits.shape[0] != batch:
        raise ValueError(
            f"chosen and rejected batches must have the same B, got {batch} and "
            f"{rejected_logits.shape[0]}"
        )
    _check_ref_seq("ref_chosen", ref_chosen, batch)
    _check_ref_seq("ref_rejected", ref_rejected, batch)
    w, n_w = sequence_logprobs(chosen_logits, chosen_labels)
    lo, n_l = sequence_logprobs(rejected_logits, rejected_labels)
    ref_w = ref_chosen.detach().to(device=w.device, dtype=torch.float32)
    ref_l = ref_rejected.detach().to(device=w.device, dtype=torch.float32)
    margin = (w - ref_w) - (lo - ref_l)
    per_example = -(2.0 / beta) * F.logsigmoid(beta * margin)
    valid = (n_w > 0) & (n_l > 0)
    per_example = torch.where(valid, per_example, torch.zeros_like(per_example))
    return per_example.mean()


# ---------------------------------------------------------------------------
# token-weighted forget losses
# ---------------------------------------------------------------------------


def undial_loss(logits: Tensor, ref_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """UNDIAL (Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust
    Unlearning in Large Language Models"): self-distillation to the reference model's
    logits with the true token's logit lowered by ``beta``.

    For each valid shifted position ``t`` of example ``i`` with label ``y = labels[i, t+1]``:

    ``q = softmax(ref_logits[i, t] - beta * onehot(y))``,
    ``CE_{i,t} = -sum_v q(v) * log_softmax(logits[i, t])(v)``,

    ``L = (1/B) * sum_i ( sum_t CE_{i,t} / max(n_i, 1) )``.

    ``q`` is a constant (the reference is frozen). The value is open-unlearning's
    ``compute_undial_loss`` (cross entropy to the adjusted soft labels), reduced by this
    module's convention: it averages over every position of the batch, prompt and
    padding included (where its one-hot mask puts the penalty on vocabulary entry
    ``V - 100`` by negative indexing); here only the answer positions are scored, per
    example. Both agree when every position is scored and the examples have equal length.

    Args:
        logits: ``[B, T, V]`` policy logits.
        ref_logits: ``[B, T, V]`` reference (teacher) logits on the same input.
        labels: ``[B, T]``.
        beta: penalty on the true token's logit, ``>= 0`` (0: plain self-distillation).

    Returns:
        float32 scalar.
    """
    beta = _check_non_negative("beta", beta)
    _check_logits_labels(logits, labels)
    _check_ref_logits(logits, ref_logits)
    shift = labels[:, 1:]
    mask = shift != IGNORE_INDEX
    index = torch.where(mask, shift, torch.zeros_like(shift)).long().unsqueeze(-1)
    with torch.no_grad():
        adjusted = ref_logits[:, :-1].detach().float()
        adjusted = adjusted.scatter_add(
            -1, index, torch.full(index.shape, -beta, dtype=adjusted.dtype, device=adjusted.device)
        )
        q = F.softmax(adjusted, dim=-1)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    ce = -(q * logp).sum(-1)  # [B, T-1]
    return _per_example_mean(ce, mask).mean()


def _weighted_ascent(logits: Tensor, labels: Tensor, weight_of) -> Tensor:
    """``(1/B) sum_i (1/max(n_i,1)) sum_t w(p_it) * log p_it`` with ``w`` detached."""
    logp, mask = token_logprobs(logits, labels)
    with torch.no_grad():
        weight = weight_of(logp.detach())
    return _per_example_mean(weight * logp, mask).mean()


def wga_loss(logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """Weighted gradient ascent (WGA; Wang et al. 2025, "Rethinking LLM Unlearning
    Objectives: A Gradient Perspective and Go Beyond", ICLR): gradient ascent with each
    token weighted by its own probability to the power ``beta``.

    ``L = (1/B) * sum_i (1/max(n_i,1)) * sum_t sg(p_it ** beta) * log p_it``

    with ``p_it`` the policy's probability of label token ``t`` of example ``i``
    (:func:`token_logprobs`) and ``sg`` stop-gradient, so the gradient is
    ``p ** beta`` times GA's: tokens already unlikely stop pulling. This is
    open-unlearning's ``compute_wga_loss`` (``-(w * CE)``), reduced per example (it
    takes one mean over every valid token of the batch; equal when lengths are equal).
    ``beta = 0`` is :func:`ga_loss`.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``.
        beta: exponent, ``>= 0``.

    Returns:
        float32 scalar (``<= 0``).
    """
    beta = _check_non_negative("beta", beta)
    return _weighted_ascent(logits, labels, lambda logp: torch.exp(beta * logp))


def satimp_loss(logits: Tensor, labels: Tensor, beta1: float, beta2: float) -> Tensor:
    """SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM
    Unlearning", ICML): gradient ascent with token weights for saturation (``p ** beta1``)
    and importance (``(1 - p) ** beta2``).

    ``L = (1/B) * sum_i (1/max(n_i,1)) * sum_t sg(p_it ** beta1 * (1 - p_it) ** beta2) * log p_it``

    with ``p_it`` the probability of label token ``t`` of example ``i`` and ``sg``
    stop-gradient. This is open-unlearning's ``compute_satimp_loss``, reduced per example
    (it takes one mean over every valid token of the batch). ``beta1 = beta2 = 0`` is
    :func:`ga_loss`; ``beta2 = 0`` is :func:`wga_loss`.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``.
        beta1: saturation exponent, ``>= 0``.
        beta2: importance exponent, ``>= 0``.

    Returns:
        float32 scalar (``<= 0``).
    """
    beta1 = _check_non_negative("beta1", beta1)
    beta2 = _check_non_negative("beta2", beta2)

    def weight(logp: Tensor) -> Tensor:
        # 1 - p = -expm1(log p), accurate when p is near 1
        return torch.exp(beta1 * logp) * torch.pow((-torch.expm1(logp)).clamp(min=0.0), beta2)

    return _weighted_ascent(logits, labels, weight)


def drop_first_answer_tokens(labels: Tensor, n: int) -> Tensor:
    """``labels`` with the first ``n`` valid (not ignored) positions of each row set to
    :data:`IGNORE_INDEX` (CE-U's trick: the first answer tokens are not unlearned).

    Args:
        labels: ``[B, T]`` integer labels.
        n: ``>= 0`` positions to drop per row (0: ``labels`` unchanged).

    Returns:
        a new ``[B, T]`` tensor.
    """
    _check_tensor("labels", labels)
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, T], got shape {tuple(labels.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    valid = labels != IGNORE_INDEX
    first = valid & (valid.long().cumsum(dim=1) <= n)
    return labels.masked_fill(first, IGNORE_INDEX)


def ceu_loss(logits: Tensor, labels: Tensor, ignore_first_n: int = 1) -> Tensor:
    """CE-U, cross-entropy unlearning (Yang et al. 2025, "CE-U: Cross Entropy Unlearning",
    arXiv:2503.01224): cross entropy to the model's own distribution with the true token
    removed.

    For each valid shifted position ``t`` of example ``i`` (after dropping the first
    ``ignore_first_n`` answer tokens, :func:`drop_first_answer_tokens`), with
    ``z = logits[i, t]`` and label ``y``:

    ``q = softmax(sg(z) with z_y = -inf)``,  ``CE_{i,t} = -sum_v q(v) * log_softmax(z)(v)``,

    ``L = (1/B) * sum_i ( sum_t CE_{i,t} / max(n_i, 1) )``.

    Its gradient in ``z`` is ``softmax(z) - q``: it lowers ``p_y`` and is bounded, unlike
    GA's. This is open-unlearning's ``cross_entropy_unlearning_loss`` after
    ``compute_batch_ceu``'s first-token trick, reduced per example (it takes one mean over
    every valid position of the batch).

    Args:
        logits: ``[B, T, V]`` with ``V >= 2``.
        labels: ``[B, T]``.
        ignore_first_n: answer tokens at the start of each example that are not scored.

    Returns:
        float32 scalar (``>= 0``).
    """
    _check_logits_labels(logits, labels)
    if logits.shape[2] < 2:
        raise ValueError(
            f"CE-U needs a vocabulary of >= 2 tokens (the true one is removed), got logits "
            f"shape {tuple(logits.shape)}"
        )
    labels = drop_first_answer_tokens(labels, ignore_first_n)
    shift = labels[:, 1:]
    mask = shift != IGNORE_INDEX
    index = torch.where(mask, shift, torch.zeros_like(shift)).long().unsqueeze(-1)
    z = logits[:, :-1].float()
    with torch.no_grad():
        q = F.softmax(z.detach().scatter(-1, index, float("-inf")), dim=-1)
    ce = -(q * F.log_softmax(z, dim=-1)).sum(-1)  # [B, T-1]
    return _per_example_mean(ce, mask).mean()


# ---------------------------------------------------------------------------
# retain: KL to the reference model
# ---------------------------------------------------------------------------


def kl_loss(logits: Tensor, ref_logits: Tensor, labels: Tensor) -> Tensor:
    """Forward KL from the reference model's next-token distribution.

    For each valid shifted position ``t`` of example ``i`` (``labels[i, t+1]``
    not ignored), with ``p_ref = softmax(ref_logits[i, t])`` and
    ``p_theta = softmax(logits[i, t])``:

    ``KL_{i,t} = sum_v p_ref(v) * (log p_ref(v) - log p_theta(v))``

    ``L = (1/B) * sum_i ( sum_t KL_{i,t} / max(n_i, 1) )``.

    Terms with ``p_ref(v) = 0`` contribute 0. ``ref_logits`` is treated as a
    constant (detached); everything is computed in float32.

    Args:
        logits: ``[B, T, V]`` policy logits.
        ref_logits: ``[B, T, V]`` reference-model logits on the same input.
        labels: ``[B, T]``; only used to select the scored positions.

    Returns:
        float32 scalar, ``>= 0`` (up to rounding).
    """
    _check_logits_labels(logits, labels)
    _check_ref_logits(logits, ref_logits)
    mask = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]
    with torch.no_grad():
        logp_ref = F.log_softmax(ref_logits[:, :-1].detach().float(), dim=-1)
        p_ref = logp_ref.exp()
        support = p_ref > 0
        # sum_v p_ref log p_ref, with 0 * log 0 = 0
        neg_entropy = torch.where(support, p_ref * logp_ref, torch.zeros_like(p_ref)).sum(-1)
        del logp_ref
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V]
    # 0 * (-inf) must not give NaN where both distributions put zero mass.
    cross = (p_ref * logp.masked_fill(~support, 0.0)).sum(-1)  # [B, T-1]
    kl_tok = neg_entropy - cross
    return _per_example_mean(kl_tok, mask).mean()


# ---------------------------------------------------------------------------
# RMU (Li et al. 2024, WMDP): activation steering at one layer
# ---------------------------------------------------------------------------


def rmu_control_vector(
    hidden_size: int, steering_coeff: float, seed: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """RMU control vector: a random direction scaled to norm ``steering_coeff``.

    ``control = c * u / ||u||_2`` with ``u ~ Uniform[0, 1)^H`` drawn (in
    float32, on the CPU) from a ``torch.Generator`` seeded with ``seed``; the
    result is cast to ``dtype``. Deterministic for a given ``(hidden_size,
    seed)``. Move it to the activations' device yourself (the losses below do
    so automatically).

    Args:
        hidden_size: ``H >= 1``.
        steering_coeff: ``c > 0``.
        seed: integer seed.
        dtype: floating dtype of the result.

    Returns:
        ``[H]`` tensor with ``||control||_2 = c`` (up to ``dtype`` rounding).
    """
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be an int >= 1, got {hidden_size!r}")
    coeff = _check_positive("steering_coeff", steering_coeff)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    u = torch.rand(hidden_size, generator=gen, dtype=torch.float32)
    return (coeff * u / u.norm()).to(dtype)


def _check_activations(activations: Tensor, attention_mask: Tensor) -> None:
    _check_tensor("activations", activations)
    _check_tensor("attention_mask", attention_mask)
    if activations.dim() != 3:
        raise ValueError(
            f"activations must have shape [B, T, H], got shape {tuple(activations.shape)}"
        )
    if not activations.is_floating_point():
        raise ValueError(
            f"activations must be a floating-point tensor, got dtype {activations.dtype}"
        )
    if tuple(attention_mask.shape) != tuple(activations.shape[:2]):
        raise ValueError(
            "attention_mask must have shape [B, T] = "
            f"{tuple(activations.shape[:2])} (from activations), got shape "
            f"{tuple(attention_mask.shape)}"
        )
    if activations.shape[0] == 0:
        raise ValueError(
            f"batch must hold at least one example, got activations shape {tuple(activations.shape)}"
        )
    if activations.shape[2] == 0:
        raise ValueError(
            f"hidden size H must be >= 1, got activations shape {tuple(activations.shape)}"
        )


def _rmu_reduce(activations: Tensor, target: Tensor, attention_mask: Tensor) -> Tensor:
    """Per-example mean over real tokens of mean over H of (a - target)^2, then mean over B."""
    sq = (activations.float() - target.float()).pow(2).mean(dim=-1)  # [B, T]
    return _per_example_mean(sq, attention_mask != 0).mean()


def rmu_forget_loss(activations: Tensor, attention_mask: Tensor, control: Tensor) -> Tensor:
    """RMU forget loss: push forget-set activations towards the control vector.

    ``L = (1/B) * sum_i [ (1/max(n_i,1)) * sum_{t: m_it != 0} (1/H) * sum_h (a_ith - c_h)^2 ]``

    with ``n_i`` the number of real tokens (``attention_mask != 0``) of example
    ``i``. Computed in float32.

    Args:
        activations: ``[B, T, H]`` hidden states of the chosen layer (policy).
        attention_mask: ``[B, T]``, nonzero (1) at real tokens.
        control: ``[H]`` control vector (:func:`rmu_control_vector`); constant.

    Returns:
        float32 scalar.
    """
    _check_activations(activations, attention_mask)
    _check_tensor("control", control)
    hidden = activations.shape[2]
    if tuple(control.shape) != (hidden,):
        raise ValueError(
            f"control must have shape [H] = [{hidden}], got shape {tuple(control.shape)}"
        )
    target = control.detach().to(device=activations.device)
    return _rmu_reduce(activations, target, attention_mask)


def rmu_retain_loss(activations: Tensor, ref_activations: Tensor, attention_mask: Tensor) -> Tensor:
    """RMU retain loss: keep retain-set activations at the frozen model's.

    ``L = (1/B) * sum_i [ (1/max(n_i,1)) * sum_{t: m_it != 0} (1/H) * sum_h (a_ith - r_ith)^2 ]``

    with ``r`` the reference (frozen) model's activations at the same layer,
    treated as constant (detached). Computed in float32.

    Args:
        activations: ``[B, T, H]`` policy hidden states.
        ref_activations: ``[B, T, H]`` reference hidden states.
        attention_mask: ``[B, T]``, nonzero (1) at real tokens.

    Returns:
        float32 scalar.
    """
    _check_activations(activations, attention_mask)
    _check_reference("ref_activations", ref_activations, "activations", activations)
    return _rmu_reduce(activations, ref_activations.detach(), attention_mask)
