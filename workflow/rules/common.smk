# Config validation and helper functions (no rules here).
#
# Paths (R = config["results"]):
#   R/data/{bench}/                                   prepared benchmark (TOFU hub layout)
#   R/models/{bench}/{model}/base/                    embedded base model (tokenizer fits the benchmark)
#   R/models/imported/{model}/                        hf / gguf base model, imported once
#   R/{bench}/{model}/finetune/{target,retain}/       target model (full set) and retain-only model
#   R/{bench}/{model}/runs/{entry}/{tag}/             one unlearning run; tag = grid values + seed,
#                                                     e.g. gamma=0.1@seed=0 (adding a grid value renames nothing)
#   R/{bench}/{model}/{unit}/eval.json                evaluation of a finetuned model or a run
#   R/{bench}/{model}/{unit}/suites/{name}.json       extra evaluation suites (config `evaluations`)
#   R/{bench}/{model}/runs/{entry}/{tag}/relearn/k{K}/  the run fine-tuned K steps on a forget slice
#                                                     (a unit of its own: eval.json; model/ is temp)
#   R/relearn_data/{bench}.jsonl                      the forget slice used for relearning
#   R/report/                                         summary.csv, summary.md, tradeoff.png

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from blur_core.config import ConfigError


def _config_files():
    files = [str(f) for f in (workflow.overwrite_configfiles or workflow.configfiles or [])]
    return ", ".join(files) or "config.yaml"


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    raise WorkflowError(f"invalid configuration in {_config_files()}:\n{exc}") from None

R = config["results"]
TOFU_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def config_error(message):
    raise WorkflowError(f"invalid configuration in {_config_files()}: {message}")


