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
    R/{bench}/{model}/published/{target,retain}/      published target / retain model, imported once
    R/{bench}/{model}/runs/{entry}/{tag}/             one unlearning run (tag: see pipeline.tags)
    R/{bench}/{model}/{unit}/eval.json                evaluation of a model (unit: finetune/KIND,
                                                      published/KIND, runs/E/T[/relearn/kK|/steps/N])
    R/{bench}/{model}/{unit}/suites/{name}.json       extra evaluation suites (config `evaluations`)
    R/{bench}/{model}/runs/{entry}/{tag}/relearn/k{K}/  the run fine-tuned K steps on a forget slice
    R/{bench}/{model}/runs/{entry}/{tag}/steps/{N}/   checkpoint N of the run (unlearn.eval_checkpoints;
                                                      its weights are temp, eval.json stays)
    R/{bench}/{model}/runs/{entry}/{tag}/selected/    selection.json: the checkpoint unlearn.select chose
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

from blur_core import hub
from blur_core.atomic import atomic_write_text
from blur_core.config import ConfigError
from blur_core.data.corpus import training_defaults
from blur_core.data.embedded import IDK_FILE, PREFERRED_DIR, alternate_file
from blur_core.data.tofu import TOFU_ALL_FILES, TOFU_SPLITS
from blur_core.eval.suites import parse_suite
from blur_core.fingerprint import COMMANDS, code_fingerprint
from blur_core.methods import build_objective
from blur_core.pipeline.launch import launch_prefix, ranks_per_node
from blur_core.pipeline.tags import run_tag
from blur_core.selection import NEEDS_RETAIN, Selection, metric_names, parse_selection

QA_KINDS = ("embedded", "tofu")  # question/answer benchmarks in the TOFU layout
CORPUS_KINDS = ("muse", "wmdp", "corpus-embedded")  # text corpora (blur_core.data.corpus)
DEFAULT_PROTOCOL = {"muse": "muse", "wmdp": "wmdp", "corpus-embedded": "muse"}
# benchmark keys that only some kinds take (the schema lists every key for every kind)
BENCHMARK_KEY_KINDS: dict[str, tuple[str, ...]] = {
    "source": ("tofu", "muse", "wmdp"),
    "retain_limit": ("tofu",),
    "protocol": CORPUS_KINDS,
    "max_length": CORPUS_KINDS,
    "evaluate": CORPUS_KINDS,
    "retain": ("muse", "wmdp"),
    "forget_docs": ("muse", "wmdp"),
    "retain_docs": ("muse", "wmdp"),
    "forget_verbmem": ("muse",),
    "subset": ("wmdp",),
    "min_chars": ("wmdp",),
    "wmdp_source": ("wmdp",),
    "mmlu_source": ("wmdp",),
    "forget_fraction": ("corpus-embedded",),
    "idk_file": ("tofu",),
    "alternate_file": ("tofu",),
}

__all__ = [
    "BENCHMARK_BOUND_SUITES",
    "CORPUS_KINDS",
    "QA_KINDS",
    "REFERENCE_KINDS",
    "TRAINING_STAGES",
    "Experiment",
    "Run",
    "Study",
]

