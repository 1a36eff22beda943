"""LoRA adapters through the ``peft`` library: build, reference view, state, save, merge.

With ``train.peft`` set, the policy is ``peft.get_peft_model(base, LoraConfig(...))``:
every base weight is frozen and only the adapter matrices (plus ``modules_to_save``
copies) are trainable, so ``F`` and ``R`` (the two gradient buffers), the combiner,
clipping, the optimizer and the ZeRO shards hold adapter parameters only. An adapted
linear layer computes

    y = W x + (alpha / r) * B A x,      A: [r, in] (Kaiming-uniform), B: [out, r] (zeros)

so at step 0 the policy equals the base model exactly.

Reference model (KL / RMU retain, NPO's log-probs): the *same* module with the adapters
disabled (:class:`BaseView`, peft's ``disable_adapter()``), never a second copy of the
weights. Memory per rank, with ``P`` base and ``p`` adapter parameters (fp32):

    full training:  P weights + 2P buffers (F, R) + 2P AdamW state  (+ P for a KL/RMU reference)
    LoRA:           P weights + 2p buffers        + 2p AdamW state  (reference: no extra weights)

(under ZeRO-2/3 the buffers and optimizer state are sharded over the ranks; under ZeRO-3
the frozen base weights are partitioned as well).

On disk: training checkpoints hold the adapter (and its optimizer state) only; the final
output of a run is a PEFT adapter dir (``adapter_config.json`` + ``adapter_model.safetensors``
+ tokenizer + run config, loadable by ``PeftModel.from_pretrained``), and
:func:`merge_adapter_dir` (``python -m blur_core convert``) turns it into a plain HF model
dir with the update folded into the weights.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from blur_core.atomic import atomic_dir
from blur_core.config import ConfigError

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_SUBDIR",
    "ALL_LINEAR",
    "BaseView",
    "adapter_base",
    "adapter_dir_from_state",
    "adapter_state",
    "add_adapters",
    "base_path_text",
    "is_adapter_dir",
    "is_peft_model",
    "is_plain_module_name",
    "load_adapter_state",
    "lora_config",
    "merge_adapter_dir",
    "parameter_counts",
    "save_adapter_dir",
    "target_modules_value",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SUBDIR = "adapter"  # where convert puts the adapter inside a merged model dir
ALL_LINEAR = "all-linear"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.]+")
_COPIED = ("run_config.yaml", "SOURCE.txt")  # text files carried from an adapter dir


# ---------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------
def is_plain_module_name(entry: str) -> bool:
    """A ``target_modules`` entry of letters, digits, '_' and '.' only is a module name
    (matched as a dotted suffix: ``q_proj``, ``mlp.down_proj``); anything else is a regex
    matched against the whole module name (``model\\.layers\\.(5|6)\\.mlp\\.down_proj``)."""
    return _PLAIN_NAME.fullmatch(entry) is not None


def _entry_regex(entry: str) -> str:
    """A plain name matches as a dotted suffix of the module name; anything else is a
    regex on the whole name."""
    if is_plain_module_name(entry):
        return rf"(?:.*\.)?{re.escape(entry)}"
    return f"(?:{entry})"


def target_modules_value(entries: list[str]) -> str:
    """The ``LoraConfig.target_modules`` value for ``train.peft.target_modules``:
    ``"all-linear"`` as is, else one regex (peft full-matches a string against each
    module name) that is the alternation of the entries."""
    if entries == [ALL_LINEAR]:
        return ALL_LINEAR
    return "|".join(_entry_regex(e) for e in entries)


def _check_targets(model: torch.nn.Module, cfg, where: str) -> None:
    """ConfigError naming the first target_modules / modules_to_save entry that matches no
    module of ``model``."""
    names = [n for n, _ in model.named_modules() if n]
    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    example = max(leaves, key=lambda n: n.count("."), default="")
    for i, entry in enumerate(cfg.target_modules):
        if entry == ALL_LINEAR:
            continue
        rx = re.compile(_entry_regex(entry))
        if not any(rx.fullmatch(n) for n in names):
            raise ConfigError(
                f"{where}.target_modules[{i}] = {entry!r} matches no module of the model "
                f"(module names look like {example!r})"
            )
    for i, entry in enumerate(cfg.modules_to_save):
        rx = re.compile(rf"(?:.*\.)?{re.escape(entry)}")
        if not any(rx.fullmatch(n) for n in names):
            raise ConfigError(
                f"{where}.modules_to_save[{i}] = {entry!r} matches no module of the model "
                f"(module names look like {example!r})"
            )


def lora_config(cfg) -> Any:
    """``peft.LoraConfig`` of an :class:`~blur_core.train.config.AdapterConfig`."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target_modules_value(list(cfg.target_modules)),
        modules_to_save=list(cfg.modules_to_save) or None,
        bias="none",
    )


