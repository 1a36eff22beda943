"""Membership inference (MIA) scores and teacher-forced memorisation of QA pairs.

One batched forward pass per batch of texts (:func:`token_statistics`) gives, for every
scored position ``t = 1..T-1`` of a text ``x`` (tokenised with ``add_special_tokens=True``),

* ``logp_t = log p(x_t | x_<t)``;
* ``mu_t = sum_v p_v log p_v`` and ``sigma_t^2 = sum_v p_v (log p_v)^2 - mu_t^2``, the
  mean and variance of ``log p_v`` under the model's next-token distribution ``p = p(. | x_<t)``
  (Min-K%++, Zhang et al. 2024).

From these, four per-text scores, all oriented so that **higher = more member-like**
(:func:`scores_from_stats`):

* ``loss``  = ``(1/n) sum_t logp_t`` (= -mean NLL; Yeom et al.);
* ``zlib``  = ``loss / zlib_bytes(text)``, where ``zlib_bytes = len(zlib.compress(text.encode("utf-8")))``.
  Carlini et al. (2021) use ``NLL / zlib_bytes`` with *lower* = member; this is its negative;
* ``mink``  = mean of the ``max(1, int(k n))`` lowest ``logp_t`` (Min-K%, Shi et al. 2024;
  MUSE's ``Min-40%`` score is ``-mink`` with ``k = 0.4``);
* ``minkpp`` = mean of the ``max(1, int(k n))`` lowest ``(logp_t - mu_t) / sigma_t``.

AUC orientation: :func:`auc` treats **members as the positive class**, so 1.0 = members
perfectly identified, 0.5 = indistinguishable. MUSE's PrivLeak AUC
(:func:`blur_core.eval.muse.muse_privleak_auc`) is the opposite orientation: computed from
the same Min-K scores with the forget set as ``member_scores`` and the holdout set as
``nonmember_scores`` it equals ``1 - auc(...)``.

Memorisation (:func:`qa_memorisation`), teacher-forced on the answer tokens of QA pairs
encoded exactly as in training (:func:`blur_core.data.encode_qa`: answer + EOS):

* exact memorisation ``EM_i = (1/n) sum_j [argmax_v p(v | prefix_<j) = a_j]``;
* extraction strength ``ES_i = 1 - k*/n``, ``k*`` = the smallest ``k`` such that the argmax
  predictions at answer positions ``k..n-1`` all equal the true tokens (``k* = n`` when the
  last token is wrong, so ``ES = 0``; all correct: ``k* = 0``, ``ES = 1``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from blur_core.config import require_int
from blur_core.data import IGNORE_INDEX, QAFormat
from blur_core.eval.likelihood import length_sorted_batches, model_device, teacher_forced_batches

__all__ = [
    "MIA_SCORES",
    "TokenStats",
    "auc",
    "memorisation_from_logits",
    "mia_suite",
    "min_k",
    "min_k_plus_plus",
    "qa_memorisation",
    "scores_from_stats",
    "token_statistics",
    "zlib_bytes",
]

MIA_SCORES: tuple[str, ...] = ("loss", "zlib", "mink", "minkpp")
"""Per-text MIA scores, all higher = more member-like."""

_SIGMA_EPS = 1e-12  # sigma_t = 0 only for a one-hot distribution; keeps (logp - mu)/sigma finite


@dataclass
class TokenStats:
    """Per-position statistics of one text (length ``n`` = scored tokens = ``T - 1``).

    Attributes:
        logprob: float64 ``[n]``, ``log p(x_t | x_<t)`` for ``t = 1..T-1``.
        mu: float64 ``[n]``, ``sum_v p_v log p_v``.
        sigma: float64 ``[n]``, ``sqrt(sum_v p_v (log p_v)^2 - mu^2)``, computed (float32)
            as ``sqrt(sum_v p_v (log p_v - mu)^2)``.
        truncated: whether the text had more than ``max_length`` tokens (only the first
            ``max_length`` were scored).
    """

    logprob: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return int(self.logprob.numel())


def _check_k(k) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 < float(k) <= 1.0:
        raise ValueError(f"k must be a number in (0, 1], got {k!r}")
    return float(k)


def _check_texts(name: str, texts: Sequence[str]) -> None:
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"{name} {bad} must be a string, got {type(texts[bad]).__name__}")


def _n_lowest(n: int, k: float) -> int:
    """``max(1, int(k * n))``: how many lowest values Min-K% averages over ``n`` tokens."""
    return max(1, int(k * n))


@torch.no_grad()
def token_statistics(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 4,
    max_length: int = 2048,
) -> list[TokenStats]:
    """Token log-probs and next-token distribution moments of every text, batched.

    Each text is tokenised with ``add_special_tokens=True`` and cut to its first
    ``max_length`` tokens. Texts are sorted by length and right-padded (attention mask 0
    on padding) into batches of ``batch_size``; one forward pass per batch gives logits
    ``[B, T, V]``. For row ``b`` with ``L_b`` real tokens, positions ``0..L_b-2`` predict
    tokens ``1..L_b-1``: ``logp = log_softmax(logits[b, :L_b-1])`` ``[L_b-1, V]``, gathered at
    the next tokens, with ``mu`` and ``sigma`` as in the module docstring. Rows are reduced
    one at a time so that no ``[B, T, V]`` float64/softmax copy outlives its row; the logits
    of a batch are freed before the next batch.

    Returns:
        ``N`` :class:`TokenStats` in input order (CPU, float64).

    Raises:
        ValueError: a non-string text, a text with fewer than 2 tokens (nothing to score;
            the message names its index), a bad ``batch_size`` or ``max_length``, or a
            tokenizer without ``pad_token_id``.
    """
    _check_texts("text", texts)
    require_int("batch_size", batch_size)
    require_int("max_length", max_length, minimum=2)
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "token_statistics needs tokenizer.pad_token_id (see models.load_tokenizer)"
        )
    encoded = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    truncated = [len(ids) > max_length for ids in encoded]
    encoded = [list(ids[:max_length]) for ids in encoded]
    short = next((i for i, ids in enumerate(encoded) if len(ids) < 2), None)
    if short is not None:
        raise ValueError(
            f"text {short} has {len(encoded[short])} token(s); at least 2 are needed to "
            f"score one: {texts[short][:60]!r}"
        )
    out: list[TokenStats | None] = [None] * len(encoded)
    model.eval()
    device = model_device(model)
    for batch in length_sorted_batches([len(e) for e in encoded], batch_size):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), int(tokenizer.pad_token_id), dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : len(encoded[i])] = torch.as_tensor(encoded[i], dtype=torch.long)
            attention_mask[row, : len(encoded[i])] = 1
        logits = model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
        ).logits
        for row, i in enumerate(batch):
            n = len(encoded[i]) - 1
            logp_all = torch.log_softmax(logits[row, :n].float(), dim=-1)  # [n, V]
            targets = input_ids[row, 1 : n + 1].to(logp_all.device)
            logprob = logp_all.gather(-1, targets[:, None]).squeeze(-1)
            p = logp_all.exp()
            mu = (p * logp_all).sum(-1)
            # sum_v p_v (log p_v - mu)^2 == sum_v p_v (log p_v)^2 - mu^2, without the float32
            # cancellation of the one-pass form when sigma is small
            sigma = (p * (logp_all - mu[:, None]).square()).sum(-1).sqrt()
            out[i] = TokenStats(
                logprob=logprob.double().cpu(),
                mu=mu.double().cpu(),
                sigma=sigma.double().cpu(),
                truncated=truncated[i],
            )
            del logp_all, p
        del logits
    return out  # type: ignore[return-value]


def min_k(logprob, k: float = 0.4) -> float:
    """Min-K% score: the mean of the ``max(1, int(k n))`` lowest token log-probs (higher = member).

    Example: ``[-1, -5, -2, -4, -3]``, ``k = 0.4`` -> mean(-5, -4) = -4.5.

    Raises:
        ValueError: empty ``logprob`` or ``k`` outside (0, 1].
    """
    k = _check_k(k)
    lp = torch.as_tensor(logprob, dtype=torch.float64).flatten()
    if lp.numel() == 0:
        raise ValueError("min_k got no token log-probs")
    lowest = torch.sort(lp).values[: _n_lowest(lp.numel(), k)]
    return float(lowest.mean())


def min_k_plus_plus(logprob, mu, sigma, k: float = 0.4) -> float:
    """Min-K%++ score: the mean of the ``max(1, int(k n))`` lowest ``(logp_t - mu_t) / sigma_t``.

    ``sigma_t`` is clamped to at least 1e-12 (it is 0 only for a one-hot distribution).

    Raises:
        ValueError: empty or mismatched inputs, or ``k`` outside (0, 1].
    """
    k = _check_k(k)
    lp, m, s = (torch.as_tensor(x, dtype=torch.float64).flatten() for x in (logprob, mu, sigma))
    if not (lp.numel() == m.numel() == s.numel()):
        raise ValueError(
            f"logprob, mu and sigma differ in length: {lp.numel()}, {m.numel()}, {s.numel()}"
        )
    if lp.numel() == 0:
        raise ValueError("min_k_plus_plus got no token log-probs")
    z = (lp - m) / s.clamp(min=_SIGMA_EPS)
    return float(torch.sort(z).values[: _n_lowest(z.numel(), k)].mean())


def zlib_bytes(text: str) -> int:
    """``len(zlib.compress(text.encode("utf-8")))``: Carlini et al.'s zlib entropy of ``text``."""
    if not isinstance(text, str):
        raise ValueError(f"zlib_bytes needs a string, got {type(text).__name__}")
    return len(zlib.compress(text.encode("utf-8")))