# suites that evaluate the experiment's own benchmark (the pipeline fills in source and split)
BENCHMARK_BOUND_SUITES = ("tofu_mc", "memorisation")
REFERENCE_KINDS = ("target", "retain")
TRAINING_STAGES = ("finetune", "unlearn", "relearn")  # each: backend, nproc, gpus, nodes
_SUITE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Experiment:
    """One (benchmark, model) pair of ``experiments``, with its published models if any."""

    index: int
    bench: str
    model: str
    target: str | None  # published target (hub id or local dir); None: fine-tuned
    retain: str | None  # published retain model; None: fine-tuned, or none (see reference)
    prompt_format: str | None  # None: the model's, else auto
    train: dict  # unlearn.train overrides for this experiment's runs (e.g. warmup per split)
    protocol: str = "qa"  # qa (TOFU-style), muse or wmdp (text corpora)
    target_is_base: bool = False  # wmdp: unlearning starts from the base model itself
    methods: tuple[str, ...] | None = None  # the sweep entries run here (None: all)

    def reference(self, kind: str) -> str | None:
        """Where the target / retain model comes from: "published" (imported once: a named
        checkpoint, or the base model itself under the wmdp protocol), "finetune", or None
        (no retain model: a published target without a published retain model, and always
        under the wmdp protocol)."""
        if kind == "target" and (self.target is not None or self.target_is_base):
            return "published"
        if kind == "retain" and self.retain is not None:
            return "published"
        if kind == "retain" and (self.target is not None or self.protocol == "wmdp"):
            return None
        return "finetune"


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
        self.experiments: dict[tuple[str, str], Experiment] = self._check_experiments()
        self.runs: dict[tuple[str, str, str, str], Run] = self._enumerate_runs()
        self._check_sources()
        self._check_preferred_answers()
        self.suites: dict[str, dict] = self._check_suites()
        self.relearn_steps: list[int] = sorted(set((config.get("relearn") or {}).get("steps", [])))
        # run key -> the steps evaluated besides the final model (unlearn.eval_checkpoints)
        self.checkpoints: dict[tuple[str, str, str, str], list[int]] = self._check_checkpoints()
        self.selection: Selection | None = self._check_selection()
        self._check_train_sections()
        self._check_hub_ids()

    # ------------------------------------------------------------------------- checks
    def _check_experiments(self) -> dict[tuple[str, str], Experiment]:
        config, experiments = self.config, {}
        for i, exp in enumerate(config["experiments"]):
            bench, model = exp["benchmark"], exp["model"]
            where = f"experiments[{i}]"
            if bench not in config["benchmarks"]:
                raise ConfigError(
                    f"{where}.benchmark = {bench!r} is not a key of benchmarks "
                    f"({sorted(config['benchmarks'])})"
                )
            if model not in config["models"]:
                raise ConfigError(
                    f"{where}.model = {model!r} is not a key of models ({sorted(config['models'])})"
                )
            if (bench, model) in experiments:
                first = experiments[(bench, model)].index
                raise ConfigError(
                    f"{where} repeats experiments[{first}] (benchmark {bench!r}, model {model!r}); "
                    "their results would share a directory: give the second one another model key"
                )
            for kind in REFERENCE_KINDS:
                src = exp.get(kind)
                if src is not None and not hub.is_hub_id(src) and not Path(src).is_dir():
                    raise ConfigError(
                        f"{where}.{kind}: {src!r} is neither a model directory nor a hub id "
                        "(org/name)"
                    )
            if exp.get("retain") is not None and exp.get("target") is None:
                raise ConfigError(
                    f"{where}.retain is set but {where}.target is not: give the published target "
                    "as well (a fine-tuned target would not match a published retain model)"
                )
            prompt = exp.get("prompt_format") or config["models"][model].get("prompt_format")
            protocol = self.protocol(bench)
            if protocol == "wmdp" and exp.get("retain") is not None:
                raise ConfigError(
                    f"{where}.retain: benchmark {bench!r} follows the wmdp protocol, which has no "
                    "retain model (unlearning starts from the base model); remove it"
                )
            target_is_base = (
                protocol == "wmdp"
                and exp.get("target") is None
                and config["models"][model]["kind"] != "embedded"
            )
            methods = exp.get("methods")
            if methods is not None:
                unknown = [m for m in methods if m not in config["methods"]]
                if unknown:
                    raise ConfigError(
                        f"{where}.methods: {unknown[0]!r} is not a key of methods "
                        f"({sorted(config['methods'])})"
                    )
                methods = tuple(methods)
            experiments[(bench, model)] = Experiment(
                i,
                bench,
                model,
                exp.get("target"),
                exp.get("retain"),
                prompt,
                exp.get("train", {}),
                protocol,
                target_is_base,
                methods,
            )
        return experiments

    def _enumerate_runs(self) -> dict[tuple[str, str, str, str], Run]:
        config, runs = self.config, {}
        for (bench, model), exp in self.experiments.items():
            for entry, spec in config["methods"].items():
                if exp.methods is not None and entry not in exp.methods:
                    continue
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
            self._check_corpus_benchmark(name, b)
        for name, m in config["models"].items():
            src = m.get("source")
            if m["kind"] in ("hf", "gguf") and not src:
                raise ConfigError(f"models.{name}.source is required for kind {m['kind']}")
            if m["kind"] == "gguf" and src != "smollm2" and not Path(src).is_file():
                raise ConfigError(f"models.{name}.source: GGUF file not found: {src}")
            if m["kind"] == "hf" and src.startswith((".", "/")) and not Path(src).is_dir():
                raise ConfigError(f"models.{name}.source: model directory not found: {src}")
        for exp in self.experiments.values():
            model_kind = config["models"][exp.model]["kind"]
            bench_kind = config["benchmarks"][exp.bench]["kind"]
            if model_kind == "embedded" and bench_kind not in ("embedded", "corpus-embedded"):
                raise ConfigError(
                    f"model {exp.model!r} is an embedded tiny model; it can only run on "
                    "embedded benchmarks (embedded, corpus-embedded)"
                )
            if model_kind == "embedded" and exp.target is not None:
                raise ConfigError(
                    f"experiments[{exp.index}].target: model {exp.model!r} is an embedded tiny "
                    "model, built and fine-tuned by the pipeline; published models need kind hf"
                )

    def _check_preferred_answers(self) -> None:
        """A benchmark's refusal / alternate-answer files exist, and every run whose method
        needs alternate answers (dpo, preferred: alternate) has them."""
        for name, b in self.config["benchmarks"].items():
            for key in ("idk_file", "alternate_file"):
                if key in b and not Path(b[key]).is_file():
                    raise ConfigError(f"benchmarks.{name}.{key}: file not found: {b[key]}")
        for run in self.runs.values():
            if "alternate_file" in self.preferred_data(run):
                continue
            obj = build_objective(run.method, dict(run.hparams))
            if obj.preferred_answers == "alternate":
                split = self.split_files(run.bench)[0]
                raise ConfigError(
                    f"methods.{run.entry}: preferred: alternate needs alternate answers for "
                    f"benchmark {run.bench!r}: set benchmarks.{run.bench}.alternate_file (the "
                    f"{split} records in order, each with an 'alternate' answer; the embedded "
                    f"benchmark writes its own)"
                )

    def _check_corpus_benchmark(self, name: str, b: Mapping[str, Any]) -> None:
        """Keys that belong to some kinds only, sources and the protocol of a corpus kind."""
        where = f"benchmarks.{name}"
        for key, kinds in BENCHMARK_KEY_KINDS.items():
            if key in b and b["kind"] not in kinds:
                raise ConfigError(
                    f"{where}.{key} applies to kind {' / '.join(kinds)} only (kind {b['kind']!r})"
                )
        if b["kind"] in QA_KINDS:
            return
        if b["kind"] != "corpus-embedded":
            src = b.get("source")
            if not src:
                raise ConfigError(
                    f"{where}.source is required for kind {b['kind']} (a local dir or hub id)"
                )
            if _looks_like_path(src) and not Path(src).is_dir():
                raise ConfigError(f"{where}.source: directory not found: {src}")
        protocol = self.protocol(name)
        if b["kind"] == "wmdp" and protocol != "wmdp":
            raise ConfigError(
                f"{where}.protocol = {protocol!r}: a wmdp corpus has no MUSE "
                "evaluation sets; use protocol wmdp"
            )
        if b["kind"] == "wmdp" and not b.get("wmdp_source"):
            raise ConfigError(
                f"{where}.wmdp_source is required: the wmdp protocol scores WMDP's multiple-choice "
                "questions (a dir with wmdp-bio.json / wmdp-cyber.json such as ../shared/data/wmdp, "
                "or cais/wmdp), which are not part of the corpora"
            )
        for key in ("wmdp_source", "mmlu_source"):
            src = b.get(key)
            if src and _looks_like_path(src) and not Path(src).is_dir():
                raise ConfigError(f"{where}.{key}: directory not found: {src}")

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
                corpus = sorted({e.bench for e in self.experiments.values() if e.protocol != "qa"})
                if corpus:
                    raise ConfigError(
                        f"{where}: a {spec['kind']} suite reads each experiment's TOFU-style "
                        f"benchmark, and {corpus[0]!r} is a text corpus (its own protocol "
                        "evaluates it); run the QA suites in a study of QA benchmarks"
                    )
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

    def _check_checkpoints(self) -> dict[tuple[str, str, str, str], list[int]]:
        """``unlearn.eval_checkpoints``: a list of steps (positive, increasing, before each
        run's last step) or ``{every: N}`` (N, 2N, ... before the last step; needs
        ``max_steps``). Absent or empty: no run evaluates checkpoints."""
        where = "unlearn.eval_checkpoints"
        spec = self.config["unlearn"].get("eval_checkpoints")
        if not spec:
            return {}
        every = None
        if isinstance(spec, Mapping):
            if set(spec) != {"every"}:
                raise ConfigError(
                    f"{where} = {dict(spec)}: expected a list of steps or {{every: N}}"
                )
            every = spec["every"]
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ConfigError(f"{where}.every = {every!r}: a positive number of steps")
        else:
            steps = list(spec)
            bad = [v for v in steps if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise ConfigError(f"{where} = {steps}: {bad[0]!r} is not a positive step number")
            for a, b in itertools.pairwise(steps):
                if b <= a:
                    raise ConfigError(f"{where} = {steps}: steps must increase ({b} follows {a})")
        out = {}
        for key, run in self.runs.items():
            run_where = f"{where} (run {run.entry}/{run.tag} of {run.bench}/{run.model})"
            total = self._unlearn_train(run).get("max_steps")
            if every is not None:
                if total is None:
                    raise ConfigError(
                        f"{run_where}: {{every: {every}}} needs train.max_steps (the run trains "
                        "for a number of epochs); list the steps instead"
                    )
                out[key] = list(range(every, total, every))
                if not out[key]:
                    raise ConfigError(
                        f"{run_where}: every {every} steps gives no checkpoint before the "
                        f"run's last step {total}"
                    )
                continue
            if total is not None and steps[-1] >= total:
                raise ConfigError(
                    f"{run_where}: step {steps[-1]} is not before the run's last step "
                    f"(train.max_steps = {total}); the final model is always evaluated, list "
                    "only earlier steps"
                )
            out[key] = steps
        return out

    def _check_selection(self) -> Selection | None:
        """``unlearn.select``: the criterion (blur_core.selection), its metrics known to
        every experiment's protocol, a retain model where a metric or reference needs one."""
        spec = self.config["unlearn"].get("select")
        if not spec:
            return None
        where = "unlearn.select"
        if not self.checkpoints:
            raise ConfigError(
                f"{where} chooses among evaluated checkpoints: set unlearn.eval_checkpoints too"
            )
        selection = None
        for exp in self.experiments.values():
            try:
                selection = parse_selection(spec, where, metric_names(exp.protocol))
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc} [experiment {exp.bench}/{exp.model}, protocol {exp.protocol}]"
                ) from None
            has_retain = exp.reference("retain") is not None
            for metric in selection.metrics():
                if metric in NEEDS_RETAIN and not has_retain:
                    raise ConfigError(
                        f"{where}: {metric} compares against the retain model and experiment "
                        f"{exp.bench}/{exp.model} has none"
                    )
            for c in selection.constraints:
                if c.ref == "retain" and not has_retain:
                    raise ConfigError(
                        f"{where}.subject_to = {c.text!r}: experiment {exp.bench}/{exp.model} "
                        "has no retain model"
                    )
        return selection

    def _check_train_sections(self) -> None:
        """Every training job's ``train`` section through the library's validation (a typo,
        a bad value, a LoRA target that is not a module name... fail here, not in a job)."""
        from blur_core.config import parse
        from blur_core.train.config import TrainConfig

        seen = set()
        for run in self.runs.values():
            key = (run.bench, run.model, run.entry)
            if key in seen:
                continue
            seen.add(key)
            where = f"unlearn.train + experiments[{self.experiment(run.bench, run.model).index}]"
            train = self.unlearn_config(run)["train"]
            parse(TrainConfig, train, f"{where}.train + methods.{run.entry}.train")
        for exp in self.experiments.values():
            if "finetune" in (exp.reference("target"), exp.reference("retain")):
                parse(
                    TrainConfig,
                    self.finetune_config(exp.bench, exp.model, "target")["train"],
                    "finetune",
                )
        run = next(iter(self.runs.values()), None)
        if run is not None and self.relearn_steps:
            parse(TrainConfig, self.relearn_config(run, self.relearn_steps[0])["train"], "relearn")

    def _check_hub_ids(self) -> None:
        """Offline (HF_HUB_OFFLINE=1), every hub id a job will load must be in the hub cache:
        the base models of fine-tuned experiments, published targets / retain models, TOFU
        sources. Fails naming the key, the id and the command that fills the cache."""
        if not hub.is_offline():
            return
        needed: list[tuple[str, str, str]] = []  # (where, id, repo type)
        for exp in self.experiments.values():
            m = self.config["models"][exp.model]
            fine_tuned = "finetune" in (exp.reference("target"), exp.reference("retain"))
            if (
                (fine_tuned or exp.target_is_base)
                and m["kind"] == "hf"
                and hub.is_hub_id(m["source"])
            ):
                needed.append((f"models.{exp.model}.source", m["source"], "model"))
            for kind in REFERENCE_KINDS:
                src = getattr(exp, kind)
                if src is not None and hub.is_hub_id(src):
                    needed.append((f"experiments[{exp.index}].{kind}", src, "model"))
            b = self.config["benchmarks"][exp.bench]
            if b["kind"] == "tofu" and hub.is_hub_id(b["source"]):
                needed.append((f"benchmarks.{exp.bench}.source", b["source"], "dataset"))
        for where, repo_id, repo_type in needed:
            try:
                snapshot = hub.require(repo_id, repo_type, where)
            except hub.HubIdMissing as exc:
                raise ConfigError(str(exc)) from None
            if repo_type == "dataset" and not all((snapshot / f).is_file() for f in TOFU_ALL_FILES):
                missing = [f for f in TOFU_ALL_FILES if not (snapshot / f).is_file()]
                raise ConfigError(
                    f"{where}: the cached snapshot of {repo_id!r} ({snapshot}) lacks the TOFU "
                    f"files {missing[:3]}{' ...' if len(missing) > 3 else ''}: give a local "
                    "directory in the TOFU layout instead"
                )

    # ------------------------------------------------------------------------- paths
    def data_dir(self, bench: str) -> str:
        return f"{self.results}/data/{bench}"

    def base_model_dir(self, bench: str, model: str) -> str:
        if self.config["models"][model]["kind"] == "embedded":
            return f"{self.results}/models/{bench}/{model}/base"
        return f"{self.results}/models/imported/{model}"

    def finetuned_dir(self, bench: str, model: str, kind: str) -> str:
        return f"{self.results}/{bench}/{model}/finetune/{kind}"

    def experiment(self, bench: str, model: str) -> Experiment:
        return self.experiments[(bench, model)]

    def reference_unit(self, bench: str, model: str, kind: str) -> str | None:
        """``finetune/KIND`` or ``published/KIND``; None when the experiment has no such model."""
        source = self.experiment(bench, model).reference(kind)
        return None if source is None else f"{source}/{kind}"

    def reference_dir(self, bench: str, model: str, kind: str) -> str | None:
        unit = self.reference_unit(bench, model, kind)
        return None if unit is None else self.unit_dir(bench, model, unit)

    def target_model(self, bench: str, model: str) -> str:
        """The model every unlearning run of the experiment starts from."""
        return f"{self.reference_dir(bench, model, 'target')}/model"

    def is_retain_unit(self, bench: str, model: str, unit: str) -> bool:
        return unit == self.reference_unit(bench, model, "retain")

    def unit_dir(self, bench: str, model: str, unit: str) -> str:
        """The directory of an evaluated model (unit: finetune/KIND, runs/E/T[/relearn/kK|/steps/N])."""
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

    def protocol(self, bench: str) -> str:
        """qa (TOFU-style), or a corpus kind's protocol: muse or wmdp (``benchmarks.B.protocol``,
        default by kind: muse -> muse, wmdp -> wmdp, corpus-embedded -> muse)."""
        b = self.config["benchmarks"][bench]
        if b["kind"] in QA_KINDS:
            return "qa"
        return b.get("protocol") or DEFAULT_PROTOCOL[b["kind"]]

    def split_files(self, bench: str) -> tuple[str, str]:
        """(forget split, its retain split), e.g. ('forget10', 'retain90'); for a corpus the
        prepared files' stems ('forget', 'retain')."""
        if self.protocol(bench) != "qa":
            return "forget", "retain"
        forget = self.config["benchmarks"][bench]["forget_split"]
        return forget, TOFU_SPLITS[forget]

    def _set_file(self, bench: str, which: str) -> str:
        """The forget / retain training file of a benchmark."""
        stem = self.split_files(bench)[0 if which == "forget" else 1]
        ext = "json" if self.protocol(bench) == "qa" else "jsonl"
        return f"{self.data_dir(bench)}/{stem}.{ext}"

    def preferred_data(self, run: Run) -> dict:
        """The run's ``data`` keys for the answers its forget loss substitutes or prefers:
        ``idk_file`` (idk, dpo with refusals) and ``alternate_file`` (dpo with alternate
        answers), from ``benchmarks.B.idk_file`` / ``alternate_file``, else the embedded
        benchmark's own (``preferred/`` of its data dir), else none (the built-in refusals;
        a missing alternate file is refused when the study is checked)."""
        obj = build_objective(run.method, dict(run.hparams))
        if not obj.uses_forget:
            return {}
        b = self.config["benchmarks"][run.bench]
        embedded = b["kind"] == "embedded"
        out = {}
        if "idk" in (obj.forget_answers, obj.preferred_answers):
            own = f"{self.data_dir(run.bench)}/{PREFERRED_DIR}/{IDK_FILE}" if embedded else None
            if b.get("idk_file", own):
                out["idk_file"] = b.get("idk_file", own)
        if obj.preferred_answers == "alternate":
            # the embedded benchmark's own: one file per forget file (its second wording too)
            own = (
                [
                    f"{self.data_dir(run.bench)}/{alternate_file(s)}"
                    for s in self._forget_stems(run.bench)
                ]
                if embedded
                else None
            )
            if b.get("alternate_file", own):
                out["alternate_file"] = b.get("alternate_file", own)
        return out

    def _with_paraphrases(self, bench: str, stem: str) -> list[str]:
        """The training files of split ``stem``: ``<stem>.json``, plus on the embedded
        benchmark ``<stem>_paraphrased.json`` (its facts in a second wording, so that truth
        ratios measure knowledge, not wording: ``blur_core.data.embedded.paraphrase_record``)."""
        names = [f"{stem}.json"]
        if self.config["benchmarks"][bench]["kind"] == "embedded":
            names.append(f"{stem}_paraphrased.json")
        return [f"{self.data_dir(bench)}/{name}" for name in names]

    def _forget_stems(self, bench: str) -> list[str]:
        """The stems of an unlearning run's forget files (``forget10``, ``forget10_paraphrased``)."""
        files = self._unlearn_files(bench, "forget")
        return [Path(f).stem for f in ([files] if isinstance(files, str) else files)]

    def _unlearn_files(self, bench: str, which: str) -> str | list[str]:
        """``data.forget`` / ``data.retain`` of an unlearning run: the split's file (a corpus,
        TOFU), or its files with the paraphrases (the embedded benchmark)."""
        if self.protocol(bench) != "qa" or self.config["benchmarks"][bench]["kind"] != "embedded":
            return self._set_file(bench, which)
        return self._with_paraphrases(bench, self.split_files(bench)[0 if which == "forget" else 1])

    def corpus_data(self, bench: str) -> dict:
        """The ``data:`` keys a corpus benchmark trains with (format, chunking, lengths; a
        ``benchmarks.B.max_length`` replaces every length); {} for QA benchmarks."""
        b = self.config["benchmarks"][bench]
        if b["kind"] in QA_KINDS:
            return {}
        data = training_defaults(b["kind"], b.get("subset", "bio"))
        if "max_length" in b:
            data.update(
                {
                    k: b["max_length"]
                    for k in ("max_length", "forget_max_length", "retain_max_length")
                    if k in data
                }
            )
        return data

    # ------------------------------------------------------------------------- targets
    def units(self) -> list[str]:
        """Every evaluated model's directory: target, retain (when there is one), each run."""
        units = []
        for bench, model in self.experiments:
            for kind in REFERENCE_KINDS:
                ref = self.reference_dir(bench, model, kind)
                if ref is not None:
                    units.append(ref)
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
        """summary.json of every training job (fine-tunes and runs; published models have none)."""
        files = []
        for exp in self.experiments.values():
            for kind in REFERENCE_KINDS:
                if exp.reference(kind) == "finetune":
                    files.append(f"{self.finetuned_dir(exp.bench, exp.model, kind)}/summary.json")
        return files + [f"{run.dir}/summary.json" for run in self.runs.values()]

    # ------------------------------------------------------------------------- checkpoints
    def checkpoint_steps(self, run: Run) -> list[int]:
        """The steps of ``run`` evaluated besides its final model ([] without
        unlearn.eval_checkpoints)."""
        return self.checkpoints.get((run.bench, run.model, run.entry, run.tag), [])

    def steps_weights_dir(self, run: Run) -> str:
        """Where the run's exported step weights go (temp: removed once converted)."""
        return f"{run.dir}/steps_weights"

    def unlearn_step_outputs(self) -> dict[str, Any]:
        """Extra outputs of the unlearn rule: the exported step weights' dir (as a wildcard
        pattern; {} without checkpoints, so the default DAG is unchanged)."""
        if not self.checkpoints:
            return {}
        return {
            "steps_weights": f"{self.results}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/steps_weights"
        }

    def checkpoint_eval_files(self, run: Run | None = None) -> list[str]:
        """``runs/E/T/steps/N/eval.json`` of one run (or of every run)."""
        runs = [run] if run is not None else list(self.runs.values())
        return [f"{r.dir}/steps/{n}/eval.json" for r in runs for n in self.checkpoint_steps(r)]

    def selection_files(self) -> list[str]:
        """``runs/E/T/selected/selection.json`` of every run (none without unlearn.select)."""
        if self.selection is None:
            return []
        return [f"{run.dir}/selected/selection.json" for run in self.runs.values()]

    def select_inputs(self, run: Run) -> dict[str, Any]:
        """The select rule's inputs: each checkpoint's and the final model's evaluation, the
        run's summary (its step count), the target's (and retain model's) evaluation."""
        inputs: dict[str, Any] = {
            "steps": self.checkpoint_eval_files(run),
            "final": f"{run.dir}/eval.json",
            "summary": f"{run.dir}/summary.json",
            "target": f"{self.reference_dir(run.bench, run.model, 'target')}/eval.json",
        }
        retain = self.reference_dir(run.bench, run.model, "retain")
        if retain is not None:
            inputs["retain"] = f"{retain}/eval.json"
        return inputs

    def select_args(self, run: Run) -> str:
        """``select-checkpoint`` options that are not its inputs: the retain model's eval."""
        retain = self.select_inputs(run).get("retain")
        return "" if retain is None else f"--retain {retain}"

    def report_checkpoint_args(self) -> str:
        """The report's per-checkpoint evaluations and selections ("" without them)."""
        args = ""
        if self.checkpoints:
            args += " --checkpoint-evals " + " ".join(self.checkpoint_eval_files())
        if self.selection is not None:
            args += " --selections " + " ".join(self.selection_files())
        return args.strip()

    def select_spec(self) -> dict[str, Any]:
        """The criterion as ``select-checkpoint --criterion-json`` takes it."""
        return dict(self.config["unlearn"].get("select") or {})

    def suite_outputs(self) -> list[str]:
        """The evaluate_suites rule's outputs, as wildcard patterns."""
        return [
            f"{self.results}/{{bench}}/{{model}}/{{unit}}/suites/{name}.json"
            for name in self.suites
        ]

    def retain_eval(self, bench: str, model: str, unit: str) -> list[str]:
        """Forget quality compares against the retain model's truth ratios (none for the retain
        model itself, none when the experiment has no retain model)."""
        retain = self.reference_dir(bench, model, "retain")
        if retain is None or self.is_retain_unit(bench, model, unit):
            return []
        return [f"{retain}/eval.json"]

    def retain_suites(self, bench: str, model: str, unit: str) -> list[str]:
        """PrivLeak compares against the retain model's AUC (none for itself / without one)."""
        retain = self.reference_dir(bench, model, "retain")
        if retain is None or self.is_retain_unit(bench, model, unit):
            return []
        return [f"{retain}/suites/{name}.json" for name in self.suites]

    # ------------------------------------------------------------------------- job settings
    def model_dtype(self, model: str) -> str:
        return self.config["models"][model].get("dtype", "float32")

    def prompt_format(self, bench: str, model: str) -> str | None:
        """The experiment's named prompt format (None: the default, ``auto``)."""
        fmt = self.experiment(bench, model).prompt_format
        return None if fmt in (None, "auto") else fmt

    def _data_format(self, bench: str, model: str) -> dict:
        fmt = self.prompt_format(bench, model)
        return {} if fmt is None else {"prompt_format": fmt}

    def _finetune_files(self, bench: str, kind: str) -> list[str]:
        if self.protocol(bench) != "qa":  # a corpus: target on both corpora, retain on its own
            sets = ("forget", "retain") if kind == "target" else ("retain",)
            return [self._set_file(bench, which) for which in sets]
        _, retain = self.split_files(bench)
        files = self._with_paraphrases(bench, "full" if kind == "target" else retain)
        # the embedded benchmark's utility knowledge plays the role of what a real base model
        # learnt in pretraining, so both the target and the retain model are trained on it
        if self.config["benchmarks"][bench]["kind"] == "embedded":
            files.append(f"{self.data_dir(bench)}/pretrain.json")
        return files

    def _stage_backend(self, stage: str) -> dict:
        """The ``train`` keys that select a stage's backend (none for the local default)."""
        section = self.config[stage]
        if section.get("backend", "local") == "local":
            return {}
        return {"backend": section["backend"], "deepspeed_config": section["deepspeed_config"]}

    def finetune_config(self, bench: str, model: str, kind: str) -> dict:
        """The run config of the target (full set) or retain (retain split) fine-tune."""
        ft = self.config["finetune"]
        out = self.finetuned_dir(bench, model, kind)
        train = {
            "epochs": ft["epochs"],
            "micro_batch_size": ft["micro_batch_size"],
            "grad_accum": ft["grad_accum"],
            "lr": ft["lr"],
            "schedule": ft["schedule"],
            "warmup_steps": ft["warmup_steps"],
            "seed": ft["seed"],
            "optimizer": "adamw",
            **ft.get("train", {}),
        }
        train.update(
            dtype=self.model_dtype(model), progress=False, **self._stage_backend("finetune")
        )
        return {
            "model": self.base_model_dir(bench, model),
            "output_dir": out,
            "final_model_dir": f"{out}/model",
            "method": {"name": "sft"},
            "data": {
                "retain": self._finetune_files(bench, kind),
                "max_length": ft["max_length"],
                **self._data_format(bench, model),
                **self.corpus_data(bench),
            },
            "train": train,
        }

    def _unlearn_train(self, run: Run) -> dict:
        """unlearn.train, then the experiment's train overrides, then the entry's."""
        return {
            **self.config["unlearn"].get("train", {}),
            **self.experiment(run.bench, run.model).train,
            **self.config["methods"][run.entry].get("train", {}),
        }

    def unlearn_config(self, run: Run) -> dict:
        """The run config of one sweep point: unlearn.train, then the experiment's train
        overrides, then the entry's, then seed / dtype; the backend when it is not local;
        with unlearn.eval_checkpoints the steps whose weights are exported."""
        un = self.config["unlearn"]
        train = self._unlearn_train(run)
        train.update(seed=run.seed, dtype=self.model_dtype(run.model), progress=False)
        train.update(self._stage_backend("unlearn"))
        steps = self.checkpoint_steps(run)
        extra = {}
        if steps:
            train["export_steps"] = steps
            extra["export_dir"] = self.steps_weights_dir(run)
        return {
            **extra,
            "model": self.target_model(run.bench, run.model),
            "output_dir": run.dir,
            "final_model_dir": f"{run.dir}/final",
            "method": {"name": run.method, **dict(run.hparams)},
            "data": {
                "forget": self._unlearn_files(run.bench, "forget"),
                "retain": self._unlearn_files(run.bench, "retain"),
                "max_length": un["max_length"],
                **self._data_format(run.bench, run.model),
                **self.corpus_data(run.bench),
                **self.preferred_data(run),
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
            "data": {
                "retain": self.relearn_data(run.bench),
                "max_length": un["max_length"],
                **self._data_format(run.bench, run.model),
                **self.corpus_data(run.bench),
            },
            "train": {
                "max_steps": int(k),
                "micro_batch_size": rl["micro_batch_size"],
                "lr": rl["lr"],
                "optimizer": "adamw",
                "seed": rl["seed"],
                "max_grad_norm": 1.0,
                "dtype": self.model_dtype(run.model),
                "progress": False,
                **self._stage_backend("relearn"),
            },
        }

    def launcher(self, stage: str, resources: Mapping[str, Any]) -> str:
        """``python -m`` / ``torchrun ... -m`` / ``srun ... torchrun ... -m`` for a training
        job of ``stage`` with these Snakemake resources (see :mod:`blur_core.pipeline.launch`):
        one rank per requested GPU, else the stage's ``nproc`` CPU ranks."""
        ranks = ranks_per_node(resources, self.config[stage]["nproc"])
        return launch_prefix(ranks, int(resources.get("nodes", 1) or 1))

    def gpu_resources(self, stage: str) -> dict[str, Any]:
        """The ``gpu`` / ``gres`` (/ ``nodes``) resources of a training job of ``stage`` from
        its ``gpus`` and ``nodes`` settings (a profile's set-resources may override them)."""
        section = self.config[stage]
        gpus = section.get("gpus", 0)
        resources = {"gpu": gpus, "gres": f"gpu:{gpus}" if gpus > 0 else ""}
        if section.get("nodes", 1) > 1:
            resources["nodes"] = section["nodes"]
        return resources

    # ------------------------------------------------------------------------- command lines
    def data_args(self, bench: str) -> str:
        b = self.config["benchmarks"][bench]
        if b["kind"] == "embedded":
            return (
                f"--benchmark embedded --people {b['people']} "
                f"--questions-per-person {b['questions_per_person']} --seed {b['seed']}"
            )
        if b["kind"] == "corpus-embedded":
            return (
                f"--benchmark corpus-embedded --people {b['people']} "
                f"--forget-fraction {b.get('forget_fraction', 0.1)} --seed {b['seed']}"
            )
        args = f"--benchmark {b['kind']} --source {b['source']}"
        if "retain_limit" in b:
            args += f" --forget-split {b['forget_split']} --retain-limit {b['retain_limit']}"
        for key in (
            "retain",
            "subset",
            "min_chars",
            "forget_docs",
            "retain_docs",
            "forget_verbmem",
        ):
            if key in b:
                args += f" --{key.replace('_', '-')} {b[key]}"
        return args

    def _dtype_arg(self, model: str) -> str:
        dtype = self.model_dtype(model)
        return "" if dtype == "float32" else f" --dtype {dtype}"

    def model_args(self, model: str) -> str:
        m = self.config["models"][model]
        if m["kind"] == "gguf":
            src = "--smollm2" if m["source"] == "smollm2" else f"--gguf {m['source']}"
        else:
            src = f"--hf {m['source']}"
        return src + self._dtype_arg(model)

    def published_args(self, bench: str, model: str, kind: str) -> str:
        """``import-model`` arguments of a published target / retain model (under the wmdp
        protocol without a named target: the base model itself)."""
        exp = self.experiment(bench, model)
        if kind == "target" and exp.target_is_base:
            return self.model_args(model)
        source = getattr(exp, kind)
        if source is None:
            raise KeyError(f"experiment {bench}/{model} has no published {kind} model")
        return f"--hf {source}" + self._dtype_arg(model)

    def convert_args(self, run: Run) -> str:
        """``convert`` options of a run: the model's dtype (ZeRO shards hold fp32 master
        weights), and ``--adapter-only`` for a LoRA run (``train.peft``) with
        ``unlearn.merge_adapters: false`` (large models: evaluation loads base + adapter)."""
        args = self._dtype_arg(run.model).strip()
        lora = self.unlearn_config(run)["train"].get("peft") is not None
        if lora and not self.config["unlearn"].get("merge_adapters", True):
            args = f"{args} --adapter-only".strip()
        return args

    def embedded_model_args(self, model: str) -> str:
        m = self.config["models"][model]
        return f"--hidden-size {m['hidden_size']} --layers {m['layers']} --seed {m['seed']}"

    def model_options(self, bench: str, model: str) -> str:
        """dtype and prompt format of the evaluation commands (as the model was trained)."""
        fmt = self.prompt_format(bench, model)
        return (self._dtype_arg(model) + ("" if fmt is None else f" --prompt-format {fmt}")).strip()

    def code_fingerprints(self) -> dict[str, str]:
        """command -> the params value that reruns its jobs when its code changes
        (:mod:`blur_core.fingerprint`). Recorded in ``R/.code_fingerprints.json``;
        with ``code_rerun: false`` the recorded values are used (frozen: code edits rerun
        nothing, and switching it off reruns nothing either)."""
        record = Path(self.results) / ".code_fingerprints.json"
        if not self.config.get("code_rerun", True):
            try:
                frozen = json.loads(record.read_text())
            except (OSError, ValueError):
                frozen = {}
            return {cmd: frozen.get(cmd) or code_fingerprint(cmd) for cmd in COMMANDS}
        current = {cmd: code_fingerprint(cmd) for cmd in COMMANDS}
        try:
            if not record.is_file() or json.loads(record.read_text()) != current:
                atomic_write_text(record, json.dumps(current, indent=1, sort_keys=True) + "\n")
        except (OSError, ValueError):
            pass  # a read-only results dir: nothing to freeze to later
        return current

    def eval_command(self, bench: str) -> str:
        """The CLI command of a benchmark's ``evaluate`` jobs."""
        return "evaluate" if self.protocol(bench) == "qa" else "evaluate-corpus"

    def _corpus_eval_args(self, bench: str, model: str) -> str:
        b = self.config["benchmarks"][bench]
        ev = b.get("evaluate", {})
        args = [f"--protocol {self.protocol(bench)}"]
        if b.get("wmdp_source"):
            args.append(f"--wmdp-source {b['wmdp_source']} --wmdp-subset {b.get('subset', 'bio')}")
        if b.get("mmlu_source"):
            args.append(f"--mmlu-source {b['mmlu_source']}")
        for key in (
            "limit",
            "mc_limit",
            "batch_size",
            "max_new_tokens",
            "verbmem_max_new_tokens",
            "privleak_max_length",
        ):
            if ev.get(key) is not None:
                args.append(f"--{key.replace('_', '-')} {ev[key]}")
        options = self.model_options(bench, model)
        return " ".join(args + ([options] if options else []))

    def eval_args(self, bench: str, model: str) -> str:
        """The arguments of the ``evaluate`` job (TOFU metrics, or a corpus's protocol;
        the latter from ``benchmarks.B.evaluate`` only, so that editing one benchmark's
        evaluation reruns that benchmark's evaluations only)."""
        if self.protocol(bench) != "qa":
            return self._corpus_eval_args(bench, model)
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
        options = self.model_options(bench, model)
        return " ".join(args + ([options] if options else []))

    def retain_eval_arg(self, bench: str, model: str, unit: str) -> str:
        if self.is_retain_unit(bench, model, unit):
            return "--self-reference"
        retain = self.reference_dir(bench, model, "retain")
        return "--no-retain-model" if retain is None else f"--retain-result {retain}/eval.json"

    def retain_suites_arg(self, bench: str, model: str, unit: str) -> str:
        if self.is_retain_unit(bench, model, unit):
            return "--self-reference"
        retain = self.reference_dir(bench, model, "retain")
        return "--no-retain-model" if retain is None else f"--retain-dir {retain}/suites"

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
        return (
            f"--input {self._set_file(bench, 'forget')} "
            f"--fraction {self.config['relearn']['fraction']}"
        )


def to_json(obj: Any) -> str:
    """The stable JSON text a rule's params hold (sorted keys)."""
    return json.dumps(obj, sort_keys=True)
