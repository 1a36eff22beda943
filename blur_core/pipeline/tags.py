"""Run tags: the directory name of one sweep point, ``key=value@...@seed=N``.

The grid keys are sorted and only the swept hyperparameters appear (fixed ones do not),
so adding a value to a grid adds runs and renames none. The separator is ``@``, not
``,``: Snakemake 9.27 splits a remote job's ``--target-jobs`` wildcards on every comma
(quoted or not), so a comma in a tag breaks cluster execution.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["TAG_SEP", "format_value", "parse_tag", "run_tag"]

TAG_SEP = "@"


def format_value(value: Any) -> str:
    """Readable, stable text for a grid value: 0.1 -> '0.1', 16.0 -> '16', True -> 'true',
    'nll' -> 'nll'; characters outside ``[\\w.=+-]`` become '-'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return re.sub(r"[^\w.=+-]", "-", str(value))


def run_tag(grid: Mapping[str, Any], seed: int) -> str:
    """``k1=v1@k2=v2@seed=N`` with the grid keys sorted."""
    parts = [f"{key}={format_value(grid[key])}" for key in sorted(grid)]
    return TAG_SEP.join([*parts, f"seed={seed}"])


def parse_tag(tag: str) -> tuple[dict[str, str], int | None]:
    """(grid values as text, seed) of a tag written by :func:`run_tag`; parts without '='
    are ignored, a missing seed is None."""
    grid, seed = {}, None
    for part in tag.split(TAG_SEP):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        if key == "seed":
            seed = int(value)
        else:
            grid[key] = value
    return grid, seed
