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
    s = study(tmp_path, unlearn={**BASE["unlearn"], "nproc": nproc})
    assert s.unlearn_launcher(resources) == expected


def test_launch_line_on_several_nodes():
    line = launch_prefix(ranks_per_node({"gres": "gpu:8", "nodes": 2}, 1), nodes=2)
    assert line.startswith('srun --overlap --nodes "$SLURM_NNODES" --ntasks-per-node 1 torchrun ')
    assert "--nproc_per_node 8" in line and "--rdzv_backend c10d" in line and line.endswith(" -m")
    assert '--rdzv_id "$SLURM_JOB_ID"' in line


def test_gpu_count_parsing():
    assert gpus_per_node({"gres": "gpu:2", "gpu": 5}) == 2  # gres (what SLURM is given) wins
    assert gpus_per_node({"gres": "", "gpu": 0}) == 0
    assert gpus_per_node({"gres": "tmpfs:10G"}) == 0  # not a GPU gres
    assert gpus_per_node({}) == 0
    with pytest.raises(ValueError, match="ranks=0"):
        launch_prefix(0)


def test_gpu_resources_follow_unlearn_gpus(tmp_path):
    assert study(tmp_path).gpu_resources() == {"gpu": 0, "gres": ""}
    s = study(tmp_path, unlearn={**BASE["unlearn"], "gpus": 2})
    assert s.gpu_resources() == {"gpu": 2, "gres": "gpu:2"}
    assert s.unlearn_launcher(s.gpu_resources()) == "torchrun --standalone --nproc_per_node 2 -m"


# ----------------------------------------------------------------------------- job configs


def _touch_data(s: Study, bench: str = "emb") -> None:
    data = Path(s.data_dir(bench))
    data.mkdir(parents=True, exist_ok=True)
    for name in ("full", "pretrain", "forget05", "retain95", "forget10", "retain90"):
        (data / f"{name}.json").write_text('[{"question": "q", "answer": "a"}]')
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
        f"{s.data_dir('emb')}/pretrain.json",
    ]
    assert parse_run_config(built[1]).data.retain[0].endswith("/retain95.json")
    run = s.run_of("emb", "tiny", "graddiff", "retain_weight=16@seed=1")
    un = parse_run_config(s.unlearn_config(run))
    assert un.train.lr == 5e-4 and un.train.seed == 1 and un.train.max_steps == 3  # entry override
    assert un.data.forget.endswith("/forget05.json") and un.data.retain.endswith("/retain95.json")
    assert un.model == f"{s.results}/emb/tiny/finetune/target/model"
    assert un.train.backend == backend
    assert un.train.deepspeed_config == ("zero3" if backend == "deepspeed" else None)
    rl = parse_run_config(s.relearn_config(run, 5))
    assert (
        rl.model == f"{run.dir}/model"
        and rl.train.max_steps == 5
        and rl.output_dir == f"{run.dir}/relearn/k5"
    )


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
        s.eval_args("emb")
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