def _fmt(value):
    """Readable, stable text for a grid value (0.1 -> '0.1', 16.0 -> '16', 'nll' -> 'nll')."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return re.sub(r"[^\w.=+-]", "-", str(value))


@dataclass(frozen=True)
class Run:
    bench: str
    model: str
    entry: str
    tag: str
    method: str
    hparams: tuple  # sorted (key, value) pairs: fixed + grid
    seed: int

    @property
    def dir(self):
        return f"{R}/{self.bench}/{self.model}/runs/{self.entry}/{self.tag}"


def _enumerate_runs():
    from blur_core.methods import build_objective

    runs = {}
    for i, exp in enumerate(config["experiments"]):
        bench, model = exp["benchmark"], exp["model"]
        if bench not in config["benchmarks"]:
            config_error(f"experiments[{i}].benchmark = {bench!r} is not a key of benchmarks "
                         f"({sorted(config['benchmarks'])})")
        if model not in config["models"]:
            config_error(f"experiments[{i}].model = {model!r} is not a key of models ({sorted(config['models'])})")
        for entry, spec in config["methods"].items():
            grid = spec.get("grid", {})
            keys = sorted(grid)
            for combo in itertools.product(*(grid[k] for k in keys)):
                hp = {**spec.get("fixed", {}), **dict(zip(keys, combo))}
                try:
                    build_objective(spec["method"], hp, where=f"methods.{entry}")
                except ConfigError as exc:
                    config_error(str(exc))
                for seed in config["unlearn"]["seeds"]:
                    parts = [f"{k}={_fmt(v)}" for k, v in zip(keys, combo)] + [f"seed={seed}"]
                    # "@", not ",": Snakemake 9.27 splits a remote job's --target-jobs wildcards
                    # on every comma (quoted or not), so a comma in a tag breaks cluster execution
                    run = Run(bench, model, entry, "@".join(parts), spec["method"], tuple(sorted(hp.items())), seed)
                    runs[(bench, model, entry, run.tag)] = run
    return runs


def _check_sources():
    for name, b in config["benchmarks"].items():
        if b["kind"] == "tofu":
            src = b.get("source")
            if not src:
                config_error(f"benchmarks.{name}.source is required for kind tofu (a local dir or hub id)")
            if (src.startswith((".", "/")) or Path(src).exists()) and not Path(src).is_dir():
                config_error(f"benchmarks.{name}.source: directory not found: {src}")
        elif "retain_limit" in b:
            config_error(f"benchmarks.{name}.retain_limit applies to kind tofu only "
                         f"(kind {b['kind']}: use people / questions_per_person)")
    for name, m in config["models"].items():
        src = m.get("source")
        if m["kind"] in ("hf", "gguf") and not src:
            config_error(f"models.{name}.source is required for kind {m['kind']}")
        if m["kind"] == "gguf" and src != "smollm2" and not Path(src).is_file():
            config_error(f"models.{name}.source: GGUF file not found: {src}")
        if m["kind"] == "hf" and src.startswith((".", "/")) and not Path(src).is_dir():
            config_error(f"models.{name}.source: model directory not found: {src}")
    for exp in config["experiments"]:
        if config["models"][exp["model"]]["kind"] == "embedded" and \
                config["benchmarks"][exp["benchmark"]]["kind"] != "embedded":
            config_error(f"model {exp['model']!r} is an embedded tiny model; it can only run on embedded benchmarks")


def _check_suites():
    from blur_core.eval.suites import parse_suite

    suites = {}
    for name, spec in (config.get("evaluations") or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            config_error(f"evaluations.{name}: suite names may hold only letters, digits, '_', '.', '-'")
        spec = dict(spec)
        if spec["kind"] in ("tofu_mc", "memorisation"):
            if "source" in spec:
                config_error(f"evaluations.{name}.source: a {spec['kind']} suite uses each experiment's "
                             "own benchmark; remove `source`")
            probe = {**spec, "source": "<benchmark>"}
        else:
            src = spec.get("source")
            if src and (src.startswith((".", "/")) or Path(src).exists()) and not Path(src).is_dir():
                config_error(f"evaluations.{name}.source: directory not found: {src}")
            probe = spec
        if "forget_split" in spec:
            config_error(f"evaluations.{name}.forget_split: set by the experiment's benchmark; remove it")
        try:
            parse_suite(probe, f"evaluations.{name}")
        except ConfigError as exc:
            config_error(str(exc))
        suites[name] = spec
    return suites


RUNS = _enumerate_runs()
_check_sources()
SUITES = _check_suites()
RELEARN_STEPS = sorted(set(config.get("relearn", {}).get("steps", [])))


# ----------------------------------------------------------------------------- paths

def data_dir(bench):
    return f"{R}/data/{bench}"


def base_model_dir(bench, model):
    if config["models"][model]["kind"] == "embedded":
        return f"{R}/models/{bench}/{model}/base"
    return f"{R}/models/imported/{model}"


def finetuned_dir(bench, model, kind):
    return f"{R}/{bench}/{model}/finetune/{kind}"


def all_units():
    """Every evaluated model's directory: target, retain, each run (and its relearned copies)."""
    units = []
    for exp in config["experiments"]:
        for kind in ("target", "retain"):
            units.append(finetuned_dir(exp["benchmark"], exp["model"], kind))
    units += [run.dir for run in RUNS.values()]
    return units


def all_eval_files():
    files = [f"{unit}/eval.json" for unit in all_units()]
    files += [f"{run.dir}/relearn/k{k}/eval.json" for run in RUNS.values() for k in RELEARN_STEPS]
    return files


def all_suite_files():
    return [f"{unit}/suites/{name}.json" for unit in all_units() for name in SUITES]


def all_train_summaries():
    files = []
    for exp in config["experiments"]:
        for kind in ("target", "retain"):
            files.append(f"{finetuned_dir(exp['benchmark'], exp['model'], kind)}/summary.json")
    files += [f"{run.dir}/summary.json" for run in RUNS.values()]
    return files


# ----------------------------------------------------------------------------- rule inputs / params

def base_model_input(wildcards):
    return base_model_dir(wildcards.bench, wildcards.model)


def target_model_input(wildcards):
    return f"{finetuned_dir(wildcards.bench, wildcards.model, 'target')}/model"


def eval_model_input(wildcards):
    return f"{R}/{wildcards.bench}/{wildcards.model}/{wildcards.unit}/model"


def suites_json(wildcards):
    """All suites of one model as the JSON `evaluate-suites --suites-json` takes; the
    benchmark-bound kinds get the benchmark's dir and forget split."""
    forget, _ = _split_files(wildcards.bench)
    suites = {}
    for name, spec in SUITES.items():
        spec = dict(spec)
        if spec["kind"] in ("tofu_mc", "memorisation"):
            spec.update(source=data_dir(wildcards.bench), forget_split=forget)
        suites[name] = spec
    return json.dumps({"suites": suites}, sort_keys=True)


