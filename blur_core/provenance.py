"""Provenance: what produced a result, recorded in every output JSON.

``provenance(...)`` returns a plain dict that the training summary (``summary.json``), the
evaluation results (``eval.json``) and the suite results carry under ``"provenance"``::

    {"blur_pipeline": version, "git": {"commit", "dirty"} | None, "code": fingerprint,
     "command": ..., "python": ..., "packages": {torch, transformers, deepspeed, peft, ...},
     "devices": [...], "world_size": N, "host": ..., "config_hash": ..., "data": {file: sha256},
     "started": ISO time, "finished": ISO time}

so that a collaborator holding only ``results/`` can tell which code, package versions, data
and machine produced each number, and the report can flag a table that mixes them.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "file_sha256", "git_state", "now", "provenance"]

PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "deepspeed", "peft", "accelerate")
REPO = Path(__file__).resolve().parents[1]


def now() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout ``blur_core`` runs from (dirty: tracked files
    changed), or None outside a git checkout (an unpacked archive)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


@functools.lru_cache(maxsize=1)
def _packages() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _devices() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - a broken CUDA install still gets a record
        pass
    return [f"cpu ({platform.machine()}, {platform.processor() or 'unknown'})"]


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (cached per path, size and mtime within a process)."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def _data_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each file, directories expanded to their data files (json, jsonl, txt, csv)."""
    out = {}
    for p in paths:
        p = Path(p)
        files = (
            sorted(
                f
                for f in p.rglob("*")
                if f.suffix in (".json", ".jsonl", ".txt", ".csv") and f.is_file()
            )
            if p.is_dir()
            else [p]
        )
        for f in files:
            if f.is_file():
                out[str(f)] = file_sha256(f)
    return out


def provenance(
    command: str,
    *,
    config: Mapping | None = None,
    data: Iterable[str | Path] = (),
    world_size: int = 1,
    started: str | None = None,
) -> dict[str, Any]:
    """The provenance record of a result made by ``python -m blur_core <command>`` (see the
    module docstring): ``config`` is hashed (its canonical JSON), ``data`` files (or dirs)
    are hashed by content, ``started`` is when the work began (:func:`now`)."""
    from blur_core import __version__
    from blur_core.fingerprint import code_fingerprint

    try:
        code = code_fingerprint(command)
    except ValueError:
        code = None
    config_hash = None
    if config is not None:
        text = json.dumps(config, sort_keys=True, default=str)
        config_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {
        "blur_pipeline": __version__,
        "git": git_state(),
        "code": code,
        "command": command,
        "python": sys.version.split()[0],
        "packages": _packages(),
        "devices": _devices(),
        "world_size": world_size,
        "host": socket.gethostname(),
        "config_hash": config_hash,
        "data": _data_hashes(data),
        "started": started,
        "finished": now(),
    }
