"""Training-state checkpoints for exact resume (backend state, RNG, step, NPO reference).

Layout: ``<output_dir>/checkpoints/step-000010/{state.pt, rng-rank0.pt, ...}``, written to a
``.tmp`` directory and renamed when complete, so a crash mid-save never yields a
checkpoint that looks valid. The backend writes model + optimizer; every rank its RNG; rank 0 the meta.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from blur_core.atomic import fresh_dir, replace_dir
from blur_core.train.dist import DistContext

__all__ = ["discard_checkpoints", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_STEP_DIR = re.compile(r"^step-(\d+)$")


def _ckpt_root(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


FINGERPRINT = "fingerprint.txt"


def latest_checkpoint(
    output_dir: str | Path, fingerprint: str | None = None, at_most: int | None = None
) -> Path | None:
    """The newest complete checkpoint; with ``fingerprint``, only one written by a run with
    the same fingerprint (same settings, data and starting model); with ``at_most``, only
    one of that step or earlier (a resume must not skip a step whose weights are wanted)."""
    root = _ckpt_root(Path(output_dir))
    if not root.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name))
        and (p / "state.pt").exists()
        and (fingerprint is None or _read(p / FINGERPRINT) == fingerprint)
        and (at_most is None or int(m.group(1)) <= at_most)
    ]
    return max(steps)[1] if steps else None


def discard_checkpoints(output_dir: str | Path) -> list[Path]:
    """Remove every checkpoint of ``output_dir`` (stale: written for other settings)."""
    root = _ckpt_root(Path(output_dir))
    gone = (
        sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name.removesuffix(".tmp")))
        if root.is_dir()
        else []
    )
    for p in gone:
        shutil.rmtree(p)
    return gone


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    meta: dict,
    backend,
    ctx: DistContext,
    keep: int,
    fingerprint: str = "",
) -> Path:
    """Checkpoint after ``step`` steps: the backend's model/optimizer state (collective),
    each rank's RNG, and ``meta`` (rank 0). ``state.pt`` is written last and the directory
    renamed into place, so only complete checkpoints are ever found."""
    root = _ckpt_root(Path(output_dir))
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if ctx.is_main:
        fresh_dir(tmp)
    ctx.barrier()
    backend.save_state(tmp)
    torch.save(_rng_state(), tmp / f"rng-rank{ctx.rank}.pt")
    ctx.barrier()
    if ctx.is_main:
        (tmp / FINGERPRINT).write_text(fingerprint + "\n")
        torch.save(
            {"step": step, "world_size": ctx.world_size, "backend": backend.name, **meta},
            tmp / "state.pt",
        )
        replace_dir(tmp, final)
        old = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
        for p in old[:-keep]:
            shutil.rmtree(p)
    ctx.barrier()
    return final


def load_checkpoint(path: Path, backend, ctx: DistContext) -> dict:
    """Restore the backend state and this rank's RNG from ``path``; return rank 0's meta.

    The data order depends only on the step (sampler.py), so a different world size is
    allowed; each rank then restores the RNG of the rank with its number if it exists.
    """
    meta = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if meta.get("backend", "local") != backend.name:
        raise RuntimeError(
            f"checkpoint {path} was written by the {meta.get('backend')!r} backend; "
            f"this run uses {backend.name!r}"
        )
    backend.load_state(path)
    rng_file = path / f"rng-rank{ctx.rank}.pt"
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return meta
