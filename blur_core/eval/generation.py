"""Batched greedy answers to questions, prompted exactly as in training.

Prompts come from :func:`blur_core.data.encode_prompt` (the training prompt, chat
template or ``fmt.prompt_template``). A batch is LEFT-padded, so every prompt ends at
the last column and the new tokens of all rows line up; ``model.generate`` derives
position ids from the attention mask, so a padded row decodes like the same prompt
alone.

With a plain greedy generation config (no repetition penalty or other logits
processor; :func:`plain_greedy`) our own loop decodes instead of ``model.generate``:
the same argmax steps from the KV cache, but a row that has produced EOS leaves the
batch (its cache rows are dropped), so finished rows cost nothing and the loop ends
when every row is done.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blur_core.config import require_int
from blur_core.data import QAFormat, encode_prompt
from blur_core.eval.likelihood import length_sorted_batches, model_device

__all__ = [
    "DECODERS",
    "generate_from_ids",
    "greedy_decode",
    "greedy_generate",
    "left_pad",
    "plain_greedy",
]

DECODERS: tuple[str, ...] = ("auto", "generate")
"""``auto``: our loop when :func:`plain_greedy`, else ``model.generate``; ``generate``:
always ``model.generate`` (every row runs until the last one ends)."""

_NEUTRAL_GENERATION = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
}
"""Generation settings under which greedy decoding is a plain argmax of the logits."""


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
    decoder: str = "auto",
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
        decoder: one of :data:`DECODERS`.

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
        for text in generate_from_ids(
            model, tokenizer, prompts, batch_size, max_new_tokens, decoder=decoder
        )
    ]


def plain_greedy(model) -> bool:
    """Whether ``model.generation_config`` leaves greedy decoding a plain argmax (every
    setting of :data:`_NEUTRAL_GENERATION` at a neutral value)."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return False
    return all(getattr(config, k, None) in ok for k, ok in _NEUTRAL_GENERATION.items())


def _eos_ids(model, tokenizer) -> set[int]:
    """EOS ids that end a row: ``model.generation_config.eos_token_id`` (int or list), as
    ``model.generate`` reads them (none: rows run to ``max_new_tokens``)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


@torch.no_grad()
def greedy_decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: set[int],
) -> list[list[int]]:
    """Greedy new tokens of each left-padded row, EOS included; finished rows leave the batch.

    Step 0 runs the prompts (position ids from the mask, as ``generate``); each later
    step feeds the last token of the rows still running from the KV cache. A row stops
    after an EOS token or ``max_new_tokens`` tokens; its cache rows are dropped then.
    """
    device = input_ids.device
    rows = torch.arange(input_ids.shape[0], device=device)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    cache, next_pos = out.past_key_values, positions[:, -1:] + 1
    new: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        tokens = out.logits[:, -1, :].float().argmax(-1)
        for r, t in zip(rows.tolist(), tokens.tolist()):
            new[r].append(t)
        running = ~torch.isin(tokens, eos)
        if step == max_new_tokens - 1 or not bool(running.any()):
            break
        if not bool(running.all()):
            keep = running.nonzero().flatten()
            cache.batch_select_indices(keep)
            rows, tokens = rows[keep], tokens[keep]
            attention_mask, next_pos = attention_mask[keep], next_pos[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], -1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=attention_mask,
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        next_pos = next_pos + 1
    return new


@torch.no_grad()
def generate_from_ids(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    max_new_tokens: int,
    decoder: str = "auto",
    **decode_kwargs,
) -> list[str]:
    """Greedy continuations of tokenised prompts, in length-sorted left-padded batches.

    ``model.generate(do_sample=False, num_beams=1, max_new_tokens=...)`` with the
    attention mask (position ids follow it), stopping a row at EOS; only the new tokens
    are decoded, with ``skip_special_tokens=True`` and ``decode_kwargs`` (e.g.
    ``clean_up_tokenization_spaces``). The shared core of :func:`greedy_generate` (QA
    prompts) and :func:`blur_core.eval.muse.generate_raw` (raw-text prompts).

    ``decoder`` (:data:`DECODERS`): ``"auto"`` uses :func:`greedy_decode` (finished
    rows leave the batch) when :func:`plain_greedy`, ``"generate"`` always
    ``model.generate``.

    Returns:
        ``N`` decoded strings (not stripped) in the order of ``prompts``.

    Raises:
        ValueError: an unknown ``decoder``.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {list(DECODERS)}, got {decoder!r}")
    own_loop = decoder == "auto" and plain_greedy(model)
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    device = model_device(model)
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        input_ids, attention_mask = left_pad([prompts[i] for i in batch], tokenizer.pad_token_id)
        if own_loop:
            new = greedy_decode(
                model,
                input_ids.to(device),
                attention_mask.to(device),
                max_new_tokens,
                _eos_ids(model, tokenizer),
            )
            texts = tokenizer.batch_decode(new, skip_special_tokens=True, **decode_kwargs)
            for i, text in zip(batch, texts):
                outputs[i] = text
            continue
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
