"""Training-state checkpoints for exact resume (model, optimizer, RNG, NPO reference).

Layout: ``<output_dir>/checkpoints/step-000010/{state.pt, rng-rank0.pt, ...}``, written to a
``.tmp`` directory and renamed when complete, so a crash mid-save never yields a
checkpoint that looks valid. Rank 0 writes the replicated state; every rank its RNG.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from blur_core.train.dist import DistContext

__all__ = ["latest_checkpoint", "save_checkpoint", "load_checkpoint"]

_STEP_DIR = re.compile(r"^step-(\d+)$")


def _ckpt_root(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = _ckpt_root(Path(output_dir))
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))
             and (p / "state.pt").exists()]
    return max(steps)[1] if steps else None


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | Path, step: int, state: dict, ctx: DistContext, keep: int) -> Path:
    """Save the replicated ``state`` (rank 0) and each rank's RNG after ``step`` steps."""
    root = _ckpt_root(Path(output_dir))
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if ctx.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    ctx.barrier()
    torch.save(_rng_state(), tmp / f"rng-rank{ctx.rank}.pt")
    ctx.barrier()
    if ctx.is_main:
        torch.save({"step": step, "world_size": ctx.world_size, **state}, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        old = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
        for p in old[:-keep]:
            shutil.rmtree(p)
    ctx.barrier()
    return final


def load_checkpoint(path: Path, ctx: DistContext) -> dict:
    """Load the state saved by ``save_checkpoint`` and restore this rank's RNG."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if state["world_size"] != ctx.world_size:
        raise RuntimeError(
            f"checkpoint {path} was written with world size {state['world_size']}, "
            f"this run has {ctx.world_size}: data order would differ; resume with the same world size"
        )
    rng_file = path / f"rng-rank{ctx.rank}.pt"
    _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return state