def scores_from_stats(stats: TokenStats, text: str, k: float = 0.4) -> dict[str, float]:
    """The four MIA scores of one text (higher = more member-like) and ``n_tokens``.

    ``loss = mean(logp)``, ``zlib = loss / zlib_bytes(text)``, ``mink = min_k(logp, k)``,
    ``minkpp = min_k_plus_plus(logp, mu, sigma, k)``; see the module docstring.
    """
    loss = float(stats.logprob.mean())
    return {
        "loss": loss,
        "zlib": loss / zlib_bytes(text),
        "mink": min_k(stats.logprob, k),
        "minkpp": min_k_plus_plus(stats.logprob, stats.mu, stats.sigma, k),
        "n_tokens": stats.n_tokens,
        "truncated": bool(stats.truncated),
    }


def _finite_score_arrays(caller: str, *named_scores):
    """Each ``(name, scores)`` as a flat float64 array; ValueError for an empty set or a
    non-finite score (naming ``caller``, the set and the index)."""
    import numpy as np

    arrays = [np.asarray(scores, dtype=np.float64).ravel() for _, scores in named_scores]
    if any(a.size == 0 for a in arrays):
        sizes = " and ".join(str(a.size) for a in arrays)
        raise ValueError(
            f"{caller} needs {' and '.join(n for n, _ in named_scores)} scores, got {sizes}"
        )
    for (name, _), arr in zip(named_scores, arrays):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name} score {int(bad[0])} is not finite: {arr[bad[0]]}")
    return arrays


