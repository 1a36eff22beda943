"""Batching: right-padding of variable-length items."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100
"""Label value of positions that are not scored (Hugging Face convention); the one definition,
imported by the losses and the evaluation code."""


def pad_collate(items: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad items from :class:`QADataset`/:class:`TextChunkDataset` into a batch.

    Returns ``input_ids`` [B, T] (padded with ``pad_token_id``), ``labels`` [B, T]
    (``IGNORE_INDEX`` = -100 on padding), ``attention_mask`` [B, T] (1 real, 0 pad) and ``index`` [B],
    where T is the longest item's length.

    Raises:
        ValueError: ``items`` is empty, ``pad_token_id`` is None, or an item's
            ``input_ids`` and ``labels`` differ in length.
    """
    if len(items) == 0:
        raise ValueError("pad_collate got an empty list of items")
    if pad_token_id is None:
        raise ValueError("pad_collate needs a pad_token_id, got None")
    lengths = [len(item["input_ids"]) for item in items]
    for b, item in enumerate(items):
        if len(item["labels"]) != lengths[b]:
            raise ValueError(
                f"item {b}: input_ids has {lengths[b]} tokens but labels has {len(item['labels'])}"
            )
    batch, width = len(items), max(lengths)
    input_ids = torch.full((batch, width), int(pad_token_id), dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    for b, item in enumerate(items):
        n = lengths[b]
        input_ids[b, :n] = torch.as_tensor(item["input_ids"], dtype=torch.long)
        labels[b, :n] = torch.as_tensor(item["labels"], dtype=torch.long)
        attention_mask[b, :n] = 1
    index = torch.tensor(
        [int(item.get("index", b)) for b, item in enumerate(items)], dtype=torch.long
    )
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "index": index,
    }