def add_adapters(model: torch.nn.Module, cfg, seed: int, where: str = "train.peft"):
    """``peft.get_peft_model(model, lora_config(cfg))``: base weights frozen, adapters
    trainable and kept in fp32 (also over a bf16 base).

    The adapter initialisation draws from its own generator state, seeded with ``seed``,
    so it is the same whatever the loading path consumed before (single process, ZeRO-3
    partitioned loading, any rank).
    """
    from peft import get_peft_model

    _check_targets(model, cfg, where)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora_config(cfg), autocast_adapter_dtype=True)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise ConfigError(f"{where}: the adapters left no trainable parameter")
    return peft_model


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; ZeRO-3 partitioned parameters count in full."""
    trainable = total = 0
    for p in model.parameters():
        n = int(getattr(p, "ds_numel", p.numel()))
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


# ---------------------------------------------------------------------------------------
# the reference: the base model, adapters disabled
# ---------------------------------------------------------------------------------------
class BaseView:
    """Forward passes of the starting model through the policy's own weights: ``module``
    (the PeftModel, or the DeepSpeed engine wrapping it) run in eval mode under
    ``peft_model.disable_adapter()``. No weights are copied; call it under ``no_grad``."""

    def __init__(self, module: torch.nn.Module, peft_model: torch.nn.Module):
        self.module = module
        self.peft_model = peft_model

    @property
    def training(self) -> bool:
        return False

    def train(self, mode: bool = True) -> BaseView:  # the view is always in eval mode
        return self

    def eval(self) -> BaseView:
        return self

    def __call__(self, *args, **kwargs):
        was_training = self.module.training
        self.module.eval()
        try:
            with self.peft_model.disable_adapter():
                return self.module(*args, **kwargs)
        finally:
            self.module.train(was_training)


# ---------------------------------------------------------------------------------------
# state (checkpoints) and the adapter dir
# ---------------------------------------------------------------------------------------
def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (adapter) parameters by name, detached clones (for checkpoints)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_adapter_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy a state written by :func:`adapter_state` into ``model`` (exact: same names)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or extra:
        raise RuntimeError(
            f"{where}: adapter checkpoint does not fit the model: missing {missing[:3]}, "
            f"unexpected {extra[:3]} (other train.peft settings?)"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def base_path_text(base_model: str) -> str:
    """An existing local dir as an absolute path (the adapter dir is read from elsewhere
    later); a hub id as is."""
    path = Path(base_model)
    return str(path.resolve()) if path.exists() else str(base_model)


def save_adapter_dir(
    peft_model,
    out_dir: str | Path,
    base_model: str,
    tokenizer=None,
    extra_files: dict[str, str] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a PEFT adapter dir atomically: ``adapter_config.json`` (its
    ``base_model_name_or_path`` = ``base_model``, absolute when local),
    ``adapter_model.safetensors``, the tokenizer and ``extra_files``.

    ``state_dict``: the adapter tensors by parameter name (default: the module's own; the
    ZeRO backend passes the gathered fp32 master weights)."""
    out_dir = Path(out_dir)
    config = peft_model.peft_config["default"]
    config.base_model_name_or_path = base_path_text(base_model)
    kwargs = {} if state_dict is None else {"state_dict": state_dict}
    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True, **kwargs)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out_dir


def adapter_dir_from_state(
    hf_dir: str | Path, state: dict[str, torch.Tensor], out_dir: str | Path
) -> Path:
    """A PEFT adapter dir from adapter tensors keyed by the PeftModel's parameter names
    (a consolidated ZeRO checkpoint of a LoRA run) and ``hf_dir``'s config.json,
    adapter_config.json, tokenizer and run config. The model is built on the meta device
    (structure only: no base weights are loaded)."""
    from peft import PeftConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_dir = Path(hf_dir)
    peft_config = PeftConfig.from_pretrained(str(hf_dir))
    base = peft_config.base_model_name_or_path or ""  # (get_peft_model overwrites it)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(hf_dir)))
    peft_model = get_peft_model(skeleton, peft_config)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - state.keys())
    if missing:
        raise ValueError(f"the checkpoint lacks adapter tensors {missing[:3]} ({len(missing)})")
    tokenizer = None
    if (hf_dir / "tokenizer_config.json").is_file():
        from blur_core.models import load_tokenizer

        tokenizer = load_tokenizer(str(hf_dir))
    extra = {n: (hf_dir / n).read_text() for n in _COPIED if (hf_dir / n).is_file()}
    return save_adapter_dir(
        peft_model,
        out_dir,
        base,
        tokenizer,
        extra,
        state_dict={n: state[n] for n in trainable},
    )


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter dir: adapter_config.json beside adapter weights."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and any(path.glob("adapter_model.*"))


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model an adapter dir was trained on (``base_model_name_or_path``)."""
    meta = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    base = meta.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/{ADAPTER_CONFIG} names no base model; pass one")
    return base


def _run_dtype(adapter_dir: Path) -> str:
    import yaml

    cfg_path = adapter_dir / "run_config.yaml"
    if not cfg_path.is_file():
        return "float32"
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    return (cfg.get("train") or {}).get("dtype") or "float32"


def merge_adapter_dir(
    adapter_dir: str | Path,
    out_dir: str | Path,
    base_model: str | None = None,
    dtype: str | None = None,
    keep_adapter: bool = True,
) -> Path:
    """Base model + adapter -> a plain HF model dir ``out_dir`` (atomically), with
    ``W' = W + (alpha / r) B A`` folded into every adapted layer (``merge_and_unload``).

    ``base_model``: default the adapter's ``base_model_name_or_path``; ``dtype``: the
    run's ``train.dtype`` (from the dir's run_config.yaml, else float32). The tokenizer
    and run config are carried over, and the adapter dir is copied into
    ``out_dir/adapter`` (``keep_adapter``). Memory: the base model once, in ``dtype``.
    """
    from peft import PeftModel

    from blur_core.models import load_model, load_tokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not is_adapter_dir(adapter_dir):
        raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter dir (no {ADAPTER_CONFIG})")
    base = base_model or adapter_base(adapter_dir)
    base_model_obj = load_model(base, dtype or _run_dtype(adapter_dir), "cpu")
    merged = PeftModel.from_pretrained(base_model_obj, str(adapter_dir)).merge_and_unload()
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(adapter_dir) if has_tokenizer else base)
    with atomic_dir(out_dir) as tmp:
        merged.eval().save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in _COPIED:
            if (adapter_dir / name).is_file():
                shutil.copy2(adapter_dir / name, tmp / name)
        if keep_adapter:
            shutil.copytree(adapter_dir, tmp / ADAPTER_SUBDIR)
    return out_dir
