"""Learning-rate schedules with linear warmup: constant, linear decay, cosine decay."""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based, the step being taken).

    warmup: (step + 1) / (warmup_steps + 1) for step < warmup_steps (never 0, so the
    first step moves); then constant: 1; linear: decays to 0 at total_steps;
    cosine: 0.5 * (1 + cos(pi * progress)).
    """
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r}; expected constant, linear or cosine")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine
