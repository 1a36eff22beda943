"""Batched greedy answers to questions, prompted exactly as in training.

Prompts come from :func:`blur_core.data.encode_prompt` (the training prompt, chat
template or ``fmt.prompt_template``). A batch is LEFT-padded, so every prompt ends at
the last column and the new tokens of all rows line up; ``model.generate`` derives
position ids from the attention mask, so a padded row decodes like the same prompt
alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blur_core.config import require_int
from blur_core.data import QAFormat, encode_prompt
from blur_core.eval.likelihood import length_sorted_batches, model_device

__all__ = ["generate_from_ids", "greedy_generate", "left_pad"]


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into ``(input_ids [B, T], attention_mask [B, T])``.

    ``T`` is the longest length; row ``b`` holds ``pad_token_id`` in its first
    ``T - len_b`` columns (mask 0) and its tokens in the last ``len_b`` (mask 1).

    Raises:
        ValueError: no sequences, an empty sequence, or ``pad_token_id`` is None.
    """
    if len(sequences) == 0:
        raise ValueError("left_pad got no sequences")
    if pad_token_id is None:
        raise ValueError("left_pad needs a pad_token_id, got None")
    empty = next((b for b, s in enumerate(sequences) if len(s) == 0), None)
    if empty is not None:
        raise ValueError(f"sequence {empty} is empty; a prompt needs at least one token")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for b, seq in enumerate(sequences):
        input_ids[b, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
        attention_mask[b, width - len(seq) :] = 1
    return input_ids, attention_mask


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    questions: Sequence[str],
    fmt: QAFormat = QAFormat(),
    batch_size: int = 32,
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy answers to ``questions``, generated in left-padded batches.

    Each answer is ``argmax`` decoding (``do_sample=False``, one beam; other settings
    of ``model.generation_config`` such as a repetition penalty still apply) of at
    most ``max_new_tokens`` tokens after the training prompt, stopping at EOS. Only
    the new tokens are decoded (special tokens skipped) and the text is stripped.

    Args:
        model: a causal LM with ``generate``; put in eval mode.
        tokenizer: its tokenizer (``pad_token_id`` must be set).
        questions: ``N`` strings.
        fmt: prompt format, the same as used in training.
        batch_size: prompts per ``generate`` call (prompts are sorted by length).
        max_new_tokens: answer length cap in tokens.

    Returns:
        ``N`` answer strings in the order of ``questions``.

    Raises:
        ValueError: a non-string question, a bad ``batch_size``/``max_new_tokens``, or
            a tokenizer without ``pad_token_id``.
    """
    bad = next((i for i, q in enumerate(questions) if not isinstance(q, str)), None)
    if bad is not None:
        raise ValueError(f"question {bad} must be a string, got {type(questions[bad]).__name__}")
    require_int("max_new_tokens", max_new_tokens)
    if tokenizer.pad_token_id is None:
        raise ValueError("greedy_generate needs tokenizer.pad_token_id (see models.load_tokenizer)")
    prompts = [encode_prompt(tokenizer, q, fmt) for q in questions]
    return [
        text.strip()
        for text in generate_from_ids(model, tokenizer, prompts, batch_size, max_new_tokens)
    ]


@torch.no_grad()
def generate_from_ids(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    max_new_tokens: int,
    **decode_kwargs,
) -> list[str]:
    """Greedy continuations of tokenised prompts, in length-sorted left-padded batches.

    ``model.generate(do_sample=False, num_beams=1, max_new_tokens=...)`` with the
    attention mask (position ids follow it), stopping a row at EOS; only the new tokens
    are decoded, with ``skip_special_tokens=True`` and ``decode_kwargs`` (e.g.
    ``clean_up_tokenization_spaces``). The shared core of :func:`greedy_generate` (QA
    prompts) and :func:`blur_core.eval.muse.generate_raw` (raw-text prompts).

    Returns:
        ``N`` decoded strings (not stripped) in the order of ``prompts``.
    """
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    device = model_device(model)
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        input_ids, attention_mask = left_pad([prompts[i] for i in batch], tokenizer.pad_token_id)
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(
            output[:, input_ids.shape[1] :].cpu(), skip_special_tokens=True, **decode_kwargs
        )
        for i, text in zip(batch, texts):
            outputs[i] = text
    return outputs
