"""Deterministic per-step example indices, independent of world size and accumulation.

For a dataset of n examples, epoch e is a permutation drawn from a generator seeded with
(seed, e); the permutations are concatenated into one stream and optimizer step s takes
the slice [s*G, (s+1)*G) with G = world_size * grad_accum * micro_batch_size. Rank r takes
its contiguous part of that slice and splits it into grad_accum micro-batches. Hence
batch 8 x accum 1, batch 1 x accum 8 and 2 ranks x batch 2 x accum 2 see exactly the same
examples in every step, and resuming at step s needs no sampler state.
"""

from __future__ import annotations

import torch

__all__ = ["rank_micro_batches", "step_indices"]


def _epoch_perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=gen)


def step_indices(n: int, step: int, global_batch: int, seed: int) -> list[int]:
    """The ``global_batch`` example indices of optimizer step ``step`` (0-based)."""
    if n <= 0:
        raise ValueError(f"cannot sample from an empty dataset (n={n})")
    start = step * global_batch
    out: list[int] = []
    epoch, offset = divmod(start, n)
    while len(out) < global_batch:
        perm = _epoch_perm(n, seed, epoch)
        take = perm[offset : offset + global_batch - len(out)].tolist()
        out.extend(take)
        epoch, offset = epoch + 1, 0
    return out


def rank_micro_batches(
    indices: list[int], rank: int, world_size: int, grad_accum: int
) -> list[list[int]]:
    """Split a step's global indices into this rank's ``grad_accum`` micro-batches."""
    per_rank = len(indices) // world_size
    mine = indices[rank * per_rank : (rank + 1) * per_rank]
    mb = per_rank // grad_accum
    return [mine[k * mb : (k + 1) * mb] for k in range(grad_accum)]
