"""Hugging Face hub ids, offline: what is in the local hub cache, and a clear error when not.

Compute nodes of most clusters have no internet. The way to run there is to fill the hub cache
on a machine that has it (a login node), with the same ``HF_HOME`` (or ``HF_HUB_CACHE``) the
jobs see, and run with ``HF_HUB_OFFLINE=1``::

    hf download open-unlearning/tofu_Llama-3.2-1B-Instruct_full        # a model
    hf download locuslab/TOFU --repo-type dataset                      # a dataset

(``huggingface-cli download ...`` with older ``huggingface_hub``). The cache layout is
huggingface_hub's own: ``<cache>/models--org--name/{refs/main, snapshots/<rev>/...}`` and
``datasets--org--name/...`` for datasets; transformers and datasets read it when offline, and
:func:`cached_snapshot` finds a repo's snapshot directory in it.

The pipeline checks every hub id it will need when it starts (``blur_core.pipeline.Study``):
offline, an id missing from the cache fails before any job, naming the id and the command
that fills the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "HubIdMissing",
    "cached_snapshot",
    "fill_command",
    "hub_cache_dir",
    "is_hub_id",
    "is_offline",
    "require",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = ("1", "true", "yes", "on")


class HubIdMissing(FileNotFoundError):
    """A hub id is needed offline but is not in the local hub cache (the message says how to
    fill the cache)."""


def is_hub_id(source: str) -> bool:
    """``org/name`` that is not an existing local path (nor looks like one: ./, /, ~)."""
    text = str(source)
    if text.startswith((".", "/", "~")) or Path(text).exists():
        return False
    return bool(_HUB_ID.match(text))


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or transformers' ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The hub cache the libraries read: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (read from the environment now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_snapshot(repo_id: str, repo_type: str = "model") -> Path | None:
    """The local snapshot directory of ``repo_id``'s main revision, or None when it is not in
    the hub cache. Never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo_id, repo_type=repo_type, cache_dir=str(hub_cache_dir()), local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    path = Path(path)
    return path if path.is_dir() and any(path.iterdir()) else None


def fill_command(repo_id: str, repo_type: str = "model") -> str:
    """The command that puts ``repo_id`` into the hub cache (run where there is internet)."""
    flag = "" if repo_type == "model" else f" --repo-type {repo_type}"
    return f"hf download {repo_id}{flag}"


def require(repo_id: str, repo_type: str = "model", where: str = "") -> Path | None:
    """Offline: the cached snapshot of ``repo_id``, or ``HubIdMissing`` naming the id, the
    cache directory and the command to fill it. Online: the snapshot when cached, else None
    (the libraries will download it)."""
    snapshot = cached_snapshot(repo_id, repo_type)
    if snapshot is not None or not is_offline():
        return snapshot
    prefix = f"{where}: " if where else ""
    kind = "model" if repo_type == "model" else repo_type
    raise HubIdMissing(
        f"{prefix}{kind} {repo_id!r} is a hub id, HF_HUB_OFFLINE=1 is set and it is not in the "
        f"Hugging Face cache ({hub_cache_dir()}). Fill the cache where there is internet, "
        f"with the same HF_HOME: `{fill_command(repo_id, repo_type)}` (or "
        f"`huggingface-cli download {repo_id}"
        f"{'' if repo_type == 'model' else ' --repo-type ' + repo_type}`), or give a local directory"
    )
