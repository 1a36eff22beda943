"""blur_core.pipeline: run enumeration, tags, launch lines, every cross-field config error,
and every job config the workflow builds passing the library's own run-config validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from blur_core.config import ConfigError
from blur_core.pipeline import (
    Study,
    format_value,
    gpus_per_node,
    launch_prefix,
    parse_tag,
    ranks_per_node,
    run_tag,
)
from blur_core.train.config import parse_run_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

BASE = {
    "benchmarks": {"emb": {"kind": "embedded", "forget_split": "forget05"}},
    "models": {"tiny": {"kind": "embedded"}},
    "experiments": [{"benchmark": "emb", "model": "tiny"}],
    "unlearn": {"seeds": [0, 1], "train": {"max_steps": 3, "lr": 1e-3}},
    "methods": {
        "blur_npo": {
            "method": "blur",
            "fixed": {"forget_loss": "npo", "beta": 0.1},
            "grid": {"gamma": [0.03, 0.1], "retain_loss": ["nll", "kl"]},
        },
        "graddiff": {
            "method": "graddiff",
            "grid": {"retain_weight": [1.0, 16.0]},
            "train": {"lr": 5e-4},
        },
        "ga": {"method": "ga"},
    },
    "evaluations": {"fmc": {"kind": "tofu_mc", "set": "forget"}},
    "relearn": {"steps": [5, 2, 5]},
}


def with_defaults(cfg: dict) -> dict:
    """The config as Snakemake hands it to the workflow: schema-validated, defaults filled in."""
    from snakemake.utils import validate

    cfg = copy.deepcopy(cfg)
    validate(cfg, str(SCHEMA), set_default=True)
    return cfg


def study(tmp_path, **changes) -> Study:
    cfg = copy.deepcopy(BASE)
    cfg["results"] = str(tmp_path / "results")
    cfg.update(changes)
    return Study(with_defaults(cfg))


# ----------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    "value, text",
    [
        (0.1, "0.1"),
        (16.0, "16"),
        (3, "3"),
        (1e-5, "1e-05"),
        (True, "true"),
        ("nll", "nll"),
        ("a b/c", "a-b-c"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_tag_sorts_keys_and_ends_with_the_seed():
    tag = run_tag({"retain_loss": "kl", "gamma": 0.1}, 3)
    assert tag == "gamma=0.1@retain_loss=kl@seed=3"
    assert parse_tag(tag) == ({"gamma": "0.1", "retain_loss": "kl"}, 3)
    assert run_tag({}, 0) == "seed=0" and parse_tag("seed=0") == ({}, 0)
    assert "," not in tag  # Snakemake splits remote wildcards on commas


# ----------------------------------------------------------------------------- enumeration


def test_enumeration_is_the_grid_product_times_seeds(tmp_path):
    s = study(tmp_path)
    # blur_npo 2 x 2, graddiff 2, ga 1 (no grid) -> 7 points x 2 seeds
    assert len(s.runs) == 14
    by_entry = {}
    for run in s.runs.values():
        by_entry.setdefault(run.entry, set()).add(run.tag)
    assert by_entry["ga"] == {"seed=0", "seed=1"}
    assert "gamma=0.03@retain_loss=kl@seed=1" in by_entry["blur_npo"]
    assert by_entry["graddiff"] == {f"retain_weight={w}@seed={s}" for w in (1, 16) for s in (0, 1)}
    run = s.run_of("emb", "tiny", "blur_npo", "gamma=0.1@retain_loss=nll@seed=0")
    # fixed hyperparameters are in the run's method but not in its tag
    assert dict(run.hparams) == {
        "forget_loss": "npo",
        "beta": 0.1,
        "gamma": 0.1,
        "retain_loss": "nll",
    }
    assert run.method == "blur" and run.seed == 0
    assert run.dir == f"{s.results}/emb/tiny/runs/blur_npo/gamma=0.1@retain_loss=nll@seed=0"
    with pytest.raises(KeyError, match="no run emb/tiny/ga/seed=7"):
        s.run_of("emb", "tiny", "ga", "seed=7")


def test_targets(tmp_path):
    s = study(tmp_path)
    assert s.relearn_steps == [2, 5]
    assert len(s.units()) == 2 + 14
    assert len(s.eval_files()) == 16 + 14 * 2  # + each run relearned for 2 budgets
    assert s.suite_files()[0] == f"{s.results}/emb/tiny/finetune/target/suites/fmc.json"
    assert len(s.train_summaries()) == 16
    assert s.retain_eval("emb", "tiny", "finetune/retain") == []
    assert s.retain_eval("emb", "tiny", "finetune/target") == [
        f"{s.results}/emb/tiny/finetune/retain/eval.json"
    ]
    assert s.retain_suites("emb", "tiny", "runs/ga/seed=0") == [
        f"{s.results}/emb/tiny/finetune/retain/suites/fmc.json"
    ]
    assert s.retain_eval_arg("emb", "tiny", "finetune/retain") == "--self-reference"
    assert s.retain_suites_arg("emb", "tiny", "runs/ga/seed=0").startswith("--retain-dir ")


# ----------------------------------------------------------------------------- launch lines


@pytest.mark.parametrize(
    "resources, nproc, expected",
    [
        ({"gpu": 0, "gres": ""}, 1, "python -m"),
        ({"gpu": 0, "gres": ""}, 2, "torchrun --standalone --nproc_per_node 2 -m"),  # CPU ranks
        ({"gpu": 1, "gres": "gpu:1"}, 4, "python -m"),  # one rank per GPU, nproc ignored
        ({"gres": "gpu:4"}, 1, "torchrun --standalone --nproc_per_node 4 -m"),
        ({"gres": "gpu:a100:2"}, 1, "torchrun --standalone --nproc_per_node 2 -m"),
        ({"gres": "gpu:h100"}, 1, "python -m"),  # a type without a count is one GPU
        ({"gres": "gpu:a100:8"}, 1, "torchrun --standalone --nproc_per_node 8 -m"),
        ({"gpu": 3}, 1, "torchrun --standalone --nproc_per_node 3 -m"),  # the plain gpu resource
    ],
)
def test_launch_line_on_one_node(tmp_path, resources, nproc, expected):
    for stage in ("finetune", "unlearn", "relearn"):  # one code path for every training stage
        s = study(tmp_path, **{stage: {**BASE.get(stage, {}), "nproc": nproc}})
        assert s.launcher(stage, resources) == expected


def test_launch_line_on_several_nodes():
    line = launch_prefix(ranks_per_node({"gres": "gpu:8", "nodes": 2}, 1), nodes=2)
    assert line == "python -m blur_core.slurm launch --nodes 2 --nproc-per-node 8 -m"


def test_gpu_count_parsing():
    assert gpus_per_node({"gres": "gpu:2", "gpu": 5}) == 2  # gres (what SLURM is given) wins
    assert gpus_per_node({"gres": "", "gpu": 0}) == 0
    assert gpus_per_node({"gres": "tmpfs:10G"}) == 0  # not a GPU gres
    assert gpus_per_node({}) == 0
    with pytest.raises(ValueError, match="ranks=0"):
        launch_prefix(0)


@pytest.mark.parametrize("stage", ["finetune", "unlearn", "relearn"])
def test_gpu_resources_follow_each_stage(tmp_path, stage):
    assert study(tmp_path).gpu_resources(stage) == {"gpu": 0, "gres": ""}
    s = study(tmp_path, **{stage: {**BASE.get(stage, {}), "gpus": 2}})
    assert s.gpu_resources(stage) == {"gpu": 2, "gres": "gpu:2"}
    assert (
        s.launcher(stage, s.gpu_resources(stage)) == "torchrun --standalone --nproc_per_node 2 -m"
    )
    others = [x for x in ("finetune", "unlearn", "relearn") if x != stage]
    assert all(s.gpu_resources(x) == {"gpu": 0, "gres": ""} for x in others)
    s = study(tmp_path, **{stage: {**BASE.get(stage, {}), "gpus": 8, "nodes": 2}})
    assert s.gpu_resources(stage) == {"gpu": 8, "gres": "gpu:8", "nodes": 2}
    assert s.launcher(stage, s.gpu_resources(stage)) == (
        "python -m blur_core.slurm launch --nodes 2 --nproc-per-node 8 -m"
    )


# ----------------------------------------------------------------------------- job configs


def _touch_data(s: Study, bench: str = "emb") -> None:
    data = Path(s.data_dir(bench))
    data.mkdir(parents=True, exist_ok=True)
    for name in ("full", "forget05", "retain95", "forget10", "retain90"):
        for stem in (name, f"{name}_paraphrased"):
            (data / f"{stem}.json").write_text('[{"question": "q", "answer": "a"}]')
    (data / "pretrain.json").write_text('[{"question": "q", "answer": "a"}]')
    Path(s.relearn_data(bench)).parent.mkdir(parents=True, exist_ok=True)
    Path(s.relearn_data(bench)).write_text('{"question": "q", "answer": "a"}\n')


@pytest.mark.parametrize("backend", ["local", "deepspeed"])
def test_every_built_config_passes_run_config_validation(tmp_path, backend):
    s = study(
        tmp_path, unlearn={**BASE["unlearn"], "backend": backend, "deepspeed_config": "zero3"}
    )
    _touch_data(s)
    built = [s.finetune_config("emb", "tiny", kind) for kind in ("target", "retain")]
    built += [s.unlearn_config(run) for run in s.runs.values()]
    built += [s.relearn_config(run, k) for run in s.runs.values() for k in s.relearn_steps]
    assert len(built) == 2 + 14 + 28
    for cfg in built:
        parsed = parse_run_config(json.loads(json.dumps(cfg)), "built")
        assert parsed.train.progress is False
    ft = parse_run_config(built[0])
    assert ft.method_name == "sft" and ft.data.retain == [
        f"{s.data_dir('emb')}/full.json",
        f"{s.data_dir('emb')}/full_paraphrased.json",
        f"{s.data_dir('emb')}/pretrain.json",
    ]
    assert [Path(f).name for f in parse_run_config(built[1]).data.retain] == [
        "retain95.json",
        "retain95_paraphrased.json",
        "pretrain.json",
    ]
    run = s.run_of("emb", "tiny", "graddiff", "retain_weight=16@seed=1")
    un = parse_run_config(s.unlearn_config(run))
    assert un.train.lr == 5e-4 and un.train.seed == 1 and un.train.max_steps == 3  # entry override
    # the embedded benchmark unlearns both wordings of each fact
    assert [Path(f).name for f in un.data.forget] == ["forget05.json", "forget05_paraphrased.json"]
    assert [Path(f).name for f in un.data.retain] == ["retain95.json", "retain95_paraphrased.json"]
    assert un.model == f"{s.results}/emb/tiny/finetune/target/model"
    assert un.train.backend == backend
    assert un.train.deepspeed_config == ("zero3" if backend == "deepspeed" else None)
    rl = parse_run_config(s.relearn_config(run, 5))
    assert (
        rl.model == f"{run.dir}/model"
        and rl.train.max_steps == 5
        and rl.output_dir == f"{run.dir}/relearn/k5"
    )


RIVALS = {
    "dpo_idk": {"method": "dpo", "fixed": {"beta": 0.1}},
    "dpo_alt": {"method": "dpo", "fixed": {"preferred": "alternate"}},
    "idk": {"method": "idk"},
    "npo": {"method": "npo"},
    "blur_dpo": {"method": "blur", "fixed": {"forget_loss": "dpo", "preferred": "alternate"}},
}


def test_dpo_and_idk_runs_get_the_embedded_preferred_answer_files(tmp_path):
    s = study(tmp_path, methods=RIVALS)
    _touch_data(s)
    data = Path(s.data_dir("emb"))
    (data / "preferred").mkdir()
    (data / "preferred" / "idk.jsonl").write_text("I don't know.\n")
    for stem in ("forget05", "forget05_paraphrased"):
        (data / "preferred" / f"{stem}_alternate.json").write_text('{"alternate": "b"}\n')
    idk = f"{data}/preferred/idk.jsonl"
    # one alternate file per forget file: the split and its second wording
    alt = [f"{data}/preferred/forget05_alternate.json"]
    alt.append(f"{data}/preferred/forget05_paraphrased_alternate.json")
    expected = {
        "dpo_idk": {"idk_file": idk},
        "dpo_alt": {"alternate_file": alt},
        "idk": {"idk_file": idk},
        "npo": {},
        "blur_dpo": {"alternate_file": alt},
    }
    for run in s.runs.values():
        cfg = s.unlearn_config(run)
        got = {k: v for k, v in cfg["data"].items() if k in ("idk_file", "alternate_file")}
        assert got == expected[run.entry], run.entry
        parse_run_config(json.loads(json.dumps(cfg)), run.entry)  # the library takes it


def _tofu_study(tmp_path, methods, **bench):
    tofu, model = tmp_path / "tofu", tmp_path / "model"
    tofu.mkdir(exist_ok=True)
    model.mkdir(exist_ok=True)
    return study(
        tmp_path,
        benchmarks={
            "tofu": {"kind": "tofu", "source": str(tofu), "forget_split": "forget01", **bench}
        },
        models={"m": {"kind": "hf", "source": str(model)}},
        experiments=[{"benchmark": "tofu", "model": "m"}],
        methods=methods,
    )


def test_tofu_preferred_answer_files_come_from_the_benchmark_config(tmp_path):
    alt_only = {"dpo_alt": RIVALS["dpo_alt"]}
    with pytest.raises(
        ConfigError,
        match=r"methods.dpo_alt: preferred: alternate.*"
        r"benchmarks.tofu.alternate_file.*forget01",
    ):
        _tofu_study(tmp_path, alt_only)
    with pytest.raises(
        ConfigError, match=r"benchmarks.tofu.alternate_file: file not found: .*x.json"
    ):
        _tofu_study(tmp_path, alt_only, alternate_file=str(tmp_path / "x.json"))
    with pytest.raises(ConfigError, match=r"benchmarks.tofu.idk_file: file not found"):
        _tofu_study(tmp_path, alt_only, idk_file=str(tmp_path / "no.jsonl"))
    idk, alt = tmp_path / "idk.jsonl", tmp_path / "alt.json"
    idk.write_text("I have no idea.\n")
    alt.write_text('{"alternate": "b"}\n')
    s = _tofu_study(
        tmp_path,
        {k: RIVALS[k] for k in ("dpo_idk", "dpo_alt")},
        idk_file=str(idk),
        alternate_file=str(alt),
    )
    data = {r.entry: s.unlearn_config(r)["data"] for r in s.runs.values()}
    assert data["dpo_idk"]["idk_file"] == str(idk) and "alternate_file" not in data["dpo_idk"]
    assert data["dpo_alt"]["alternate_file"] == str(alt) and "idk_file" not in data["dpo_alt"]
    # without a refusal file TOFU runs use the built-in refusals
    s = _tofu_study(tmp_path, {"dpo_idk": RIVALS["dpo_idk"]})
    assert "idk_file" not in s.unlearn_config(next(iter(s.runs.values())))["data"]
    with pytest.raises(ConfigError, match=r"benchmarks.emb.idk_file applies to kind tofu only"):
        study(tmp_path, benchmarks={"emb": {"kind": "embedded", "idk_file": str(idk)}})


def test_peft_flows_into_run_configs_and_keeps_tags(tmp_path):
    """unlearn.train.peft reaches every run's train section (an entry's train.peft: null
    trains in full); adding it renames no run."""

    def build(**unlearn_train):
        cfg = copy.deepcopy(BASE)
        cfg["results"] = str(tmp_path / "results")
        cfg["unlearn"]["train"].update(unlearn_train)
        cfg["methods"]["ga"]["train"] = {"peft": None}  # this entry trains in full
        return Study(with_defaults(cfg))

    plain, lora = build(), build(peft={"rank": 4, "target_modules": ["q_proj"]})
    assert plain.runs.keys() == lora.runs.keys()  # tags and run dirs do not move
    for key, run in lora.runs.items():
        train = lora.unlearn_config(run)["train"]
        if run.entry == "ga":
            assert train["peft"] is None
        else:
            assert train["peft"] == {"rank": 4, "target_modules": ["q_proj"]}
            assert plain.unlearn_config(plain.runs[key])["train"].get("peft") is None


def test_command_line_args(tmp_path):
    s = study(tmp_path, evaluate={"limit": 4})
    assert (
        s.data_args("emb") == "--benchmark embedded --people 40 --questions-per-person 5 --seed 0"
    )
    assert s.embedded_model_args("tiny") == "--hidden-size 64 --layers 2 --seed 0"
    assert (
        s.eval_args("emb", "tiny")
        == "--forget-split forget05 --batch-size 32 --max-new-tokens 24 --max-length 128 --limit 4"
    )
    spec = s.suites_spec("emb")["suites"]["fmc"]
    assert spec == {
        "kind": "tofu_mc",
        "set": "forget",
        "source": s.data_dir("emb"),
        "forget_split": "forget05",
    }
    assert (
        s.relearn_slice_args("emb") == f"--input {s.data_dir('emb')}/forget05.json --fraction 0.5"
    )


def test_tofu_and_model_args(tmp_path):
    tofu = tmp_path / "tofu"
    tofu.mkdir()
    s = study(
        tmp_path,
        benchmarks={
            "tofu": {
                "kind": "tofu",
                "source": str(tofu),
                "forget_split": "forget01",
                "retain_limit": 160,
            }
        },
        models={
            "sm": {"kind": "gguf", "source": "smollm2"},
            "hf": {"kind": "hf", "source": "org/name"},
        },
        experiments=[{"benchmark": "tofu", "model": "sm"}],
    )
    assert (
        s.data_args("tofu")
        == f"--benchmark tofu --source {tofu} --forget-split forget01 --retain-limit 160"
    )
    assert s.model_args("sm") == "--smollm2" and s.model_args("hf") == "--hf org/name"
    assert s.base_model_dir("tofu", "sm") == f"{s.results}/models/imported/sm"
    assert s.split_files("tofu") == ("forget01", "retain99")
    # a real benchmark is fine-tuned on its own files only (no embedded pretraining file)
    assert s.finetune_config("tofu", "sm", "target")["data"]["retain"] == [
        f"{s.data_dir('tofu')}/full.json"
    ]


# ----------------------------------------------------------------------------- cross-field errors


def _suite(spec):
    return {"evaluations": {"x": spec}}


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"experiments": [{"benchmark": "nope", "model": "tiny"}]},
            r"experiments\[0\]\.benchmark = 'nope' is not a key of benchmarks \(\['emb'\]\)",
        ),
        (
            {"experiments": [{"benchmark": "emb", "model": "big"}]},
            r"experiments\[0\]\.model = 'big' is not a key of models \(\['tiny'\]\)",
        ),
        ({"methods": {"m": {"method": "blurr"}}}, r"blurr"),
        ({"methods": {"m": {"method": "blur", "grid": {"gama": [0.1]}}}}, r"methods\.m.*gama"),
        (
            {"methods": {"m": {"method": "blur", "grid": {"gamma": [0.1, -1.0]}}}},
            r"methods\.m.*gamma",
        ),
        (
            {"benchmarks": {"emb": {"kind": "tofu"}}},
            r"benchmarks\.emb\.source is required for kind tofu",
        ),
        (
            {"benchmarks": {"emb": {"kind": "tofu", "source": "./no/such"}}},
            r"benchmarks\.emb\.source: directory not found: \./no/such",
        ),
        (
            {"benchmarks": {"emb": {"kind": "embedded", "retain_limit": 10}}},
            r"benchmarks\.emb\.retain_limit applies to kind tofu only",
        ),
        ({"models": {"tiny": {"kind": "hf"}}}, r"models\.tiny\.source is required for kind hf"),
        (
            {"models": {"tiny": {"kind": "gguf", "source": "/no/model.gguf"}}},
            r"models\.tiny\.source: GGUF file not found: /no/model\.gguf",
        ),
        (
            {"models": {"tiny": {"kind": "hf", "source": "./no/model"}}},
            r"models\.tiny\.source: model directory not found: \./no/model",
        ),
        (
            {
                "models": {"tiny": {"kind": "embedded"}},
                "benchmarks": {"emb": {"kind": "tofu", "source": "org/tofu"}},
            },
            r"model 'tiny' is an embedded tiny model; it can only run on embedded benchmarks",
        ),
        (
            _suite({"kind": "wmdp", "source": "."})
            | {"evaluations": {"a b": {"kind": "wmdp", "source": "."}}},
            r"evaluations\.a b: suite names may hold only",
        ),
        (
            _suite({"kind": "tofu_mc", "source": "."}),
            r"evaluations\.x\.source: a tofu_mc suite uses each experiment",
        ),
        (
            _suite({"kind": "mmlu", "source": "./no/mmlu"}),
            r"evaluations\.x\.source: directory not found: \./no/mmlu",
        ),
        (
            _suite({"kind": "memorisation", "forget_split": "forget01"}),
            r"evaluations\.x\.forget_split: set by the",
        ),
        (
            _suite({"kind": "wmdp", "source": ".", "subsett": "bio"}),
            r"unknown key evaluations\.x\.subsett",
        ),
        (_suite({"kind": "wmdp"}), r"evaluations\.x\.source is required for a wmdp suite"),
    ],
    ids=[
        "unknown-benchmark",
        "unknown-model",
        "unknown-method",
        "unknown-hparam",
        "bad-hparam-value",
        "tofu-without-source",
        "tofu-source-missing",
        "retain-limit-on-embedded",
        "hf-without-source",
        "gguf-missing",
        "hf-dir-missing",
        "embedded-model-on-tofu",
        "bad-suite-name",
        "suite-source-on-bound",
        "suite-dir-missing",
        "suite-forget-split",
        "suite-unknown-key",
        "suite-without-source",
    ],
)
def test_cross_field_errors(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        study(tmp_path, **changes)


def test_the_default_config_is_a_valid_study():
    cfg = with_defaults(yaml.safe_load((REPO / "config.yaml").read_text()))
    s = Study(cfg)
    assert (
        len(s.runs) == 9
        and s.relearn_steps == [5]
        and set(s.suites) == {"forget_mc", "world_mc", "memorisation"}
    )


# ----------------------------------------------------------------------------- published models


def _published(tmp_path, retain=True, **exp_extra):
    tofu, target, ret = tmp_path / "tofu", tmp_path / "pub_target", tmp_path / "pub_retain"
    for d in (tofu, target, ret):
        d.mkdir(exist_ok=True)
    exp = {"benchmark": "tofu", "model": "llama", "target": str(target), **exp_extra}
    if retain:
        exp["retain"] = str(ret)
    return study(
        tmp_path,
        benchmarks={"tofu": {"kind": "tofu", "source": str(tofu), "forget_split": "forget10"}},
        models={
            "llama": {
                "kind": "hf",
                "source": "meta-llama/Llama-3.2-1B-Instruct",
                "dtype": "bfloat16",
                "prompt_format": "open-unlearning-llama3",
            }
        },
        experiments=[exp],
    )


def test_published_target_and_retain_replace_the_fine_tunes(tmp_path):
    s = _published(tmp_path)
    R = s.results
    assert s.reference_unit("tofu", "llama", "target") == "published/target"
    assert s.target_model("tofu", "llama") == f"{R}/tofu/llama/published/target/model"
    assert s.units()[:2] == [f"{R}/tofu/llama/published/target", f"{R}/tofu/llama/published/retain"]
    assert all("finetune" not in f for f in s.train_summaries())  # no fine-tuning job
    assert (
        s.published_args("tofu", "llama", "retain")
        == f"--hf {tmp_path / 'pub_retain'} --dtype bfloat16"
    )
    run = next(iter(s.runs.values()))
    cfg = s.unlearn_config(run)
    assert cfg["model"] == s.target_model("tofu", "llama")
    assert (
        cfg["data"]["prompt_format"] == "open-unlearning-llama3"
        and cfg["train"]["dtype"] == "bfloat16"
    )
    assert s.retain_eval("tofu", "llama", "published/target") == [
        f"{R}/tofu/llama/published/retain/eval.json"
    ]
    assert s.retain_eval_arg("tofu", "llama", "published/retain") == "--self-reference"
    assert s.retain_eval_arg("tofu", "llama", run.dir.split("/llama/")[1]).startswith(
        "--retain-result "
    )
    opts = s.model_options("tofu", "llama")
    assert opts == "--dtype bfloat16 --prompt-format open-unlearning-llama3"
    assert s.eval_args("tofu", "llama").endswith(opts) and s.convert_args(run) == "--dtype bfloat16"
    _touch_data(s, "tofu")
    fmt = parse_run_config(json.loads(json.dumps(s.relearn_config(run, 3))), "x").data.qa_format()
    assert fmt.system_prompt == "You are a helpful assistant." and fmt.use_chat_template


def test_published_target_without_retain_model_reports_unavailable(tmp_path):
    s = _published(tmp_path, retain=False, prompt_format="plain")
    assert s.reference_unit("tofu", "llama", "retain") is None
    assert len(s.units()) == 1 + len(s.runs)  # target + runs, no retain model
    unit = "published/target"
    assert (
        s.retain_eval("tofu", "llama", unit) == [] and s.retain_suites("tofu", "llama", unit) == []
    )
    assert s.retain_eval_arg("tofu", "llama", unit) == "--no-retain-model"
    assert s.retain_suites_arg("tofu", "llama", unit) == "--no-retain-model"
    assert s.prompt_format("tofu", "llama") == "plain"  # the experiment's overrides the model's


def test_fine_tuned_experiment_needs_no_prompt_format_keys(tmp_path):
    s = study(tmp_path)
    run = next(iter(s.runs.values()))
    assert "prompt_format" not in s.unlearn_config(run)["data"]  # defaults keep params as before
    assert s.model_options("emb", "tiny") == "" and s.convert_args(run) == ""


@pytest.mark.parametrize("stage", ["finetune", "unlearn", "relearn"])
def test_each_stage_takes_the_deepspeed_backend(tmp_path, stage):
    s = study(
        tmp_path,
        **{stage: {**BASE.get(stage, {}), "backend": "deepspeed", "deepspeed_config": "zero3"}},
    )
    _touch_data(s)
    run = next(iter(s.runs.values()))
    built = {
        "finetune": s.finetune_config("emb", "tiny", "target"),
        "unlearn": s.unlearn_config(run),
        "relearn": s.relearn_config(run, 2),
    }
    for name, cfg in built.items():
        train = parse_run_config(cfg, name).train
        assert train.backend == ("deepspeed" if name == stage else "local"), name
        assert train.deepspeed_config == ("zero3" if name == stage else None), name


def test_schema_lists_every_prompt_format():
    from blur_core.data.qa import PROMPT_FORMATS

    schema = yaml.safe_load(SCHEMA.read_text())
    model_enum = schema["properties"]["models"]["additionalProperties"]["properties"][
        "prompt_format"
    ]["enum"]
    exp_enum = schema["properties"]["experiments"]["items"]["properties"]["prompt_format"]["enum"]
    assert set(model_enum) == set(exp_enum) == set(PROMPT_FORMATS)


@pytest.mark.parametrize(
    "exp, match",
    [
        (
            [{"benchmark": "emb", "model": "tiny"}, {"benchmark": "emb", "model": "tiny"}],
            r"experiments\[1\] repeats experiments\[0\]",
        ),
        (
            [{"benchmark": "emb", "model": "tiny", "retain": "org/retain"}],
            r"experiments\[0\]\.retain is set but experiments\[0\]\.target is not",
        ),
        (
            [{"benchmark": "emb", "model": "tiny", "target": "./no/dir"}],
            r"experiments\[0\]\.target: './no/dir' is neither a model directory nor a hub id",
        ),
        (
            [{"benchmark": "emb", "model": "tiny", "target": "org/target"}],
            r"experiments\[0\]\.target: model 'tiny' is an embedded tiny model",
        ),
    ],
    ids=[
        "repeated-experiment",
        "retain-without-target",
        "target-dir-missing",
        "embedded-published",
    ],
)
def test_experiment_errors(tmp_path, exp, match):
    with pytest.raises(ConfigError, match=match):
        study(tmp_path, experiments=exp)


# ----------------------------------------------------------------------------- hub ids offline


def test_offline_hub_ids_must_be_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    tofu = tmp_path / "tofu"
    tofu.mkdir()
    cfg = dict(
        benchmarks={"tofu": {"kind": "tofu", "source": str(tofu)}},
        models={"llama": {"kind": "hf", "source": "org/base"}},
    )
    # a published target missing from the cache: named, with the command that fills it
    with pytest.raises(
        ConfigError,
        match=r"experiments\[0\]\.target: model 'org/tofu_full' is a hub "
        r"id, HF_HUB_OFFLINE=1 .* `hf download org/tofu_full`",
    ):
        study(
            tmp_path,
            experiments=[{"benchmark": "tofu", "model": "llama", "target": "org/tofu_full"}],
            **cfg,
        )
    # a fine-tuned experiment needs its base model
    with pytest.raises(ConfigError, match=r"models\.llama\.source: model 'org/base'"):
        study(tmp_path, experiments=[{"benchmark": "tofu", "model": "llama"}], **cfg)
    # the TOFU dataset by hub id
    with pytest.raises(
        ConfigError,
        match=r"benchmarks\.tofu\.source: dataset 'locuslab/TOFU' .*"
        r"`hf download locuslab/TOFU --repo-type dataset`",
    ):
        study(
            tmp_path,
            experiments=[{"benchmark": "tofu", "model": "llama", "target": str(tofu)}],
            benchmarks={"tofu": {"kind": "tofu", "source": "locuslab/TOFU"}},
            models=cfg["models"],
        )
    # online nothing is checked (the libraries download what is missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    study(
        tmp_path,
        experiments=[{"benchmark": "tofu", "model": "llama", "target": "org/tofu_full"}],
        **cfg,
    )


def test_train_overrides_in_order_unlearn_experiment_method(tmp_path):
    s = study(
        tmp_path,
        experiments=[
            {"benchmark": "emb", "model": "tiny", "train": {"warmup_steps": 7, "lr": 2e-3}}
        ],
    )
    gd = s.unlearn_config(s.run_of("emb", "tiny", "graddiff", "retain_weight=1@seed=0"))["train"]
    ga = s.unlearn_config(s.run_of("emb", "tiny", "ga", "seed=0"))["train"]
    assert ga["warmup_steps"] == 7 and ga["lr"] == 2e-3 and ga["max_steps"] == 3
    assert gd["warmup_steps"] == 7 and gd["lr"] == 5e-4  # the entry's own train wins


# ----------------------------------------------------------------------------- text corpora


def test_muse_corpus_protocol(tmp_path):
    muse = tmp_path / "muse_news"
    muse.mkdir()
    s = study(
        tmp_path,
        benchmarks={
            "news": {
                "kind": "muse",
                "source": str(muse),
                "retain": "extra_news",
                "forget_verbmem": 20,
                "max_length": 256,
                "evaluate": {"limit": 20, "verbmem_max_new_tokens": 64},
            }
        },
        models={"sm": {"kind": "gguf", "source": "smollm2"}},
        experiments=[{"benchmark": "news", "model": "sm"}],
        evaluations={},
    )
    assert s.protocol("news") == "muse" and s.eval_command("news") == "evaluate-corpus"
    assert (
        s.data_args("news")
        == f"--benchmark muse --source {muse} --retain extra_news --forget-verbmem 20"
    )
    data = s.data_dir("news")
    ft = s.finetune_config("news", "sm", "target")["data"]
    assert ft["retain"] == [f"{data}/forget.jsonl", f"{data}/retain.jsonl"]
    assert ft["format"] == "text" and ft["text_chunking"] == "muse" and ft["max_length"] == 256
    assert s.finetune_config("news", "sm", "retain")["data"]["retain"] == [f"{data}/retain.jsonl"]
    run = next(iter(s.runs.values()))
    un = s.unlearn_config(run)["data"]
    assert (un["forget"], un["retain"]) == (f"{data}/forget.jsonl", f"{data}/retain.jsonl")
    assert s.relearn_slice_args("news").startswith(f"--input {data}/forget.jsonl ")
    assert s.eval_args("news", "sm") == "--protocol muse --limit 20 --verbmem-max-new-tokens 64"
    assert s.retain_eval_arg("news", "sm", "finetune/target").startswith("--retain-result ")
    # the built configs pass the library's own validation
    Path(data).mkdir(parents=True)
    for name in ("forget.jsonl", "retain.jsonl"):
        (Path(data) / name).write_text('{"text": "a b c"}\n')
    for cfg in (s.finetune_config("news", "sm", "target"), s.unlearn_config(run)):
        assert parse_run_config(cfg).data.format_of("forget") == "text"


def test_wmdp_protocol_starts_from_the_base_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the hub id is not in a cache here
    corpora, mc = tmp_path / "wmdp-corpora", tmp_path / "wmdp"
    corpora.mkdir()
    mc.mkdir()
    s = study(
        tmp_path,
        benchmarks={
            "bio": {
                "kind": "wmdp",
                "source": str(corpora),
                "subset": "bio",
                "wmdp_source": str(mc),
                "evaluate": {"mc_limit": 100},
            }
        },
        models={
            "zephyr": {"kind": "hf", "source": "HuggingFaceH4/zephyr-7b-beta", "dtype": "bfloat16"}
        },
        experiments=[{"benchmark": "bio", "model": "zephyr"}],
        evaluations={},
        relearn={"steps": []},
    )
    exp = s.experiment("bio", "zephyr")
    assert exp.protocol == "wmdp" and exp.target_is_base
    assert s.reference_unit("bio", "zephyr", "target") == "published/target"
    assert s.reference_unit("bio", "zephyr", "retain") is None  # no retain model
    assert (
        s.published_args("bio", "zephyr", "target")
        == "--hf HuggingFaceH4/zephyr-7b-beta --dtype bfloat16"
    )
    assert s.train_summaries() == [f"{run.dir}/summary.json" for run in s.runs.values()]
    data = s.unlearn_config(next(iter(s.runs.values())))["data"]
    assert (data["forget_max_length"], data["retain_max_length"], data["text_chunking"]) == (
        512,
        512,
        "document",
    )
    assert s.eval_args("bio", "zephyr") == (
        f"--protocol wmdp --wmdp-source {mc} --wmdp-subset bio --mc-limit 100 --dtype bfloat16"
    )
    assert s.retain_eval_arg("bio", "zephyr", "published/target") == "--no-retain-model"


def test_embedded_corpus_under_the_wmdp_protocol_fine_tunes_a_target(tmp_path):
    s = study(
        tmp_path,
        benchmarks={"haz": {"kind": "corpus-embedded", "protocol": "wmdp", "people": 20}},
        experiments=[{"benchmark": "haz", "model": "tiny", "methods": ["ga"]}],
        evaluations={},
    )
    assert (
        s.reference_unit("haz", "tiny", "target") == "finetune/target"
    )  # the stand-in for pretraining
    assert s.reference_unit("haz", "tiny", "retain") is None
    assert {run.entry for run in s.runs.values()} == {"ga"}  # experiments[0].methods
    assert (
        s.data_args("haz")
        == "--benchmark corpus-embedded --people 20 --forget-fraction 0.1 --seed 0"
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"benchmarks": {"emb": {"kind": "embedded", "subset": "bio"}}},
            r"benchmarks\.emb\.subset applies to kind wmdp only \(kind 'embedded'\)",
        ),
        (
            {"benchmarks": {"emb": {"kind": "corpus-embedded", "source": "x"}}},
            r"benchmarks\.emb\.source applies to kind tofu / muse / wmdp only",
        ),
        (
            {"benchmarks": {"emb": {"kind": "muse"}}},
            r"benchmarks\.emb\.source is required for kind muse",
        ),
        (
            {"benchmarks": {"emb": {"kind": "wmdp", "source": "cais/wmdp-corpora"}}},
            r"benchmarks\.emb\.wmdp_source is required",
        ),
        (
            {
                "benchmarks": {
                    "emb": {
                        "kind": "wmdp",
                        "source": "cais/wmdp-corpora",
                        "protocol": "muse",
                        "wmdp_source": "cais/wmdp",
                    }
                }
            },
            r"benchmarks\.emb\.protocol = 'muse': a wmdp corpus has no MUSE evaluation sets",
        ),
        (
            {
                "benchmarks": {"emb": {"kind": "corpus-embedded", "protocol": "wmdp"}},
                "experiments": [
                    {"benchmark": "emb", "model": "tiny", "retain": "o/r", "target": "o/t"}
                ],
            },
            r"experiments\[0\]\.retain: benchmark 'emb' follows the wmdp protocol",
        ),
        (
            {"benchmarks": {"emb": {"kind": "corpus-embedded"}}},  # BASE has a tofu_mc suite
            r"evaluations\.fmc: a tofu_mc suite reads each experiment's TOFU-style benchmark",
        ),
        (
            {"experiments": [{"benchmark": "emb", "model": "tiny", "methods": ["nope"]}]},
            r"experiments\[0\]\.methods: 'nope' is not a key of methods",
        ),
    ],
    ids=[
        "subset-on-qa",
        "source-on-generated",
        "muse-without-source",
        "wmdp-without-questions",
        "wmdp-as-muse",
        "retain-under-wmdp",
        "qa-suite-with-corpus",
        "unknown-method-entry",
    ],
)
def test_corpus_config_errors(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        study(tmp_path, **changes)


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"unlearn": {**BASE["unlearn"], "train": {"max_steps": 3, "lerning_rate": 1e-3}}},
            r"unknown key unlearn\.train \+ experiments\[0\]\.train \+ methods\.\w+\.train\.lerning_rate",
        ),
        (
            {"methods": {"m": {"method": "ga", "train": {"peft": {"rank": 0}}}}},
            r"methods\.m\.train\.peft\.rank",
        ),
        ({"finetune": {"train": {"schedule_": "x"}}}, r"unknown key finetune\.schedule_"),
    ],
    ids=["misspelled-train-key", "bad-lora-rank", "finetune-train-key"],
)
def test_train_sections_are_validated_before_any_job(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        study(tmp_path, **changes)


def test_lora_runs_can_keep_only_the_adapter(tmp_path):
    methods = {**BASE["methods"], "ga_lora": {"method": "ga", "train": {"peft": {"rank": 4}}}}
    s = study(tmp_path, methods=methods)
    lora, full = (
        s.run_of("emb", "tiny", "ga_lora", "seed=0"),
        s.run_of("emb", "tiny", "ga", "seed=0"),
    )
    assert s.convert_args(lora) == "" and s.convert_args(full) == ""  # merged by default
    s = study(tmp_path, methods=methods, unlearn={**BASE["unlearn"], "merge_adapters": False})
    assert s.convert_args(lora) == "--adapter-only"
    assert s.convert_args(full) == ""  # a full fine-tune has no adapter to keep


# ----------------------------------------------------------------------------- checkpoints


def _unlearn(**changes) -> dict:
    return {**copy.deepcopy(BASE["unlearn"]), **changes}


SELECT = {"maximize": "forget_quality", "subject_to": "model_utility >= 0.95 * target"}


def test_without_eval_checkpoints_nothing_changes(tmp_path):
    s = study(tmp_path)
    assert s.checkpoints == {} and s.selection is None
    assert s.unlearn_step_outputs() == {} and s.checkpoint_eval_files() == []
    assert s.selection_files() == [] and s.report_checkpoint_args() == ""
    for run in s.runs.values():
        cfg = s.unlearn_config(run)
        assert "export_dir" not in cfg and "export_steps" not in cfg["train"]
    # an empty list is the same as none
    assert study(tmp_path, unlearn=_unlearn(eval_checkpoints=[])).checkpoints == {}


def test_eval_checkpoints_export_convert_and_evaluate_each_step(tmp_path):
    s = study(tmp_path, unlearn=_unlearn(eval_checkpoints=[1, 2], select=SELECT))
    run = s.run_of("emb", "tiny", "ga", "seed=0")
    assert s.checkpoint_steps(run) == [1, 2]
    cfg = s.unlearn_config(run)
    assert cfg["train"]["export_steps"] == [1, 2]
    assert cfg["export_dir"] == f"{run.dir}/steps_weights"
    _touch_data(s)
    parsed = parse_run_config(cfg)  # the library takes it
    assert parsed.train.export_steps == [1, 2] and str(parsed.export_path) == cfg["export_dir"]
    assert len(s.checkpoint_eval_files()) == 2 * len(s.runs)
    assert s.checkpoint_eval_files(run) == [
        f"{run.dir}/steps/1/eval.json",
        f"{run.dir}/steps/2/eval.json",
    ]
    assert s.unlearn_step_outputs() == {
        "steps_weights": f"{s.results}/{{bench}}/{{model}}/runs/{{entry}}/{{tag}}/steps_weights"
    }
    inputs = s.select_inputs(run)
    assert inputs["steps"] == s.checkpoint_eval_files(run)
    assert inputs["final"] == f"{run.dir}/eval.json"
    assert inputs["target"] == f"{s.results}/emb/tiny/finetune/target/eval.json"
    assert s.select_args(run) == f"--retain {s.results}/emb/tiny/finetune/retain/eval.json"
    assert s.selection_files()[0].endswith("/selected/selection.json")
    assert len(s.selection_files()) == len(s.runs)
    assert s.select_spec() == SELECT
    args = s.report_checkpoint_args()
    assert args.startswith("--checkpoint-evals ") and " --selections " in args
    # a step's model is evaluated as its own unit, against the retain model
    unit = "runs/ga/seed=0/steps/2"
    assert s.retain_eval("emb", "tiny", unit) == [f"{s.results}/emb/tiny/finetune/retain/eval.json"]


def test_every_n_steps_per_run(tmp_path):
    methods = copy.deepcopy(BASE["methods"])
    methods["ga"]["train"] = {"max_steps": 7}
    s = study(tmp_path, unlearn=_unlearn(eval_checkpoints={"every": 2}), methods=methods)
    assert s.checkpoint_steps(s.run_of("emb", "tiny", "ga", "seed=0")) == [2, 4, 6]
    assert s.checkpoint_steps(s.run_of("emb", "tiny", "graddiff", "retain_weight=1@seed=0")) == [2]


@pytest.mark.parametrize(
    "unlearn, match",
    [
        (
            {"eval_checkpoints": [1, 3]},
            r"unlearn\.eval_checkpoints \(run .*\): step 3 is not before the run's last step "
            r"\(train\.max_steps = 3\)",
        ),
        (
            {"eval_checkpoints": [2, 1]},
            r"unlearn\.eval_checkpoints = \[2, 1\]: steps must increase",
        ),
        ({"eval_checkpoints": [1, 1]}, "steps must increase"),
        ({"eval_checkpoints": {"every": 3}}, "every 3 steps gives no checkpoint before"),
        (
            {"eval_checkpoints": {"every": 1}, "train": {"epochs": 2}},
            r"\{every: 1\} needs train\.max_steps",
        ),
        ({"select": SELECT}, "set unlearn.eval_checkpoints too"),
        (
            {"eval_checkpoints": [1], "select": {"maximize": "utility"}},
            r"unlearn\.select\.maximize = 'utility': unknown metric",
        ),
        (
            {"eval_checkpoints": [1], "select": {**SELECT, "subject_to": "model_utility >= 0.9 *"}},
            r"unlearn\.select\.subject_to = 'model_utility >= 0\.9 \*': expected METRIC OP RHS",
        ),
    ],
    ids=[
        "step-beyond-total",
        "decreasing",
        "repeated",
        "every-too-large",
        "every-needs-max-steps",
        "select-without-checkpoints",
        "unknown-metric",
        "bad-constraint",
    ],
)
def test_checkpoint_config_errors(tmp_path, unlearn, match):
    with pytest.raises(ConfigError, match=match):
        study(tmp_path, unlearn=_unlearn(**unlearn))


@pytest.mark.parametrize("value", [[0, 1], [1.5], {"every": 0}, {"each": 2}, "10"], ids=str)
def test_checkpoint_schema_errors(tmp_path, value):
    from snakemake.exceptions import WorkflowError

    cfg = copy.deepcopy(BASE)
    cfg["results"] = str(tmp_path)
    cfg["unlearn"] = _unlearn(eval_checkpoints=value)
    with pytest.raises(WorkflowError, match="eval_checkpoints"):
        with_defaults(cfg)


def test_selection_needs_a_retain_model_where_the_criterion_does(tmp_path, monkeypatch):
    # a published target without a published retain model: no forget quality, no `retain`
    monkeypatch.setattr("blur_core.hub.is_offline", lambda: False)
    exp = [{"benchmark": "emb", "model": "tiny", "target": "org/published-target"}]
    models = {"tiny": {"kind": "hf", "source": "org/base"}}
    for spec, match in (
        (SELECT, "forget_quality compares against the retain model"),
        (
            {"maximize": "model_utility", "subject_to": "model_utility >= retain"},
            "has no retain model",
        ),
    ):
        with pytest.raises(ConfigError, match=match):
            study(
                tmp_path,
                experiments=exp,
                models=models,
                evaluations={},
                unlearn=_unlearn(eval_checkpoints=[1], select=spec),
            )
