"""The run configuration of one training job (``python -m blur_core unlearn --config RUN.yaml``).

Example::

    model: runs/target/model          # local HF model dir (or a hub id when online)
    output_dir: runs/blur-npo-g0.1
    method: {name: blur, gamma: 0.1, forget_loss: npo, retain_loss: nll}
    data:
      forget: data/forget.jsonl
      retain: data/retain.jsonl
      format: qa                       # qa (question/answer) or text (plain corpus, chunked)
      max_length: 128                  # text: text_chunking concat | muse | document
    train:
      max_steps: 30
      micro_batch_size: 8
      grad_accum: 1
      lr: 1.0e-3
      peft: {rank: 8, alpha: 16, target_modules: [q_proj, v_proj]}   # optional: LoRA adapters

Every key is validated (``blur_core.config``): an unknown key, a wrong type or a bad value
raises ``ConfigError`` naming it; missing data files are reported by path before training.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blur_core.config import (
    ConfigError,
    at_least,
    checked,
    non_negative,
    one_of,
    parse,
    positive,
    to_dict,
)
from blur_core.data.qa import PROMPT_FORMATS, QAFormat, prompt_format
from blur_core.data.text import CHUNKING_MODES
from blur_core.methods import Objective, build_objective, resolved_hparams
from blur_core.train.adapters import ALL_LINEAR, is_plain_module_name

__all__ = [
    "AdapterConfig",
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "load_run_config",
    "parse_run_config",
]


@dataclass
class DataConfig:
    forget: str | list[str] | None = checked(
        None, doc="forget set file(s) (.json/.jsonl/.txt), concatenated"
    )
    retain: str | list[str] | None = checked(
        None, doc="retain set file(s) (.json/.jsonl/.txt), concatenated"
    )
    format: str = checked(
        "qa", check=one_of("qa", "text"), doc="qa: question/answer records; text: corpus"
    )
    forget_format: str | None = checked(
        None, check=one_of(None, "qa", "text"), doc="override format for forget"
    )
    retain_format: str | None = checked(
        None, check=one_of(None, "qa", "text"), doc="override format for retain"
    )
    question_key: str = "question"
    answer_key: str = "answer"
    text_key: str = "text"
    idk_file: str | None = checked(
        None,
        doc="refusal set for idk / dpo (preferred: idk): one refusal per line (TOFU's and "
        "open-unlearning's idk.jsonl layout); default: blur_core.data.qa.IDK_ANSWERS",
    )
    alternate_file: str | list[str] | None = checked(
        None,
        doc="dpo (preferred: alternate): records aligned with the forget set, each with its "
        "alternate answer in alternate_key (AltPO's layout); a list of files is read in order "
        "(one per data.forget file); default: the forget records",
    )
    alternate_key: str = checked("alternate", doc="field of the alternate answer")
    prompt_template: str = "Question: {question}\nAnswer:"
    use_chat_template: bool | None = checked(
        None, doc="None: use the tokenizer's chat template if it has one"
    )
    answer_prefix: str = checked(" ", doc="text before the answer when no chat template is used")
    prompt_format: str | None = checked(
        None,
        check=lambda v: (
            None
            if v is None or v in PROMPT_FORMATS
            else f"must be one of {sorted(PROMPT_FORMATS)} (blur_core.data.qa.PROMPT_FORMATS)"
        ),
        doc="a named prompt format (what a published model was fine-tuned with); replaces "
        "prompt_template / use_chat_template / answer_prefix",
    )
    max_length: int = checked(256, check=at_least(8), doc="token limit of one example")
    forget_max_length: int | None = checked(
        None, check=at_least(8), doc="override max_length for forget (e.g. RMU: bio 512, cyber 768)"
    )
    retain_max_length: int | None = checked(
        None, check=at_least(8), doc="override max_length for retain"
    )
    text_chunking: str = checked(
        "concat",
        check=one_of(*CHUNKING_MODES),
        doc="text: concat (documents + EOS, cut every max_length tokens); muse (MUSE's: "
        "joined by blank lines, BOS + max_length-1 tokens per chunk, no overlap); "
        "document (one example per document, truncated: RMU's)",
    )

    def validate(self, where: str) -> None:
        if self.prompt_format is None:
            return
        default = DataConfig()
        custom = [
            key
            for key in ("prompt_template", "use_chat_template", "answer_prefix")
            if getattr(self, key) != getattr(default, key)
        ]
        if custom:
            raise ConfigError(
                f"{where}.prompt_format = {self.prompt_format!r} and {where}.{custom[0]} are both "
                "set; a named format fixes the prompt: drop one of them"
            )

    def qa_format(self) -> QAFormat:
        """How QA records become prompts and answers (the named format, or the fields)."""
        if self.prompt_format is not None:
            fmt = prompt_format(self.prompt_format)
        else:
            fmt = QAFormat(
                prompt_template=self.prompt_template,
                answer_prefix=self.answer_prefix,
                use_chat_template=self.use_chat_template,
            )
        return dataclasses.replace(fmt, question_key=self.question_key, answer_key=self.answer_key)

    def format_of(self, which: str) -> str:
        return getattr(self, f"{which}_format") or self.format

    def max_length_of(self, which: str) -> int:
        return getattr(self, f"{which}_max_length") or self.max_length

    def files(self, which: str) -> list[str]:
        value = getattr(self, which)
        return [] if value is None else [value] if isinstance(value, str) else list(value)


def _unit_interval(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


@dataclass
class AdapterConfig:
    """LoRA adapters (built with the ``peft`` library); only their parameters are trained.

    The adapted layer computes ``W x + (alpha / rank) * B A x`` with ``A`` [rank, in]
    (Kaiming-uniform init, seeded by train.seed) and ``B`` [out, rank] (zero init), so the
    adapted model starts equal to the base model.
    """

    method: str = checked("lora", check=one_of("lora"), doc="adapter kind (LoRA only)")
    rank: int = checked(8, check=at_least(1), doc="LoRA rank r")
    alpha: float = checked(16.0, check=positive, doc="LoRA alpha; the update is scaled alpha/r")
    dropout: float = checked(
        0.0,
        check=_unit_interval,
        doc="dropout on the adapter input (> 0 breaks the batch-split invariance, as any dropout)",
    )
    target_modules: list[str] = checked(
        default_factory=lambda: [ALL_LINEAR],
        doc='modules to adapt: names (dotted suffixes, "q_proj"), regexes (full match on the '
        'module name) or ["all-linear"] (every linear layer but the output head)',
    )
    modules_to_save: list[str] = checked(
        default_factory=list,
        doc="modules trained in full beside the adapters (a trainable copy; names as in peft)",
    )

    def validate(self, where: str) -> None:
        if not self.target_modules:
            raise ConfigError(f"{where}.target_modules is empty; name at least one module")
        if ALL_LINEAR in self.target_modules and len(self.target_modules) > 1:
            raise ConfigError(
                f"{where}.target_modules = {self.target_modules}: {ALL_LINEAR!r} stands alone"
            )
        for i, entry in enumerate(self.target_modules):
            if entry != ALL_LINEAR and not is_plain_module_name(entry):
                try:
                    re.compile(entry)
                except re.error as exc:
                    raise ConfigError(
                        f"{where}.target_modules[{i}] = {entry!r}: not a valid regex ({exc})"
                    ) from None
        for i, entry in enumerate(self.modules_to_save):
            if not is_plain_module_name(entry):
                raise ConfigError(
                    f"{where}.modules_to_save[{i}] = {entry!r}: a module name "
                    f"(letters, digits, '_', '.'), e.g. 'lm_head'"
                )


@dataclass
class TrainConfig:
    max_steps: int | None = checked(None, check=at_least(1), doc="optimizer steps (or use epochs)")
    epochs: float | None = checked(
        None, check=positive, doc="passes over the forget set (retain for sft)"
    )
    micro_batch_size: int = checked(
        8, check=at_least(1), doc="examples per rank per micro-batch, each set"
    )
    grad_accum: int = checked(1, check=at_least(1), doc="micro-batches per optimizer step")
    optimizer: str = checked("adamw", check=one_of("adamw", "sgd"))
    lr: float = checked(1e-5, check=positive)
    weight_decay: float = checked(0.0, check=non_negative)
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = checked(1e-8, check=positive)
    momentum: float = checked(0.0, check=non_negative, doc="SGD momentum")
    schedule: str = checked("constant", check=one_of("constant", "linear", "cosine"))
    warmup_steps: int = checked(0, check=non_negative)
    max_grad_norm: float | None = checked(
        1.0, check=positive, doc="clip the combined update; null: off"
    )
    seed: int = 0
    dtype: str = checked("float32", check=one_of("float32", "bfloat16"))
    trainable: list[str] = checked(
        default_factory=list, doc="regexes of trainable parameter names; empty: all"
    )
    peft: AdapterConfig | None = checked(
        None, doc="LoRA adapters: only they train (null: full-parameter training)"
    )
    save_every: int = checked(
        0, check=non_negative, doc="checkpoint every N steps (0: only if resume needs)"
    )
    keep_checkpoints: int = checked(2, check=at_least(1))
    export_steps: list[int] = checked(
        default_factory=list,
        doc="after these optimizer steps, also write the weights (an HF model dir, or the "
        "adapter dir with peft) to <export_dir>/<N>/ (per-checkpoint evaluation); the "
        "training itself is unchanged",
    )
    resume: str = checked(
        "auto", check=one_of("auto", "never"), doc="auto: continue from the latest checkpoint"
    )
    progress: bool = True
    backend: str = checked(
        "local",
        check=one_of("local", "deepspeed"),
        doc="local: one process or torch.distributed data parallel; deepspeed: ZeRO",
    )
    deepspeed_config: str | None = checked(
        None,
        doc='DeepSpeed JSON path or a shipped name ("zero2", "zero3", "zero3_offload"); '
        'default "zero2" when backend is deepspeed',
    )

    def validate(self, where: str) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(
                f"{where}: set exactly one of max_steps and epochs "
                f"(got max_steps={self.max_steps}, epochs={self.epochs})"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{where}.betas = {list(self.betas)}: need two values in [0, 1)")
        bad = [s for s in self.export_steps if not isinstance(s, int) or s < 1]
        if bad:
            raise ConfigError(
                f"{where}.export_steps = {self.export_steps}: {bad[0]!r} is not a positive "
                "step number"
            )
        if any(b <= a for a, b in zip(self.export_steps, self.export_steps[1:])):
            raise ConfigError(
                f"{where}.export_steps = {self.export_steps}: list the steps in increasing "
                "order, each once"
            )
        if (
            self.max_steps is not None
            and self.export_steps
            and self.export_steps[-1] > self.max_steps
        ):
            raise ConfigError(
                f"{where}.export_steps = {self.export_steps}: step {self.export_steps[-1]} is "
                f"beyond the run's max_steps = {self.max_steps}"
            )
        if self.peft is not None and self.trainable:
            raise ConfigError(
                f"{where}.trainable = {self.trainable} and {where}.peft are both set; with "
                f"adapters only the adapter parameters train (use peft.target_modules / "
                f"peft.modules_to_save to choose them)"
            )
        if self.backend != "deepspeed" and self.deepspeed_config is not None:
            raise ConfigError(
                f"{where}.deepspeed_config is set but {where}.backend = {self.backend!r}; "
                f"set backend: deepspeed (or drop deepspeed_config)"
            )
        if self.backend == "deepspeed":
            if self.deepspeed_config is None:
                self.deepspeed_config = "zero2"
            from blur_core.train.zero import SHIPPED_CONFIGS

            if (
                self.deepspeed_config not in SHIPPED_CONFIGS
                and not Path(self.deepspeed_config).is_file()
            ):
                raise ConfigError(
                    f"{where}.deepspeed_config = {self.deepspeed_config!r}: neither a shipped "
                    f"config {list(SHIPPED_CONFIGS)} nor an existing JSON file"
                )


@dataclass
class RunConfig:
    model: str = checked(doc="HF model dir or hub id (the starting and reference model)")
    output_dir: str = checked(doc="where checkpoints, logs and the final model go")
    method: dict[str, Any] = checked(default_factory=lambda: {"name": "blur"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1))
    tokenizer: str | None = checked(None, doc="tokenizer path; default: the model's")
    final_model_dir: str | None = checked(
        None, doc="where the final model goes; default: <output_dir>/model"
    )
    export_dir: str | None = checked(
        None,
        doc="where train.export_steps' weights go (<export_dir>/<N>/); default: "
        "<output_dir>/steps_weights",
    )

    @property
    def final_model_path(self) -> Path:
        return (
            Path(self.final_model_dir) if self.final_model_dir else Path(self.output_dir) / "model"
        )

    @property
    def export_path(self) -> Path:
        return Path(self.export_dir) if self.export_dir else Path(self.output_dir) / "steps_weights"

    @property
    def method_name(self) -> str:
        return self.method["name"]

    def objective(self) -> Objective:
        hp = {k: v for k, v in self.method.items() if k != "name"}
        return build_objective(self.method_name, hp)

    def validate(self, where: str) -> None:
        if "name" not in self.method:
            raise ConfigError("method.name is required (e.g. method: {name: blur, gamma: 0.1})")
        obj = self.objective()
        if obj.uses_forget and not self.data.forget:
            raise ConfigError(f"method {self.method_name!r} needs data.forget (a forget set file)")
        if obj.uses_retain and not self.data.retain:
            raise ConfigError(f"method {self.method_name!r} needs data.retain (a retain set file)")
        if obj.needs_qa_forget and self.data.format_of("forget") != "qa":
            raise ConfigError(
                f"method {self.method_name!r} (forget loss {obj.forget_loss}) replaces or pairs "
                f"the forget answers with refusals or alternate answers and needs "
                f"question/answer data; data.forget is format "
                f"{self.data.format_of('forget')!r} (use ga, npo, simnpo, wga, satimp, ceu, "
                f"undial or rmu on text)"
            )
        for which in ("forget", "retain"):
            for path in self.data.files(which):
                if not Path(path).exists():
                    raise ConfigError(f"data.{which}: file not found: {path}")
        for key in ("idk_file", "alternate_file"):
            for path in self.data.files(key):
                if not Path(path).is_file():
                    raise ConfigError(f"data.{key}: file not found: {path}")

    def resolved(self) -> dict[str, Any]:
        """The full config with every default filled in, as written beside the outputs."""
        out = to_dict(self)
        hp = {k: v for k, v in self.method.items() if k != "name"}
        out["method"] = {"name": self.method_name, **resolved_hparams(self.method_name, hp)}
        return out


def parse_run_config(data: dict[str, Any], source: str = "<dict>") -> RunConfig:
    try:
        return parse(RunConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read RUN.yaml, apply dotted-key ``overrides`` ({"train.lr": 1e-4}), validate."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run config not found: {path}")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if (
                node.get(part) is None
            ):  # absent, or an empty section (`train:` with nothing under it)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {key}: {'.'.join(parts[: depth + 1])} is not a section "
                    f"(it is {node!r})"
                )
        node[parts[-1]] = value
    return parse_run_config(data, str(path))
