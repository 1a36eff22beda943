"""Final weights -> HF model dir (``python -m blur_core convert SRC OUT_DIR``, the ``convert`` rule).

``SRC`` is what a training run leaves behind: an HF model dir (the local backend's final
model) is copied unchanged; a ZeRO checkpoint (the DeepSpeed backend's
``<run>/checkpoints/step-N`` or its final shards) is consolidated by
:func:`blur_core.train.zero.consolidate_checkpoint` into ``model.safetensors`` (sharded with
an index for big models) beside config.json, the tokenizer and the run config, a dir that
``AutoModelForCausalLM.from_pretrained`` loads. Callers need not know the backend.

Memory: consolidation assembles the full fp32 state dict in host RAM (4 bytes/parameter).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from blur_core.atomic import atomic_dir
from blur_core.train import zero

__all__ = ["convert_checkpoint", "is_hf_model_dir"]


def is_hf_model_dir(path: str | Path) -> bool:
    """A consolidated HF model dir: config.json plus safetensors weights."""
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_checkpoint(
    src: str | Path, out_dir: str | Path, hf_dir: str | Path | None = None, tag: str | None = None
) -> Path:
    """``src`` -> HF model dir ``out_dir`` (atomically): a ZeRO checkpoint is consolidated
    (``hf_dir``: where config.json and the tokenizer come from, default ``src/hf``; ``tag``:
    the DeepSpeed tag, default the one named in ``latest``); an HF model dir is copied."""
    src, out_dir = Path(src), Path(out_dir)
    if not zero.is_zero_checkpoint(src) and tag is None and is_hf_model_dir(src):
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        return out_dir
    return zero.consolidate_checkpoint(src, out_dir, hf_dir=hf_dir, tag=tag)