def suites_out_dir(wildcards):
    return f"{R}/{wildcards.bench}/{wildcards.model}/{wildcards.unit}/suites"


def suite_outputs():
    return [f"{R}/{{bench}}/{{model}}/{{unit}}/suites/{name}.json" for name in SUITES]


def retain_suites_input(wildcards):
    """PrivLeak compares against the retain model's AUC (the retain model is its own reference)."""
    if wildcards.unit == "finetune/retain":
        return []
    return [f"{finetuned_dir(wildcards.bench, wildcards.model, 'retain')}/suites/{name}.json" for name in SUITES]


def retain_suites_arg(wildcards):
    if wildcards.unit == "finetune/retain":
        return "--self-reference"
    return f"--retain-dir {finetuned_dir(wildcards.bench, wildcards.model, 'retain')}/suites"


def relearn_config(wildcards):
    """sft of an unlearned run for K steps on the forget slice (same prompt format / length)."""
    rl, un = config["relearn"], config["unlearn"]
    run = run_of(wildcards)
    out = f"{run.dir}/relearn/k{wildcards.k}"
    cfg = {
        "model": f"{run.dir}/model",
        "output_dir": out,
        "final_model_dir": f"{out}/model",
        "method": {"name": "sft"},
        "data": {"retain": f"{R}/relearn_data/{run.bench}.jsonl", "max_length": un["max_length"]},
        "train": {"max_steps": int(wildcards.k), "micro_batch_size": rl["micro_batch_size"],
                  "lr": rl["lr"], "optimizer": "adamw", "seed": rl["seed"], "max_grad_norm": 1.0,
                  "dtype": _model_dtype(run.model), "progress": False},
    }
    return json.dumps(cfg, sort_keys=True)


def relearn_slice_args(wildcards):
    forget, _ = _split_files(wildcards.bench)
    return f"--input {data_dir(wildcards.bench)}/{forget}.json --fraction {config['relearn']['fraction']}"


def retain_eval_input(wildcards):
    """Forget quality compares against the retain model's truth ratios (itself for the retain model)."""
    if wildcards.unit == "finetune/retain":
        return []
    return f"{finetuned_dir(wildcards.bench, wildcards.model, 'retain')}/eval.json"


def _split_files(bench):
    b = config["benchmarks"][bench]
    forget = b["forget_split"]
    return forget, TOFU_RETAIN[forget]


def _extra_finetune_files(bench):
    # the embedded benchmark's utility knowledge plays the role of what a real base model
    # learnt in pretraining, so both the target and the retain model are trained on it
    return ["pretrain.json"] if config["benchmarks"][bench]["kind"] == "embedded" else []


def _model_dtype(model):
    return config["models"][model].get("dtype", "float32")


# The run configs below are built from wildcards and config only (never from the `input` /
# `output` arguments): Snakemake treats params derived from input/output as paths and
# leaves them out of its params rerun trigger, so a changed setting would not rerun the job.

def finetune_config(wildcards):
    ft = config["finetune"]
    forget, retain = _split_files(wildcards.bench)
    main = "full.json" if wildcards.kind == "target" else f"{retain}.json"
    data = data_dir(wildcards.bench)
    files = [f"{data}/{name}" for name in [main, *_extra_finetune_files(wildcards.bench)]]
    out = finetuned_dir(wildcards.bench, wildcards.model, wildcards.kind)
    cfg = {
        "model": base_model_dir(wildcards.bench, wildcards.model),
        "output_dir": out,
        "final_model_dir": f"{out}/model",
        "method": {"name": "sft"},
        "data": {"retain": files, "max_length": ft["max_length"]},
        "train": {"epochs": ft["epochs"], "micro_batch_size": ft["micro_batch_size"],
                  "grad_accum": ft["grad_accum"], "lr": ft["lr"], "schedule": ft["schedule"],
                  "warmup_steps": ft["warmup_steps"], "seed": ft["seed"], "optimizer": "adamw",
                  "dtype": _model_dtype(wildcards.model), "progress": False},
    }
    return json.dumps(cfg, sort_keys=True)


def run_of(wildcards):
    key = (wildcards.bench, wildcards.model, wildcards.entry, wildcards.tag)
    if key not in RUNS:
        raise WorkflowError(f"no run {'/'.join(key)} in the sweep of {_config_files()}")
    return RUNS[key]


