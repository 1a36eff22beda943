"""Raw-text language-modelling chunks (MUSE-style corpora): every token is scored."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

MIN_LAST_CHUNK = 16


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
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    chunks = [list(ids[i : i + max_length]) for i in range(0, len(ids), max_length)]
    if len(chunks) > 1 and len(chunks[-1]) < min(min_last, max_length):
        chunks.pop()
    return chunks


class TextChunkDataset(Dataset):
    """Fixed-length chunks of a tokenised corpus.

    Item ``i`` is ``{"input_ids": LongTensor[T], "labels": LongTensor[T], "index": i}``
    with ``labels == input_ids`` and ``T == max_length`` except possibly for the last
    chunk.
    """

    def __init__(self, texts: Sequence[str], tokenizer, max_length: int):
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not a single string")
        ids = concat_token_ids(texts, tokenizer)
        if not ids:
            raise ValueError(f"the {len(texts)} text(s) tokenised to no tokens")
        self.max_length = max_length
        self._chunks = [torch.tensor(c, dtype=torch.long) for c in chunk_ids(ids, max_length)]

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
