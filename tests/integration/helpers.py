"""Small helpers for the integration tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise AssertionError(f"different parameter names: {sorted(a.keys() ^ b.keys())}")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def read_log(run_dir: Path) -> list[dict]:
    return [
        json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()
    ]


def run_config(model, out, method, embedded, **train) -> dict:
    base = {
        "max_steps": 1,
        "micro_batch_size": 8,
        "grad_accum": 1,
        "optimizer": "sgd",
        "lr": 1.0,
        "max_grad_norm": None,
        "progress": False,
    }
    base.update(train)
    return {
        "model": str(model),
        "output_dir": str(out),
        "method": method,
        "data": {
            "forget": str(embedded["forget"]),
            "retain": str(embedded["retain"]),
            "max_length": 64,
        },
        "train": base,
    }
