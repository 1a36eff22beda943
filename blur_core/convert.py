"""Final weights -> HF model dir (``python -m blur_core convert SRC OUT_DIR``, the ``convert`` rule).

``SRC`` is what a training run leaves behind: an HF model dir (the local backend's final
model) is copied unchanged; a ZeRO checkpoint (the DeepSpeed backend's
``<run>/checkpoints/step-N`` or its final shards) is consolidated by
:func:`blur_core.train.zero.consolidate_checkpoint` into ``model.safetensors`` (sharded with
an index for big models) beside config.json, the tokenizer and the run config, a dir that
``AutoModelForCausalLM.from_pretrained`` loads. Callers need not know the backend.

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

import shutil
from pathlib import Path

from blur_core.atomic import atomic_dir
from blur_core.train import adapters, zero

__all__ = ["convert_checkpoint", "is_hf_model_dir"]


def is_hf_model_dir(path: str | Path) -> bool:
    """A consolidated HF model dir: config.json plus safetensors weights."""
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_checkpoint(
    src: str | Path,
    out_dir: str | Path,
    hf_dir: str | Path | None = None,
    tag: str | None = None,
    base_model: str | None = None,
    adapter_only: bool = False,
) -> Path:
    """``src`` -> HF model dir ``out_dir`` (atomically): a ZeRO checkpoint is consolidated
    (``hf_dir``: where config.json and the tokenizer come from, default ``src/hf``; ``tag``:
    the DeepSpeed tag, default the one named in ``latest``); an HF model dir is copied; a
    PEFT adapter dir (or a LoRA run's ZeRO checkpoint, consolidated to one first) is merged
    into ``base_model`` (default: the one its config names), the adapter kept in
    ``out_dir/adapter``, or with ``adapter_only`` written alone."""
    src, out_dir = Path(src), Path(out_dir)
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
