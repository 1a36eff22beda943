"""Final weights -> HF model dir (``python -m blur_core convert SRC OUT_DIR``, the ``convert`` rule).

``SRC`` is what a training run leaves behind: an HF model dir (the local backend's final
model) is copied unchanged; a ZeRO checkpoint (the DeepSpeed backend's
``<run>/checkpoints/step-N`` or its final shards) is consolidated by
:func:`blur_core.train.zero.consolidate_checkpoint` into ``model.safetensors`` (sharded with
an index for big models) beside config.json, the tokenizer and the run config, a dir that
``AutoModelForCausalLM.from_pretrained`` loads. Callers need not know the backend. With
``dtype`` the floating-point weights are cast (ZeRO keeps fp32 master weights also for bf16
training; a bf16 model's converted dir is then half the size and loads as bf16).

Memory: consolidation assembles the full fp32 state dict in host RAM (4 bytes/parameter).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from blur_core.atomic import atomic_dir
from blur_core.train import zero

__all__ = ["cast_weights", "convert_checkpoint", "is_hf_model_dir"]


def is_hf_model_dir(path: str | Path) -> bool:
    """A consolidated HF model dir: config.json plus safetensors weights."""
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def cast_weights(model_dir: str | Path, dtype: str) -> Path:
    """Cast every floating-point tensor of the safetensors files in ``model_dir`` to ``dtype``
    (float32 | bfloat16) in place, and record it in config.json."""
    from safetensors.torch import load_file, save_file

    from blur_core.models import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {model_dir}")
    for path in files:
        state = load_file(str(path))
        cast = {
            k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
            for k, v in state.items()
        }
        save_file(cast, str(path), metadata={"format": "pt"})
    config_path = model_dir / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = dtype
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    return model_dir


def convert_checkpoint(
    src: str | Path,
    out_dir: str | Path,
    hf_dir: str | Path | None = None,
    tag: str | None = None,
    dtype: str | None = None,
) -> Path:
    """``src`` -> HF model dir ``out_dir`` (atomically): a ZeRO checkpoint is consolidated
    (``hf_dir``: where config.json and the tokenizer come from, default ``src/hf``; ``tag``:
    the DeepSpeed tag, default the one named in ``latest``); an HF model dir is copied.
    ``dtype``: cast the weights (None: as they are)."""
    src, out_dir = Path(src), Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if not zero.is_zero_checkpoint(src) and tag is None and is_hf_model_dir(src):
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            zero.consolidate_checkpoint(src, tmp, hf_dir=hf_dir, tag=tag)
        if dtype is not None:
            cast_weights(tmp, dtype)
    return out_dir
