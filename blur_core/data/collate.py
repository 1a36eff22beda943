"""Batching: right-padding of variable-length items."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100
"""Label value of positions that are not scored (Hugging Face convention); the one definition,
imported by the losses and the evaluation code."""


def _pad(seqs: Sequence, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D sequences into ``[B, T]`` (``fill`` on padding) and the 0/1 mask."""
    width = max(len(x) for x in seqs)
    out = torch.full((len(seqs), width), int(fill), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, x in enumerate(seqs):
        out[b, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        mask[b, : len(x)] = 1
    return out, mask


def pad_collate(items: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad items from :class:`QADataset`/:class:`TextChunkDataset` into a batch.

    Returns ``input_ids`` [B, T] (padded with ``pad_token_id``), ``labels`` [B, T]
    (``IGNORE_INDEX`` = -100 on padding), ``attention_mask`` [B, T] (1 real, 0 pad) and ``index`` [B],
    where T is the longest item's length. Items that carry a second answer
    (``alt_input_ids`` / ``alt_labels``: DPO's preferred answer) give ``alt_input_ids``,
    ``alt_labels`` and ``alt_attention_mask`` [B, T'] padded the same way.

    Raises:
        ValueError: ``items`` is empty, ``pad_token_id`` is None, an item's
            ``input_ids`` and ``labels`` differ in length, or some items carry a second
            answer and others do not.
    """
    if len(items) == 0:
        raise ValueError("pad_collate got an empty list of items")
    if pad_token_id is None:
        raise ValueError("pad_collate needs a pad_token_id, got None")
    with_alt = ["alt_input_ids" in item for item in items]
    if any(with_alt) and not all(with_alt):
        raise ValueError(
            f"pad_collate: items {[b for b, a in enumerate(with_alt) if not a]} have no "
            "alt_input_ids but others have"
        )
    out: dict[str, torch.Tensor] = {}
    for prefix in ("", "alt_") if with_alt[0] else ("",):
        ids, labels = f"{prefix}input_ids", f"{prefix}labels"
        for b, item in enumerate(items):
            if len(item[labels]) != len(item[ids]):
                raise ValueError(
                    f"item {b}: {ids} has {len(item[ids])} tokens but {labels} has "
                    f"{len(item[labels])}"
                )
        out[ids], out[f"{prefix}attention_mask"] = _pad([it[ids] for it in items], pad_token_id)
        out[labels], _ = _pad([it[labels] for it in items], IGNORE_INDEX)
    out["index"] = torch.tensor(
        [int(item.get("index", b)) for b, item in enumerate(items)], dtype=torch.long
    )
    return out
