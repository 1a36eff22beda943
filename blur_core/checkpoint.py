"""ZeRO checkpoint -> HF model dir (``python -m blur_core convert ZERO_CKPT_DIR OUT_DIR``).

An HF model dir given instead (the local backend's final model) is copied unchanged.

A ZeRO checkpoint written by the DeepSpeed backend (``<run>/checkpoints/step-N`` or the
temporary one behind the final model) holds every rank's parameter/optimizer shards plus
an ``hf/`` folder with config.json, the tokenizer and the run config. Conversion
consolidates the fp32 master weights with DeepSpeed's ``zero_to_fp32`` into
``model.safetensors`` (sharded with an index for big models) and copies the ``hf/`` files
beside them, giving a dir that ``AutoModelForCausalLM.from_pretrained`` loads.

Memory: zero_to_fp32 assembles the full fp32 state dict in host RAM (4 bytes/parameter).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["convert_checkpoint", "convert_zero_checkpoint", "is_hf_model_dir"]


def is_hf_model_dir(path: str | Path) -> bool:
    """A consolidated HF model dir: config.json plus safetensors weights."""
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_checkpoint(src: str | Path, out_dir: str | Path, hf_dir: str | Path | None = None,
                       tag: str | None = None) -> Path:
    """``src`` -> HF model dir ``out_dir``: a ZeRO checkpoint is consolidated; an HF model dir
    (what the local backend writes) is copied as is, so callers need not know the backend."""
    from blur_core.train import zero

    src, out_dir = Path(src), Path(out_dir)
    if not zero.has_zero_checkpoint(src) and tag is None and is_hf_model_dir(src):
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return out_dir
    return convert_zero_checkpoint(src, out_dir, hf_dir=hf_dir, tag=tag)


def convert_zero_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, hf_dir: str | Path | None = None,
                            tag: str | None = None) -> Path:
    """Consolidate ZeRO shards in ``ckpt_dir`` into an HF model dir ``out_dir`` (atomically).

    ``hf_dir``: where config.json / tokenizer come from; default ``ckpt_dir/hf`` (written by
    the DeepSpeed backend). ``tag``: the checkpoint tag; default the one named in ``latest``.
    """
    from blur_core.train import zero

    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"ZeRO checkpoint directory not found: {ckpt_dir}")
    if tag is None and not zero.has_zero_checkpoint(ckpt_dir):
        raise FileNotFoundError(f"{ckpt_dir} holds no DeepSpeed checkpoint (no 'latest' file and no "
                                f"'{zero.CKPT_TAG}/' folder) and is not an HF model dir")
    if tag is None and not (ckpt_dir / "latest").is_file():
        tag = zero.CKPT_TAG
    hf_dir = Path(hf_dir) if hf_dir is not None else ckpt_dir / zero.HF_ASSETS
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {hf_dir}; pass hf_dir (e.g. the starting model dir)")

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    zero.convert_to_state_dict_dir(ckpt_dir, tmp, tag=tag)
    for item in hf_dir.iterdir():
        if item.is_file() and not (tmp / item.name).exists():
            shutil.copy2(item, tmp / item.name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