def unlearn_config(wildcards):
    run = run_of(wildcards)
    un = config["unlearn"]
    forget, retain = _split_files(run.bench)
    train = {**un.get("train", {}), **config["methods"][run.entry].get("train", {})}
    train.update(seed=run.seed, dtype=_model_dtype(run.model), progress=False)
    if un["backend"] != "local":
        train.update(backend=un["backend"], deepspeed_config=un["deepspeed_config"])
    data = data_dir(run.bench)
    cfg = {
        "model": f"{finetuned_dir(run.bench, run.model, 'target')}/model",
        "output_dir": run.dir,
        "final_model_dir": f"{run.dir}/final",
        "method": {"name": run.method, **dict(run.hparams)},
        "data": {"forget": f"{data}/{forget}.json", "retain": f"{data}/{retain}.json",
                 "max_length": un["max_length"]},
        "train": train,
    }
    return json.dumps(cfg, sort_keys=True)


def gpus_per_node(resources):
    """GPUs a job asks for per node: its gres (gpu:N or gpu:TYPE:N, what SLURM is given),
    else its `gpu` resource; 0 without GPUs."""
    gres = str(resources.get("gres", "") or "")
    m = re.fullmatch(r"gpu(?::[\w.]*?[^\d:][\w.]*)?(?::(\d+))?", gres)  # gpu, gpu:N, gpu:TYPE, gpu:TYPE:N
    if m:
        return int(m.group(1) or 1)
    return int(resources.get("gpu", 0) or 0)


def launcher(wildcards, threads, resources):
    """How an unlearn job starts blur_core (`python -m` for one rank, torchrun for several).

    With GPUs (unlearn.gpus -> resources gres=gpu:N, or a profile's set-resources) there
    is one rank per requested GPU, so the request and the launch agree; the ranks use the
    GPUs SLURM granted (CUDA_VISIBLE_DEVICES). Without GPUs, unlearn.nproc CPU ranks. With
    nodes > 1 (a SLURM allocation, gres per node) srun starts one torchrun per node,
    rendezvous on the allocation's first node.
    """
    n = gpus_per_node(resources) or config["unlearn"]["nproc"]
    nodes = int(resources.get("nodes", 1) or 1)
    if nodes > 1:
        return ("srun --overlap --nodes \"$SLURM_NNODES\" --ntasks-per-node 1 "
                f"torchrun --nnodes \"$SLURM_NNODES\" --nproc_per_node {n} "
                "--rdzv_id \"$SLURM_JOB_ID\" --rdzv_backend c10d "
                "--rdzv_endpoint \"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1):29500\" -m")
    if n == 1:
        return "python -m"
    return f"torchrun --standalone --nproc_per_node {n} -m"


def eval_params(wildcards):
    forget, _ = _split_files(wildcards.bench)
    ev = config["evaluate"]
    args = [f"--forget-split {forget}", f"--batch-size {ev['batch_size']}",
            f"--max-new-tokens {ev['max_new_tokens']}", f"--max-length {ev['max_length']}"]
    if ev.get("limit"):
        args.append(f"--limit {ev['limit']}")
    return " ".join(args)


def data_args(wildcards):
    b = config["benchmarks"][wildcards.bench]
    if b["kind"] == "embedded":
        return (f"--benchmark embedded --people {b['people']} "
                f"--questions-per-person {b['questions_per_person']} --seed {b['seed']}")
    args = f"--benchmark tofu --source {b['source']}"
    if "retain_limit" in b:
        args += f" --forget-split {b['forget_split']} --retain-limit {b['retain_limit']}"
    return args


def model_args(wildcards):
    m = config["models"][wildcards.model]
    if m["kind"] == "gguf":
        return "--smollm2" if m["source"] == "smollm2" else f"--gguf {m['source']}"
    return f"--hf {m['source']}"


def embedded_model_args(wildcards):
    m = config["models"][wildcards.model]
    return f"--hidden-size {m['hidden_size']} --layers {m['layers']} --seed {m['seed']}"


def report_out_dir(wildcards, output):
    return str(Path(output.csv).parent)


def retain_eval_arg(wildcards, input):
    if wildcards.unit == "finetune/retain":
        return "--self-reference"
    return f"--retain-result {input.retain}"
