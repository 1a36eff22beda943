"""Load and save models and tokenizers (local HF dirs or hub ids; GGUF comes with the pipeline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

__all__ = ["DTYPES", "load_tokenizer", "load_model", "save_hf_model"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_tokenizer(path: str):
    """AutoTokenizer with a pad token guaranteed (falls back to EOS)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, dtype: str = "float32", device: torch.device | str = "cpu"):
    """AutoModelForCausalLM from ``path`` in ``dtype`` on ``device``."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    p = Path(path)
    if (p.parent != Path(".") or str(path).startswith((".", "/"))) and not p.exists():
        raise FileNotFoundError(f"model directory not found: {path}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    return model.to(device)


def save_hf_model(model, tokenizer, out_dir: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write an HF model dir (safetensors + config + tokenizer + extra text files) atomically.

    The directory is assembled under ``<out_dir>.tmp`` and renamed into place, so an
    interrupted save never leaves a half-written model at ``out_dir``.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
