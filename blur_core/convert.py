"""Final weights -> HF model dir (``python -m blur_core convert SRC OUT_DIR``, the ``convert`` rule).

``SRC`` is what a training run leaves behind: an HF model dir (the local backend's final
model) is copied unchanged; a ZeRO checkpoint (the DeepSpeed backend's
``<run>/checkpoints/step-N`` or its final shards) is consolidated by
:func:`blur_core.train.zero.consolidate_checkpoint` into ``model.safetensors`` (sharded with
an index for big models) beside config.json, the tokenizer and the run config, a dir that
``AutoModelForCausalLM.from_pretrained`` loads. Callers need not know the backend. With
``dtype`` the floating-point weights are cast (ZeRO keeps fp32 master weights also for bf16
training; a bf16 model's converted dir is then half the size and loads as bf16).

A PEFT adapter dir (the final output of a ``train.peft`` run, either backend) is merged
into its base model (:func:`blur_core.train.adapters.merge_adapter_dir`): ``OUT_DIR`` is a
plain HF model dir with the LoRA update folded into the weights, and ``OUT_DIR/adapter``
keeps the adapter itself (loadable by ``PeftModel.from_pretrained``). ``adapter_only``
(``--adapter-only``, for large models) writes just the adapter dir to ``OUT_DIR``;
``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` then loads the base and applies the
adapter (peft installed), unmerged.

Memory: consolidation assembles the full fp32 state dict in host RAM (4 bytes/parameter);
merging loads the base model once, in the run's dtype.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from blur_core.atomic import atomic_dir
from blur_core.train import adapters, zero

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
    base_model: str | None = None,
    adapter_only: bool = False,
) -> Path:
    """``src`` -> HF model dir ``out_dir`` (atomically): a ZeRO checkpoint is consolidated
    (``hf_dir``: where config.json and the tokenizer come from, default ``src/hf``; ``tag``:
    the DeepSpeed tag, default the one named in ``latest``); an HF model dir is copied; a
    PEFT adapter dir (or a LoRA run's ZeRO checkpoint, consolidated to one first) is merged
    into ``base_model`` (default: the one its config names), the adapter kept in
    ``out_dir/adapter``, or with ``adapter_only`` written alone. ``dtype``: cast the
    weights of the result (None: as they are; never an adapter-only dir)."""
    src, out_dir = Path(src), Path(out_dir)
    result = _convert(src, out_dir, hf_dir, tag, base_model, adapter_only)
    if dtype is not None and not adapter_only:
        cast_weights(result, dtype)
    return result


def _convert(src: Path, out_dir: Path, hf_dir, tag, base_model, adapter_only) -> Path:
    if adapters.is_adapter_dir(src):
        if adapter_only:
            with atomic_dir(out_dir) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
            return out_dir
        return adapters.merge_adapter_dir(src, out_dir, base_model=base_model)
    if not zero.is_zero_checkpoint(src) and tag is None and is_hf_model_dir(src):
        if adapter_only:
            raise ValueError(f"--adapter-only: {src} is a full HF model dir, not an adapter")
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        return out_dir
    hf_assets = Path(hf_dir) if hf_dir is not None else src / zero.HF_ASSETS
    lora = (hf_assets / adapters.ADAPTER_CONFIG).is_file()
    if adapter_only and not lora:
        raise ValueError(f"--adapter-only: {src} is not a LoRA run's output or checkpoint")
    if not lora or adapter_only:  # a LoRA checkpoint consolidates to its adapter dir
        return zero.consolidate_checkpoint(src, out_dir, hf_dir=hf_dir, tag=tag)
    staged = zero.consolidate_checkpoint(
        src, out_dir.with_name(out_dir.name + ".adapter"), hf_dir=hf_dir, tag=tag
    )
    try:
        return adapters.merge_adapter_dir(staged, out_dir, base_model=base_model)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
