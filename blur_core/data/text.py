"""Raw-text language-modelling examples from a corpus: every token of an example is scored.

Three ways to cut a list of documents into training examples (``data.text_chunking``):

* ``concat`` -- documents tokenised one by one without special tokens, EOS after each
  (when the tokenizer has one), concatenated, cut into consecutive chunks of exactly
  ``max_length`` tokens; a final partial chunk is kept if it has >= 16 tokens or is the
  only chunk.
* ``muse`` -- MUSE's own training data (``swj0419/muse_bench``,
  ``baselines/baselines/dataset.py``, ``DefaultDataset`` on a ``.txt`` file, with its
  default ``add_bos_token=True``): the documents are joined with ``"\\n\\n"`` back into the
  raw corpus text (the MUSE loader here splits ``raw/forget.txt`` on exactly that, so the
  text is the file's), tokenised once without special tokens, and cut into windows of
  ``max_length - 1`` tokens with **stride ``max_length - 1`` (no overlap)**, each
  prefixed with BOS, so every chunk has ``max_length`` tokens (MUSE-News uses
  ``MAX_LEN=2048``). A short last window is filled up to ``max_length`` by wrapping around
  to the start of the first chunk (its BOS included), as MUSE "rotates" it.
* ``document`` -- one example per document, tokenised with the tokenizer's special tokens
  (BOS for Llama-style tokenizers) and truncated on the right to ``max_length`` tokens:
  the RMU / WMDP convention (``tokenizer(batch, truncation=True, max_length=512)`` with
  ``truncation_side = "right"``; 512 for bio, 768 for cyber, 512 for the retain corpus).
  Examples have different lengths; the collator pads them and padding is never scored.

Labels equal the input ids, so every position except the first (which nothing predicts)
is scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

__all__ = [
    "CHUNKING_MODES",
    "MIN_LAST_CHUNK",
    "MUSE_JOIN",
    "TextChunkDataset",
    "chunk_ids",
    "concat_token_ids",
    "document_chunks",
    "muse_chunks",
]

MIN_LAST_CHUNK = 16
CHUNKING_MODES = ("concat", "muse", "document")
MUSE_JOIN = "\n\n"
"""The separator ``muse`` chunking joins documents with (what the MUSE loader split on)."""


def _check_max_length(max_length: int, minimum: int = 1) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < minimum:
        raise ValueError(f"max_length must be an integer >= {minimum}, got {max_length!r}")


def concat_token_ids(texts: Sequence[str], tokenizer) -> list[int]:
    """Token ids of all ``texts`` concatenated, with EOS after each document.

    Texts are tokenised without special tokens; EOS is inserted only if the
    tokenizer defines ``eos_token_id``.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for text in texts:
        ids.extend(int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
    return ids


def chunk_ids(
    ids: Sequence[int], max_length: int, min_last: int = MIN_LAST_CHUNK
) -> list[list[int]]:
    """Cut ``ids`` into consecutive chunks of exactly ``max_length`` tokens.

    A final partial chunk is kept if it has ``>= min_last`` tokens or is the only chunk.
    """
    _check_max_length(max_length)
    chunks = [list(ids[i : i + max_length]) for i in range(0, len(ids), max_length)]
    if len(chunks) > 1 and len(chunks[-1]) < min(min_last, max_length):
        chunks.pop()
    return chunks


def muse_chunks(ids: Sequence[int], max_length: int, bos_id: int) -> list[list[int]]:
    """MUSE's chunking of one token stream (``DefaultDataset``, ``add_bos_token=True``).

    With ``W = max_length - 1``: chunk ``k`` is ``[bos] + ids[k*W : (k+1)*W]`` for
    ``k = 0 .. ceil(n / W) - 1`` (stride ``W``, no overlap). If the last chunk is shorter
    than ``max_length`` it becomes ``(last + first)[:max_length]``, the first chunk's BOS
    and tokens filling it. So every chunk has ``max_length`` tokens unless the whole
    stream is shorter than ``(max_length - 1) / 2`` tokens.

    Raises:
        ValueError: ``max_length < 2``, no ``bos_id`` or an empty stream.
    """
    _check_max_length(max_length, 2)
    if bos_id is None:
        raise ValueError("muse chunking needs a tokenizer with a BOS token (bos_token_id is None)")
    if len(ids) == 0:
        raise ValueError("muse chunking got an empty token stream")
    width = max_length - 1
    chunks = [[int(bos_id), *ids[i : i + width]] for i in range(0, len(ids), width)]
    if len(chunks[-1]) < max_length:
        chunks[-1] = (chunks[-1] + chunks[0])[:max_length]
    return [[int(t) for t in c] for c in chunks]


def document_chunks(texts: Sequence[str], tokenizer, max_length: int) -> list[list[int]]:
    """One example per document, tokenised as RMU does:
    ``tokenizer(text, truncation=True, max_length=max_length)`` with the tokenizer's special
    tokens and right-side truncation (RMU sets ``truncation_side = "right"``; so does this,
    for the call only), so a tokenizer that appends EOS keeps it after the cut."""
    _check_max_length(max_length)
    side = getattr(tokenizer, "truncation_side", "right")
    tokenizer.truncation_side = "right"
    try:
        encoded = [
            tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length)
            for text in texts
        ]
    finally:
        tokenizer.truncation_side = side
    return [[int(t) for t in enc["input_ids"]] for enc in encoded]


class TextChunkDataset(Dataset):
    """Training examples cut from a corpus (``chunking``: see the module docstring).

    Item ``i`` is ``{"input_ids": LongTensor[T], "labels": LongTensor[T], "index": i}``
    with ``labels == input_ids`` (every position is scored) and ``T <= max_length``.

    Raises:
        ValueError: ``texts`` is a single string, an unknown ``chunking``, or the texts
            give no tokens (an empty document in ``document`` mode names its index).
    """

    def __init__(self, texts: Sequence[str], tokenizer, max_length: int, chunking: str = "concat"):
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not a single string")
        if chunking not in CHUNKING_MODES:
            raise ValueError(f"unknown chunking {chunking!r}; expected one of {CHUNKING_MODES}")
        _check_max_length(max_length)
        self.max_length = max_length
        self.chunking = chunking
        if chunking == "document":
            chunks = document_chunks(texts, tokenizer, max_length)
            empty = next((i for i, c in enumerate(chunks) if not c), None)
            if empty is not None:
                raise ValueError(f"document {empty} tokenised to no tokens")
        else:
            if chunking == "muse":
                ids = tokenizer(MUSE_JOIN.join(texts), add_special_tokens=False, verbose=False)[
                    "input_ids"
                ]
            else:
                ids = concat_token_ids(texts, tokenizer)
            if not ids:
                raise ValueError(f"the {len(texts)} text(s) tokenised to no tokens")
            if chunking == "muse":
                chunks = muse_chunks(ids, max_length, getattr(tokenizer, "bos_token_id", None))
            else:
                chunks = chunk_ids(ids, max_length)
        self._chunks = [torch.tensor(c, dtype=torch.long) for c in chunks]

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, i: int) -> dict:
        if not -len(self._chunks) <= i < len(self._chunks):
            raise IndexError(
                f"index {i} out of range for TextChunkDataset of size {len(self._chunks)}"
            )
        i = i % len(self._chunks)
        chunk = self._chunks[i]
        return {"input_ids": chunk, "labels": chunk.clone(), "index": i}
