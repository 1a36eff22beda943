"""Batched teacher-forced answer likelihoods (the NLL side of the TOFU metrics).

Every example is tokenised exactly as in training (:func:`blur_core.data.encode_qa`:
``prompt ids + answer ids + [eos]``, loss on the answer and EOS only), so an
evaluation NLL is the training NLL of the same pair. Examples are sorted by length
and right-padded into batches; each batch is one forward pass (``scoring="padded"``).

The default path (``scoring="auto"``: packed where the model takes a 4D mask) groups
the pairs that share a prompt (TOFU's answer, paraphrase and perturbed answers of one
question), runs each prompt once and packs prompts and answers into rows without
padding (:mod:`blur_core.eval.packing`); the NLLs equal the padded path's within fp32
noise.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import torch

from blur_core.config import require_int
from blur_core.data import IGNORE_INDEX, QAFormat, encode_qa, pad_collate
from blur_core.eval.packing import group_by_prefix, score_packed, supports_packed
from blur_core.losses import sequence_logprobs

__all__ = [
    "SCORING_PATHS",
    "answer_nll",
    "length_sorted_batches",
    "model_device",
    "resolve_scoring",
    "teacher_forced_batches",
]

SCORING_PATHS: tuple[str, ...] = ("auto", "packed", "padded")
"""``packed``: shared prompts, packed rows; ``padded``: one right-padded row per pair;
``auto``: packed when the model takes a 4D attention mask, else padded."""
PACKED_ROW_TOKENS = 256
"""Row length of the packed path: short rows keep the dense attention over a row cheap
(a segment longer than this gets a row of its own)."""


def model_device(model) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a parameterless model)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices ``0..N-1`` grouped into batches of at most ``batch_size``, longest first.

    Sorting by length (stable, descending) keeps examples of similar length together,
    which cuts padding; the first batch holds the longest examples so that running out
    of memory happens at once rather than at the end.

    Raises:
        ValueError: ``batch_size`` is not a positive integer.
    """
    require_int("batch_size", batch_size)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _check_pairs(questions: Sequence[str], answers: Sequence[str]) -> None:
    """Raise ValueError unless ``questions`` and ``answers`` are equally long lists of strings."""
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    for name, texts in (("question", questions), ("answer", answers)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(
                f"{name} {bad} must be a string, got {type(texts[bad]).__name__}: {texts[bad]!r}"
            )


def _encode_all(
    tokenizer, questions: Sequence[str], answers: Sequence[str], fmt: QAFormat, max_length: int
) -> list[dict[str, list[int]]]:
    """:func:`encode_qa` of every pair, warning once (with a count) when answers had
    to be truncated to fit ``max_length``: their NLL then covers only the kept tokens."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    encoded, truncated = [], 0
    for q, a in zip(questions, answers):
        full = encode_qa(tokenizer, q, a, fmt, max_length=sys.maxsize)
        if len(full["input_ids"]) > max_length:
            truncated += 1
            full = encode_qa(tokenizer, q, a, fmt, max_length)  # raises if no answer token fits
        encoded.append(full)
    if truncated:
        warnings.warn(
            f"{truncated} of {len(encoded)} examples exceed max_length={max_length} tokens; "
            "their answers were truncated and scored on the kept tokens only",
            stacklevel=3,
        )
    return encoded


def teacher_forced_batches(
    model,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    fmt: QAFormat,
    batch_size: int,
    max_length: int,
):
    """Yield ``(indices, logits [B, T, V], labels [B, T])`` for QA pairs encoded as in
    training (:func:`_encode_all`), length-sorted and right-padded, one forward pass per
    batch; ``indices`` are the batch rows' positions in the inputs. Call under
    ``torch.no_grad()``. The shared loop of :func:`answer_nll` and
    :func:`blur_core.eval.mia.qa_memorisation`.
    """
    _check_pairs(questions, answers)
    encoded = _encode_all(tokenizer, questions, answers, fmt, max_length)
    if not encoded:
        return
    model.eval()
    device = model_device(model)
    for batch in length_sorted_batches([len(e["input_ids"]) for e in encoded], batch_size):
        padded = pad_collate([encoded[i] for i in batch], tokenizer.pad_token_id)
        logits = model(
            input_ids=padded["input_ids"].to(device),
            attention_mask=padded["attention_mask"].to(device),
        ).logits
        yield batch, logits, padded["labels"].to(logits.device)


def resolve_scoring(model, scoring: str) -> str:
    """``"packed"`` or ``"padded"`` for ``scoring`` (one of :data:`SCORING_PATHS`).

    Raises:
        ValueError: an unknown ``scoring``.
    """
    if scoring not in SCORING_PATHS:
        raise ValueError(f"scoring must be one of {list(SCORING_PATHS)}, got {scoring!r}")
    if scoring == "auto":
        return "packed" if supports_packed(model) else "padded"
    return scoring


def _split_prompt(encoded: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """``(prompt ids, scored ids)`` of an :func:`encode_qa` example (labels -100 on the prompt)."""
    n_prompt = next(
        (t for t, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX),
        len(encoded["labels"]),
    )
    return encoded["input_ids"][:n_prompt], encoded["input_ids"][n_prompt:]


def _packed_answer_nll(model, tokenizer, encoded, batch_tokens: int) -> torch.Tensor:
    """Mean answer NLL of each encoded pair, prompts shared (:func:`score_packed`)."""
    requests, where = group_by_prefix([_split_prompt(e) for e in encoded])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums, counts = score_packed(
        model,
        requests,
        pad,
        row_tokens=min(PACKED_ROW_TOKENS, batch_tokens),
        batch_tokens=batch_tokens,
    )
    return torch.tensor([-sums[r][k] / counts[r][k] for r, k in where], dtype=torch.float32)


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    fmt: QAFormat = QAFormat(),
    batch_size: int = 32,
    max_length: int = 256,
    scoring: str = "auto",
    batch_tokens: int = 2048,
) -> torch.Tensor:
    """Per-example mean negative log-likelihood of each answer given its question.

    ``nll_i = -(1/n_i) * sum_t log p(a_t | prompt_i, a_<t)`` over the ``n_i`` answer
    tokens of example ``i`` (answer + EOS, as in training; truncated to ``max_length``
    tokens in all). ``exp(-nll_i)`` is TOFU's answer probability.

    Args:
        model: a causal LM returning ``.logits`` ``[B, T, V]``; put in eval mode.
        tokenizer: its tokenizer (``pad_token_id`` must be set).
        questions, answers: ``N`` strings each.
        fmt: prompt format, the same as used in training.
        batch_size: examples per forward pass (padded path).
        max_length: token limit per example (prompt + answer + EOS).
        scoring: one of :data:`SCORING_PATHS`.
        batch_tokens: tokens per forward pass (packed path; rows hold <= :data:`PACKED_ROW_TOKENS`).

    Returns:
        float32 CPU tensor ``[N]``, in the order of the inputs. A ``UserWarning`` counts
        the examples whose answer had to be truncated to fit ``max_length``.

    Raises:
        ValueError: mismatched lengths, a non-string input, a bad ``batch_size``, or a
            prompt that leaves no room for the answer within ``max_length``.
    """
    if resolve_scoring(model, scoring) == "packed":
        require_int("batch_size", batch_size)
        _check_pairs(questions, answers)
        encoded = _encode_all(tokenizer, questions, answers, fmt, max_length)
        if not encoded:
            return torch.empty(0, dtype=torch.float32)
        return _packed_answer_nll(model, tokenizer, encoded, batch_tokens)
    out = torch.empty(len(questions), dtype=torch.float32)
    for batch, logits, labels in teacher_forced_batches(
        model, tokenizer, questions, answers, fmt, batch_size, max_length
    ):
        seq_logprob, n_tokens = sequence_logprobs(logits, labels)
        out[torch.tensor(batch)] = (-seq_logprob / n_tokens.clamp(min=1.0)).float().cpu()
    return out
