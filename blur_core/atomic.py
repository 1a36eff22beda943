"""Atomic outputs: a file or directory appears whole at its final path or not at all.

Each is assembled beside its destination (``<name>.tmp``) and renamed into place, so an
interrupted job (killed, preempted, out of memory) never leaves a half-written result
that a rerun or a downstream stage would take for a complete one.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_write_text", "fresh_dir", "replace_dir", "temp_path"]

TMP_SUFFIX = ".tmp"


def temp_path(dest: str | Path, suffix: str = TMP_SUFFIX) -> Path:
    """The temporary sibling ``dest`` is assembled in: ``<dest><suffix>``."""
    dest = Path(dest)
    return dest.with_name(dest.name + suffix)


def fresh_dir(path: str | Path) -> Path:
    """An empty directory at ``path`` (a leftover of an interrupted attempt is removed)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def replace_dir(src: str | Path, dest: str | Path) -> Path:
    """Move the complete directory ``src`` to ``dest``, replacing what was there."""
    src, dest = Path(src), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    src.rename(dest)
    return dest


@contextlib.contextmanager
def atomic_dir(dest: str | Path, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``dest``, on an
    exception it is removed and ``dest`` is left as it was."""
    tmp = fresh_dir(temp_path(dest, suffix))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a renamed temporary file (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path
