"""The pipeline's view of one experiment config (``config.yaml``): checks, runs, paths, job configs.

``Study(config)`` takes the config after Snakemake has validated it against
``workflow/schemas/config.schema.yaml`` (types, defaults) and does what a schema cannot:
the cross-field checks (an experiment naming an unknown benchmark, a missing data
directory, a suite that would be given two sources, ...), the run enumeration of the
sweep, and every job's settings. The Snakemake rules only call it, so all of it is
plain Python that the unit tests exercise directly.

Layout of the results (``R`` = ``config["results"]``)::

    R/data/{bench}/                                   prepared benchmark (TOFU hub layout)
    R/models/{bench}/{model}/base/                    embedded base model (its tokenizer fits the benchmark)
    R/models/imported/{model}/                        hf / gguf base model, imported once
    R/{bench}/{model}/finetune/{target,retain}/       target model (full set), retain-only model
    R/{bench}/{model}/runs/{entry}/{tag}/             one unlearning run (tag: see pipeline.tags)
    R/{bench}/{model}/{unit}/eval.json                evaluation of a model (unit: finetune/KIND or runs/E/T)
    R/{bench}/{model}/{unit}/suites/{name}.json       extra evaluation suites (config `evaluations`)
    R/{bench}/{model}/runs/{entry}/{tag}/relearn/k{K}/  the run fine-tuned K steps on a forget slice
    R/relearn_data/{bench}.jsonl                      the forget slice used for relearning
    R/report/                                         summary.csv, summary.md, tradeoff.png, plots/

Every job config is built from the config and the wildcards only (never from a rule's
``input``/``output``): Snakemake leaves params derived from input/output out of its
params rerun trigger, so a changed setting would not rerun the job.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blur_core.config import ConfigError
from blur_core.data.tofu import TOFU_SPLITS
from blur_core.eval.suites import parse_suite
from blur_core.methods import build_objective
from blur_core.pipeline.launch import launch_prefix, ranks_per_node
from blur_core.pipeline.tags import run_tag

__all__ = ["BENCHMARK_BOUND_SUITES", "RETAIN_UNIT", "Run", "Study"]

# suites that evaluate the experiment's own benchmark (the pipeline fills in source and split)
BENCHMARK_BOUND_SUITES = ("tofu_mc", "memorisation")
RETAIN_UNIT = "finetune/retain"  # the retain model is its own reference (forget quality, PrivLeak)
_SUITE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Run:
    """One unlearning job of the sweep."""

    bench: str
    model: str
    entry: str
    tag: str
    method: str
    hparams: tuple  # sorted (key, value) pairs: fixed + grid
    seed: int
    dir: str  # R/{bench}/{model}/runs/{entry}/{tag}


def _looks_like_path(src: str) -> bool:
    return src.startswith((".", "/")) or Path(src).exists()


class Study:
    """A checked experiment config: its runs, its result paths and every job's settings.

    Raises ``ConfigError`` (the message names the key and the bad value) on the first
    cross-field problem; the checks run in the order the config is read: experiments and
    methods (with every grid point's hyperparameters), then data and model sources, then
    evaluation suites.
    """

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.results: str = config["results"]
        self.runs: dict[tuple[str, str, str, str], Run] = self._enumerate_runs()
        self._check_sources()
        self.suites: dict[str, dict] = self._check_suites()
        self.relearn_steps: list[int] = sorted(set((config.get("relearn") or {}).get("steps", [])))

    # ------------------------------------------------------------------------- checks
    def _enumerate_runs(self) -> dict[tuple[str, str, str, str], Run]:
        config, runs = self.config, {}
        for i, exp in enumerate(config["experiments"]):
            bench, model = exp["benchmark"], exp["model"]
            if bench not in config["benchmarks"]:
                raise ConfigError(
                    f"experiments[{i}].benchmark = {bench!r} is not a key of benchmarks "
                    f"({sorted(config['benchmarks'])})"
                )
            if model not in config["models"]:
                raise ConfigError(
                    f"experiments[{i}].model = {model!r} is not a key of models "
                    f"({sorted(config['models'])})"
                )
            for entry, spec in config["methods"].items():
                grid = spec.get("grid", {})
                keys = sorted(grid)
                for combo in itertools.product(*(grid[k] for k in keys)):
                    point = dict(zip(keys, combo, strict=True))
                    hp = {**spec.get("fixed", {}), **point}
                    build_objective(spec["method"], hp, where=f"methods.{entry}")
                    for seed in config["unlearn"]["seeds"]:
                        tag = run_tag(point, seed)
                        run_dir = f"{self.results}/{bench}/{model}/runs/{entry}/{tag}"
                        hparams = tuple(sorted(hp.items()))
                        run = Run(bench, model, entry, tag, spec["method"], hparams, seed, run_dir)
                        runs[(bench, model, entry, tag)] = run
        return runs

    def _check_sources(self) -> None:
        config = self.config
        for name, b in config["benchmarks"].items():
            if b["kind"] == "tofu":
                src = b.get("source")
                if not src:
                    raise ConfigError(
                        f"benchmarks.{name}.source is required for kind tofu (a local dir or hub id)"
                    )
                if _looks_like_path(src) and not Path(src).is_dir():
                    raise ConfigError(f"benchmarks.{name}.source: directory not found: {src}")
            elif "retain_limit" in b:
                raise ConfigError(
                    f"benchmarks.{name}.retain_limit applies to kind tofu only "
                    f"(kind {b['kind']}: use people / questions_per_person)"
                )
        for name, m in config["models"].items():
            src = m.get("source")
            if m["kind"] in ("hf", "gguf") and not src:
                raise ConfigError(f"models.{name}.source is required for kind {m['kind']}")
            if m["kind"] == "gguf" and src != "smollm2" and not Path(src).is_file():
                raise ConfigError(f"models.{name}.source: GGUF file not found: {src}")
            if m["kind"] == "hf" and src.startswith((".", "/")) and not Path(src).is_dir():
                raise ConfigError(f"models.{name}.source: model directory not found: {src}")
        for exp in config["experiments"]:
            model_kind = config["models"][exp["model"]]["kind"]
            bench_kind = config["benchmarks"][exp["benchmark"]]["kind"]
            if model_kind == "embedded" and bench_kind != "embedded":
                raise ConfigError(
                    f"model {exp['model']!r} is an embedded tiny model; it can only run on "
                    "embedded benchmarks"
                )

    def _check_suites(self) -> dict[str, dict]:
        suites = {}
        for name, spec in (self.config.get("evaluations") or {}).items():
            where = f"evaluations.{name}"
            if not _SUITE_NAME.fullmatch(name):
                raise ConfigError(
                    f"{where}: suite names may hold only letters, digits, '_', '.', '-'"
                )
            spec = dict(spec)
            if spec["kind"] in BENCHMARK_BOUND_SUITES:
                if "source" in spec:
                    raise ConfigError(
                        f"{where}.source: a {spec['kind']} suite uses each experiment's own "
                        "benchmark; remove `source`"
                    )
                probe = {**spec, "source": "<benchmark>"}
            else:
                src = spec.get("source")
                if src and _looks_like_path(src) and not Path(src).is_dir():
                    raise ConfigError(f"{where}.source: directory not found: {src}")
                probe = spec
            if "forget_split" in spec:
                raise ConfigError(
                    f"{where}.forget_split: set by the experiment's benchmark; remove it"
                )
            parse_suite(probe, where)
            suites[name] = spec
        return suites

    # ------------------------------------------------------------------------- paths
    def data_dir(self, bench: str) -> str:
        return f"{self.results}/data/{bench}"

    def base_model_dir(self, bench: str, model: str) -> str:
        if self.config["models"][model]["kind"] == "embedded":
            return f"{self.results}/models/{bench}/{model}/base"
        return f"{self.results}/models/imported/{model}"

    def finetuned_dir(self, bench: str, model: str, kind: str) -> str:
        return f"{self.results}/{bench}/{model}/finetune/{kind}"

    def unit_dir(self, bench: str, model: str, unit: str) -> str:
        """The directory of an evaluated model (unit: finetune/KIND, runs/E/T[/relearn/kK])."""
        return f"{self.results}/{bench}/{model}/{unit}"

    def relearn_data(self, bench: str) -> str:
        return f"{self.results}/relearn_data/{bench}.jsonl"

    def report_dir(self) -> str:
        return f"{self.results}/report"

    def run_of(self, bench: str, model: str, entry: str, tag: str) -> Run:
        key = (bench, model, entry, tag)
        if key not in self.runs:
            raise KeyError(f"no run {'/'.join(key)} in the sweep")
        return self.runs[key]

    def split_files(self, bench: str) -> tuple[str, str]:
        """(forget split, its retain split), e.g. ('forget10', 'retain90')."""
        forget = self.config["benchmarks"][bench]["forget_split"]
        return forget, TOFU_SPLITS[forget]

    # ------------------------------------------------------------------------- targets
    def units(self) -> list[str]:
        """Every evaluated model's directory: target, retain and each run."""
        units = []
        for exp in self.config["experiments"]:
            for kind in ("target", "retain"):
                units.append(self.finetuned_dir(exp["benchmark"], exp["model"], kind))
        return units + [run.dir for run in self.runs.values()]

    def eval_files(self) -> list[str]:
        files = [f"{unit}/eval.json" for unit in self.units()]
        files += [
            f"{run.dir}/relearn/k{k}/eval.json"
            for run in self.runs.values()
            for k in self.relearn_steps
        ]
        return files

    def suite_files(self) -> list[str]:
        return [f"{unit}/suites/{name}.json" for unit in self.units() for name in self.suites]

    def train_summaries(self) -> list[str]:
        files = []
        for exp in self.config["experiments"]:
            for kind in ("target", "retain"):
                files.append(
                    f"{self.finetuned_dir(exp['benchmark'], exp['model'], kind)}/summary.json"
                )
        return files + [f"{run.dir}/summary.json" for run in self.runs.values()]

    def suite_outputs(self) -> list[str]:
        """The evaluate_suites rule's outputs, as wildcard patterns."""
        return [
            f"{self.results}/{{bench}}/{{model}}/{{unit}}/suites/{name}.json"
            for name in self.suites
        ]

    def retain_eval(self, bench: str, model: str, unit: str) -> list[str]:
        """Forget quality compares against the retain model's truth ratios (none for itself)."""
        if unit == RETAIN_UNIT:
            return []
        return [f"{self.finetuned_dir(bench, model, 'retain')}/eval.json"]

    def retain_suites(self, bench: str, model: str, unit: str) -> list[str]:
        """PrivLeak compares against the retain model's AUC (none for itself)."""
        if unit == RETAIN_UNIT:
            return []
        retain = self.finetuned_dir(bench, model, "retain")
        return [f"{retain}/suites/{name}.json" for name in self.suites]

    # ------------------------------------------------------------------------- job settings
    def model_dtype(self, model: str) -> str:
        return self.config["models"][model].get("dtype", "float32")

    def _finetune_files(self, bench: str, kind: str) -> list[str]:
        _, retain = self.split_files(bench)
        files = ["full.json" if kind == "target" else f"{retain}.json"]
        # the embedded benchmark's utility knowledge plays the role of what a real base model
        # learnt in pretraining, so both the target and the retain model are trained on it
        if self.config["benchmarks"][bench]["kind"] == "embedded":
            files.append("pretrain.json")
        return [f"{self.data_dir(bench)}/{name}" for name in files]

    def finetune_config(self, bench: str, model: str, kind: str) -> dict:
        """The run config of the target (full set) or retain (retain split) fine-tune."""
        ft = self.config["finetune"]
        out = self.finetuned_dir(bench, model, kind)
        return {
            "model": self.base_model_dir(bench, model),
            "output_dir": out,
            "final_model_dir": f"{out}/model",
            "method": {"name": "sft"},
            "data": {"retain": self._finetune_files(bench, kind), "max_length": ft["max_length"]},
            "train": {
                "epochs": ft["epochs"],
                "micro_batch_size": ft["micro_batch_size"],
                "grad_accum": ft["grad_accum"],
                "lr": ft["lr"],
                "schedule": ft["schedule"],
                "warmup_steps": ft["warmup_steps"],
                "seed": ft["seed"],
                "optimizer": "adamw",
                "dtype": self.model_dtype(model),
                "progress": False,
            },
        }

    def unlearn_config(self, run: Run) -> dict:
        """The run config of one sweep point: unlearn.train, then the entry's own train
        overrides, then seed / dtype; the backend when it is not local."""
        un = self.config["unlearn"]
        forget, retain = self.split_files(run.bench)
        train = {**un.get("train", {}), **self.config["methods"][run.entry].get("train", {})}
        train.update(seed=run.seed, dtype=self.model_dtype(run.model), progress=False)
        if un["backend"] != "local":
            train.update(backend=un["backend"], deepspeed_config=un["deepspeed_config"])
        data = self.data_dir(run.bench)
        return {
            "model": f"{self.finetuned_dir(run.bench, run.model, 'target')}/model",
            "output_dir": run.dir,
            "final_model_dir": f"{run.dir}/final",
            "method": {"name": run.method, **dict(run.hparams)},
            "data": {
                "forget": f"{data}/{forget}.json",
                "retain": f"{data}/{retain}.json",
                "max_length": un["max_length"],
            },
            "train": train,
        }

    def relearn_config(self, run: Run, k: int) -> dict:
        """sft of an unlearned run for ``k`` steps on the forget slice (same length limit)."""
        rl, un = self.config["relearn"], self.config["unlearn"]
        out = f"{run.dir}/relearn/k{k}"
        return {
            "model": f"{run.dir}/model",
            "output_dir": out,
            "final_model_dir": f"{out}/model",
            "method": {"name": "sft"},
            "data": {"retain": self.relearn_data(run.bench), "max_length": un["max_length"]},
            "train": {
                "max_steps": int(k),
                "micro_batch_size": rl["micro_batch_size"],
                "lr": rl["lr"],
                "optimizer": "adamw",
                "seed": rl["seed"],
                "max_grad_norm": 1.0,
                "dtype": self.model_dtype(run.model),
                "progress": False,
            },
        }

    def unlearn_launcher(self, resources: Mapping[str, Any]) -> str:
        """``python -m`` / ``torchrun ... -m`` / ``srun ... torchrun ... -m`` for an unlearn job
        with these Snakemake resources (see :mod:`blur_core.pipeline.launch`)."""
        ranks = ranks_per_node(resources, self.config["unlearn"]["nproc"])
        return launch_prefix(ranks, int(resources.get("nodes", 1) or 1))

    def gpu_resources(self) -> dict[str, Any]:
        """The ``gpu`` / ``gres`` resources of a GPU job from ``unlearn.gpus``."""
        gpus = self.config["unlearn"]["gpus"]
        return {"gpu": gpus, "gres": f"gpu:{gpus}" if gpus > 0 else ""}

    # ------------------------------------------------------------------------- command lines
    def data_args(self, bench: str) -> str:
        b = self.config["benchmarks"][bench]
        if b["kind"] == "embedded":
            return (
                f"--benchmark embedded --people {b['people']} "
                f"--questions-per-person {b['questions_per_person']} --seed {b['seed']}"
            )
        args = f"--benchmark tofu --source {b['source']}"
        if "retain_limit" in b:
            args += f" --forget-split {b['forget_split']} --retain-limit {b['retain_limit']}"
        return args

    def model_args(self, model: str) -> str:
        m = self.config["models"][model]
        if m["kind"] == "gguf":
            return "--smollm2" if m["source"] == "smollm2" else f"--gguf {m['source']}"
        return f"--hf {m['source']}"

    def embedded_model_args(self, model: str) -> str:
        m = self.config["models"][model]
        return f"--hidden-size {m['hidden_size']} --layers {m['layers']} --seed {m['seed']}"

    def eval_args(self, bench: str) -> str:
        forget, _ = self.split_files(bench)
        ev = self.config["evaluate"]
        args = [
            f"--forget-split {forget}",
            f"--batch-size {ev['batch_size']}",
            f"--max-new-tokens {ev['max_new_tokens']}",
            f"--max-length {ev['max_length']}",
        ]
        if ev.get("limit"):
            args.append(f"--limit {ev['limit']}")
        return " ".join(args)

    def retain_eval_arg(self, bench: str, model: str, unit: str) -> str:
        if unit == RETAIN_UNIT:
            return "--self-reference"
        return f"--retain-result {self.finetuned_dir(bench, model, 'retain')}/eval.json"

    def retain_suites_arg(self, bench: str, model: str, unit: str) -> str:
        if unit == RETAIN_UNIT:
            return "--self-reference"
        return f"--retain-dir {self.finetuned_dir(bench, model, 'retain')}/suites"

    def suites_spec(self, bench: str) -> dict:
        """All suites of one model as ``evaluate-suites --suites-json`` takes them; the
        benchmark-bound kinds get the benchmark's dir and forget split."""
        forget, _ = self.split_files(bench)
        suites = {}
        for name, spec in self.suites.items():
            spec = dict(spec)
            if spec["kind"] in BENCHMARK_BOUND_SUITES:
                spec.update(source=self.data_dir(bench), forget_split=forget)
            suites[name] = spec
        return {"suites": suites}

    def relearn_slice_args(self, bench: str) -> str:
        forget, _ = self.split_files(bench)
        return (
            f"--input {self.data_dir(bench)}/{forget}.json "
            f"--fraction {self.config['relearn']['fraction']}"
        )


def to_json(obj: Any) -> str:
    """The stable JSON text a rule's params hold (sorted keys)."""
    return json.dumps(obj, sort_keys=True)
