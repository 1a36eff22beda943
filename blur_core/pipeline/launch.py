"""How a training job starts ``blur_core``: the command prefix of the ``unlearn`` rule.

One rank per GPU the job requested (so the SLURM request and the launch agree; the ranks
use the GPUs SLURM granted through CUDA_VISIBLE_DEVICES), or ``nproc`` CPU ranks without
GPUs. One rank: ``python -m``; several on one node: ``torchrun --standalone``; several
nodes (a SLURM allocation, GPUs per node): ``srun`` starts one torchrun per node, which
meet at a c10d rendezvous on the allocation's first node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["gpus_per_node", "launch_prefix", "ranks_per_node"]

# gpu, gpu:N, gpu:TYPE, gpu:TYPE:N (a TYPE holds at least one character that is not a digit)
_GRES_GPU = re.compile(r"gpu(?::[\w.]*?[^\d:][\w.]*)?(?::(\d+))?")


def gpus_per_node(resources: Mapping[str, Any]) -> int:
    """GPUs a job asks for per node: its ``gres`` (what SLURM is given), else its ``gpu``
    resource; 0 without GPUs."""
    gres = str(resources.get("gres", "") or "")
    m = _GRES_GPU.fullmatch(gres)
    if m:
        return int(m.group(1) or 1)
    return int(resources.get("gpu", 0) or 0)


def ranks_per_node(resources: Mapping[str, Any], nproc: int) -> int:
    """One rank per requested GPU; ``nproc`` CPU ranks when the job requests none."""
    return gpus_per_node(resources) or nproc


def launch_prefix(ranks: int, nodes: int = 1) -> str:
    """The command that runs ``<prefix> blur_core unlearn ...`` on ``ranks`` ranks per node
    over ``nodes`` nodes (nodes > 1 only inside a SLURM allocation)."""
    if ranks < 1 or nodes < 1:
        raise ValueError(f"need at least one rank and one node, got ranks={ranks}, nodes={nodes}")
    if nodes > 1:
        # one srun over the job's nodes, from inside the executor's one-node job step
        # (blur_core.slurm clears that step's variables first), then one torchrun per node
        return f"python -m blur_core.slurm launch --nodes {nodes} --nproc-per-node {ranks} -m"
    if ranks == 1:
        return "python -m"
    return f"torchrun --standalone --nproc_per_node {ranks} -m"