def auc(member_scores, nonmember_scores) -> float:
    """ROC AUC with members as the positive class: ``P(s_member > s_nonmember) + 0.5 P(tie)``.

    ``sklearn.metrics.roc_auc_score`` with labels 1 for members, 0 for non-members; 1.0 =
    members perfectly identified (all score higher), 0.5 = indistinguishable, 0.0 = reversed.

    Raises:
        ValueError: either set is empty or a score is not finite.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    m, nm = _finite_score_arrays("auc", ("member", member_scores), ("nonmember", nonmember_scores))
    y = np.concatenate([np.ones(m.size), np.zeros(nm.size)])
    return float(roc_auc_score(y, np.concatenate([m, nm])))


def mia_suite(
    model,
    tokenizer,
    member_texts: Sequence[str],
    nonmember_texts: Sequence[str],
    k: float = 0.4,
    batch_size: int = 4,
    max_length: int = 2048,
) -> dict:
    """LOSS / zlib / Min-K% / Min-K%++ membership inference of ``member_texts`` vs ``nonmember_texts``.

    One :func:`token_statistics` pass over all texts, then :func:`scores_from_stats` per
    text and :func:`auc` per score (members positive: 1.0 = the member set, e.g. the
    forget set, is perfectly identified; 0.5 = indistinguishable).

    Returns:
        ``{"auc": {"loss", "zlib", "mink", "minkpp"}, "per_example": {"member": [{loss, zlib,
        mink, minkpp, n_tokens, truncated}], "nonmember": [...]}, "settings": {k, max_length}}``.

    Raises:
        ValueError: empty sets, non-string texts, a text with < 2 tokens, bad ``k``.
    """
    k = _check_k(k)
    _check_texts("member text", member_texts)
    _check_texts("nonmember text", nonmember_texts)
    if not member_texts or not nonmember_texts:
        raise ValueError(
            f"mia_suite needs member and non-member texts, got {len(member_texts)} "
            f"and {len(nonmember_texts)}"
        )
    texts = list(member_texts) + list(nonmember_texts)
    stats = token_statistics(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    rows = [scores_from_stats(s, t, k) for s, t in zip(stats, texts)]
    members, nonmembers = rows[: len(member_texts)], rows[len(member_texts) :]
    return {
        "auc": {
            name: auc([r[name] for r in members], [r[name] for r in nonmembers])
            for name in MIA_SCORES
        },
        "per_example": {"member": members, "nonmember": nonmembers},
        "settings": {"k": k, "max_length": max_length},
    }


def memorisation_from_logits(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact memorisation and extraction strength per row from teacher-forced logits.

    Position ``t`` of ``logits`` ``[B, T, V]`` predicts ``labels[:, t+1]`` ``[B, T]``;
    labelled positions (``!= -100``) are the answer tokens, ``n_i`` of them in row ``i``.
    ``correct = argmax(logits[:, :-1]) == labels[:, 1:]`` on those positions;
    ``EM_i = mean(correct)``; ``ES_i = L_i / n_i`` with ``L_i`` the length of the trailing run
    of correct answer tokens (``= 1 - k*/n``). Rows with no answer token get NaN.

    Returns:
        ``(em, es)``, float64 CPU ``[B]`` each.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    pred = logits[:, :-1].argmax(dim=-1)
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    correct = (pred == target) & mask
    n = mask.sum(dim=1).double()
    em = correct.sum(dim=1).double() / n
    # trailing run: walk from the right treating unlabelled (padding) positions as correct,
    # so the run passes through right padding and stops at the last wrong answer token
    run = torch.cumprod((correct | ~mask).flip(1).long(), dim=1)
    trailing = (run * mask.flip(1).long()).sum(dim=1).double()
    es = trailing / n
    nan = torch.full_like(n, math.nan)
    return torch.where(n > 0, em, nan).cpu(), torch.where(n > 0, es, nan).cpu()


@torch.no_grad()
def qa_memorisation(
    model,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    fmt: QAFormat = QAFormat(),
    batch_size: int = 32,
    max_length: int = 256,
) -> dict[str, list[float]]:
    """Teacher-forced exact memorisation (EM) and extraction strength (ES) of each answer.

    Pairs are encoded as in training (:func:`blur_core.data.encode_qa`, answer + EOS as the
    labelled tokens; truncated to ``max_length`` with a warning, like
    :func:`blur_core.eval.likelihood.answer_nll`), length-sorted, right-padded with
    :func:`blur_core.data.pad_collate`, one forward pass per batch; EM/ES from
    :func:`memorisation_from_logits`.

    Returns:
        ``{"em": [N], "es": [N]}`` floats in input order.
    """
    em = [math.nan] * len(questions)
    es = [math.nan] * len(questions)
    for batch, logits, labels in teacher_forced_batches(
        model, tokenizer, questions, answers, fmt, batch_size, max_length
    ):
        b_em, b_es = memorisation_from_logits(logits, labels)
        for row, i in enumerate(batch):
            em[i], es[i] = float(b_em[row]), float(b_es[row])
    return {"em": em, "es": es}
