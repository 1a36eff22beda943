"""Fill a Hugging Face hub cache by hand, in huggingface_hub's own layout, for offline tests.

``<cache>/{models,datasets}--org--name/`` with ``blobs/<sha256>`` (file contents),
``snapshots/<commit>/<path>`` (relative symlinks into blobs) and ``refs/main`` (the commit),
which is what ``hf download org/name`` leaves behind and what transformers, datasets and
huggingface_hub read with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_repo(cache: Path, repo_id: str, src: Path, repo_type: str = "model") -> Path:
    """Put every file under ``src`` into ``cache`` as repo ``repo_id``; the snapshot dir."""
    folder = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    files = sorted(p for p in Path(src).rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{src} holds no files")
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    commit = hashlib.sha1("".join(sorted(digests.values())).encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for path, digest in digests.items():
        blob = folder / "blobs" / digest
        if not blob.exists():
            blob.write_bytes(path.read_bytes())
        link = snapshot / path.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot
