"""Unit tests for the method registry (blur_core.methods) and the run config (blur_core.train.config)."""

from __future__ import annotations

import math

import pytest
import yaml

from blur_core.config import ConfigError
from blur_core.methods import METHODS, build_objective, resolved_hparams
from blur_core.train.config import load_run_config, parse_run_config

ALL_METHODS = [
    "blur",
    "ga",
    "graddiff",
    "npo",
    "simnpo",
    "idk",
    "dpo",
    "undial",
    "wga",
    "satimp",
    "ceu",
    "rmu",
    "pdu",
    "sft",
]

BLUR_DEFAULTS = {
    "gamma": 0.1,
    "variant": "forget_priority",
    "forget_loss": "npo",
    "retain_loss": "nll",
    "eps": 1e-12,
    "beta": 0.1,
    "delta": 0.0,
    "preferred": "idk",
    "undial_beta": 10.0,
    "wga_beta": 1.0,
    "satimp_beta1": 5.0,
    "satimp_beta2": 1.0,
    "ceu_ignore_first": 1,
    "rmu_layer": 7,
    "steering_coeff": 6.5,
    "rmu_seed": 0,
}

# ====================================================================== methods


def test_registry_lists_the_documented_methods():
    assert sorted(METHODS) == sorted(ALL_METHODS)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_builds_with_defaults(name):
    obj = build_objective(name)
    assert obj.method == name
    assert obj.combiner in ("blur", "weighted", "pdu")
    assert obj == build_objective(name, {})


def test_blur_defaults_objective():
    obj = build_objective("blur")
    assert obj.combiner == "blur"
    assert (obj.forget_loss, obj.retain_loss) == ("npo", "nll")
    assert obj.gamma == 0.1
    assert obj.variant == "forget_priority"
    assert obj.beta == 0.1


def test_blur_hparams_reach_objective():
    obj = build_objective(
        "blur",
        {
            "gamma": 0.3,
            "variant": "retain_priority",
            "forget_loss": "simnpo",
            "retain_loss": "kl",
            "beta": 2.5,
            "delta": 0.5,
            "eps": 1e-8,
        },
    )
    assert (obj.gamma, obj.variant, obj.forget_loss, obj.retain_loss) == (
        0.3,
        "retain_priority",
        "simnpo",
        "kl",
    )
    assert (obj.beta, obj.delta, obj.eps) == (2.5, 0.5, 1e-8)


def test_weighted_methods_objective():
    gd = build_objective("graddiff", {"retain_weight": 2, "forget_weight": 0.5})
    assert (gd.combiner, gd.forget_loss, gd.retain_loss) == ("weighted", "ga", "nll")
    assert (gd.forget_weight, gd.retain_weight) == (0.5, 2.0)
    ga = build_objective("ga")
    assert (ga.forget_loss, ga.retain_loss, ga.retain_weight) == ("ga", None, 0.0)
    assert build_objective("npo").forget_loss == "npo"
    assert build_objective("npo", {"beta": 0.2}).beta == 0.2
    simnpo = build_objective("simnpo")
    assert (simnpo.forget_loss, simnpo.beta) == ("simnpo", 2.5)
    assert build_objective("idk").forget_loss == "idk"
    rmu = build_objective("rmu", {"rmu_layer": 3})
    assert (rmu.forget_loss, rmu.retain_loss, rmu.rmu_layer, rmu.retain_weight) == (
        "rmu",
        "rmu",
        3,
        1200.0,
    )
    sft = build_objective("sft")
    assert (sft.forget_loss, sft.retain_loss, sft.forget_weight, sft.retain_weight) == (
        None,
        "nll",
        0.0,
        1.0,
    )


def test_unknown_method_names_it_and_lists_valid():
    with pytest.raises(ConfigError) as exc:
        build_objective("blurr")
    msg = str(exc.value)
    assert "blurr" in msg
    for name in ALL_METHODS:
        assert repr(name) in msg, name


def test_unknown_hparam_key():
    with pytest.raises(ConfigError) as exc:
        build_objective("blur", {"gama": 0.1})
    msg = str(exc.value)
    assert "gama" in msg
    for key in ("gamma", "variant", "forget_loss", "retain_loss", "beta"):
        assert key in msg, key


def test_unknown_hparam_key_for_baseline_lists_its_keys():
    with pytest.raises(ConfigError) as exc:
        build_objective("graddiff", {"gamma": 0.1})  # a BLUR key, not a GradDiff one
    msg = str(exc.value)
    assert "gamma" in msg and "retain_weight" in msg and "forget_weight" in msg


def test_sft_takes_no_hparams():
    with pytest.raises(ConfigError, match="retain_weight"):
        build_objective("sft", {"retain_weight": 1.0})


@pytest.mark.parametrize(
    ("method", "hp", "key", "value"),
    [
        ("blur", {"gamma": "high"}, "gamma", "'high'"),
        ("blur", {"gamma": True}, "gamma", "True"),
        ("blur", {"gamma": None}, "gamma", "None"),
        ("blur", {"variant": 3}, "variant", "3"),
        ("blur", {"rmu_layer": 2.5}, "rmu_layer", "2.5"),
        ("blur", {"rmu_layer": True}, "rmu_layer", "True"),
        ("graddiff", {"retain_weight": [1]}, "retain_weight", "[1]"),
    ],
)
def test_wrong_types_raise(method, hp, key, value):
    with pytest.raises(ConfigError) as exc:
        build_objective(method, hp)
    msg = str(exc.value)
    assert f"method.{key}" in msg
    assert value in msg


@pytest.mark.parametrize(
    ("method", "hp", "key", "value"),
    [
        ("blur", {"gamma": -1}, "gamma", "-1"),
        ("blur", {"variant": "sideways"}, "variant", "sideways"),
        ("blur", {"forget_loss": "xx"}, "forget_loss", "xx"),
        ("blur", {"retain_loss": "ga"}, "retain_loss", "ga"),
        ("blur", {"beta": 0}, "beta", "0"),
        ("blur", {"eps": -1e-3}, "eps", "-0.001"),
        ("npo", {"beta": -0.5}, "beta", "-0.5"),
        ("graddiff", {"forget_weight": 0}, "forget_weight", "0"),
        ("graddiff", {"retain_weight": -1}, "retain_weight", "-1"),
        ("graddiff", {"retain_loss": "rmu"}, "retain_loss", "rmu"),
        ("rmu", {"rmu_layer": -1}, "rmu_layer", "-1"),
    ],
)
def test_bad_values_raise(method, hp, key, value):
    with pytest.raises(ConfigError) as exc:
        build_objective(method, hp)
    msg = str(exc.value)
    assert f"method.{key}" in msg
    assert value in msg


def test_one_of_error_lists_choices():
    with pytest.raises(ConfigError) as exc:
        build_objective("blur", {"variant": "sideways"})
    assert "forget_priority" in str(exc.value) and "retain_priority" in str(exc.value)


def test_ints_accepted_for_floats():
    obj = build_objective("blur", {"gamma": 1, "beta": 2})
    assert obj.gamma == 1.0 and type(obj.gamma) is float
    assert obj.beta == 2.0 and type(obj.beta) is float
    assert type(build_objective("graddiff", {"retain_weight": 0}).retain_weight) is float


def test_gamma_zero_is_valid():
    assert build_objective("blur", {"gamma": 0}).gamma == 0.0


def test_infinite_gamma_rejected_by_config():
    with pytest.raises(ConfigError, match="gamma"):
        build_objective("blur", {"gamma": math.inf})


def test_pdu_hparams_reach_objective():
    obj = build_objective(
        "pdu",
        {
            "retain_loss_eps": 0.3,
            "dual_step_size": 5,
            "dual_init": 100,
            "dual_warmup_steps": 4,
            "forget_weight": 2,
            "forget_loss": "simnpo",
            "retain_loss": "kl",
            "beta": 2.5,
        },
    )
    assert (obj.combiner, obj.forget_loss, obj.retain_loss) == ("pdu", "simnpo", "kl")
    assert (obj.retain_loss_eps, obj.dual_step_size, obj.dual_init) == (0.3, 5.0, 100.0)
    assert (obj.dual_warmup_steps, obj.forget_weight, obj.beta) == (4, 2.0, 2.5)
    # the constraint needs the retain loss even when the multiplier starts (or stays) at 0
    at_zero = build_objective("pdu", {"dual_init": 0})
    assert at_zero.uses_forget and at_zero.uses_retain


@pytest.mark.parametrize(
    ("hp", "key", "value"),
    [
        ({"retain_loss_eps": -0.1}, "retain_loss_eps", "-0.1"),
        ({"retain_loss_eps": math.inf}, "retain_loss_eps", "inf"),
        ({"dual_step_size": 0}, "dual_step_size", "0"),
        ({"dual_step_size": math.inf}, "dual_step_size", "inf"),
        ({"dual_init": -1}, "dual_init", "-1"),
        ({"dual_warmup_steps": -2}, "dual_warmup_steps", "-2"),
        ({"dual_warmup_steps": 1.5}, "dual_warmup_steps", "1.5"),
        ({"forget_weight": 0}, "forget_weight", "0"),
        ({"forget_loss": "rmu"}, "forget_loss", "rmu"),
        ({"retain_loss": "rmu"}, "retain_loss", "rmu"),
        ({"gamma": 0.1}, "gamma", "gamma"),
    ],
)
def test_pdu_bad_hparams_name_key_and_value(hp, key, value):
    with pytest.raises(ConfigError) as exc:
        build_objective("pdu", hp)
    msg = str(exc.value)
    assert f"method.{key}" in msg and value in msg


# ------------------------------------------------------------------ Objective properties


@pytest.mark.parametrize(
    ("method", "hp", "expected"),
    [
        # (uses_forget, uses_retain, needs_reference_model, needs_reference_logprobs, forget_answers)
        ("blur", {"forget_loss": "npo", "retain_loss": "kl"}, (True, True, True, True, None)),
        ("blur", {"forget_loss": "npo", "retain_loss": "nll"}, (True, True, False, True, None)),
        ("blur", {"forget_loss": "ga", "retain_loss": "kl"}, (True, True, True, False, None)),
        ("blur", {"forget_loss": "idk", "retain_loss": "nll"}, (True, True, False, False, "idk")),
        ("graddiff", {"retain_weight": 0}, (True, False, False, False, None)),
        ("graddiff", {"retain_weight": 0, "retain_loss": "kl"}, (True, False, False, False, None)),
        ("graddiff", {"retain_loss": "kl"}, (True, True, True, False, None)),
        ("ga", {}, (True, False, False, False, None)),
        ("npo", {}, (True, True, False, True, None)),
        ("npo", {"retain_weight": 0, "retain_loss": "kl"}, (True, False, False, True, None)),
        ("simnpo", {}, (True, True, False, False, None)),
        ("idk", {}, (True, True, False, False, "idk")),
        ("rmu", {}, (True, True, True, False, None)),
        ("rmu", {"retain_weight": 0}, (True, False, False, False, None)),
        ("sft", {}, (False, True, False, False, None)),
    ],
)
def test_objective_properties(method, hp, expected):
    obj = build_objective(method, hp)
    got = (
        obj.uses_forget,
        obj.uses_retain,
        obj.needs_reference_model,
        obj.needs_reference_logprobs,
        obj.forget_answers,
    )
    assert got == expected


def test_rmu_layers_used():
    assert build_objective("rmu").rmu_layers_used
    assert build_objective("blur", {"forget_loss": "rmu", "retain_loss": "nll"}).rmu_layers_used
    assert not build_objective("blur").rmu_layers_used
    assert not build_objective("sft").rmu_layers_used


# ------------------------------------------------------------------ resolved_hparams


def test_resolved_hparams_fills_defaults():
    assert resolved_hparams("blur") == BLUR_DEFAULTS
    assert resolved_hparams("blur", {"gamma": 2}) == {**BLUR_DEFAULTS, "gamma": 2.0}
    assert resolved_hparams("graddiff", {"retain_weight": 0}) == {
        "forget_weight": 1.0,
        "retain_weight": 0.0,
        "retain_loss": "nll",
    }
    assert resolved_hparams("npo") == {
        "forget_weight": 1.0,
        "retain_weight": 1.0,
        "retain_loss": "nll",
        "beta": 0.1,
    }
    assert resolved_hparams("simnpo") == {
        "forget_weight": 1.0,
        "retain_weight": 1.0,
        "retain_loss": "nll",
        "beta": 2.5,
        "delta": 0.0,
    }
    assert resolved_hparams("rmu") == {
        "rmu_layer": 7,
        "steering_coeff": 6.5,
        "retain_weight": 1200.0,
        "forget_weight": 1.0,
        "rmu_seed": 0,
    }
    assert resolved_hparams("ga") == {"forget_weight": 1.0}
    assert resolved_hparams("sft") == {}
    # the rivals: open-unlearning's defaults (configs/trainer/*.yaml at d3d7cf9)
    weighted = {"forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"}
    assert resolved_hparams("dpo") == {**weighted, "beta": 0.1, "preferred": "idk"}
    assert resolved_hparams("undial") == {**weighted, "retain_weight": 0.0, "beta": 10.0}
    assert resolved_hparams("wga") == {**weighted, "beta": 1.0}
    assert resolved_hparams("satimp") == {
        **weighted,
        "forget_weight": 0.1,
        "beta1": 5.0,
        "beta2": 1.0,
    }
    assert resolved_hparams("ceu") == {
        **weighted,
        "retain_weight": 0.0,
        "ignore_first_n_answer_tokens": 1,
    }


def test_resolved_hparams_validates():
    with pytest.raises(ConfigError, match="gama"):
        resolved_hparams("blur", {"gama": 1})
    with pytest.raises(ConfigError, match="nope"):
        resolved_hparams("nope")


# ====================================================================== run config


@pytest.fixture
def files(tmp_path):
    forget = tmp_path / "forget.jsonl"
    retain = tmp_path / "retain.jsonl"
    forget.write_text('{"question": "q1", "answer": "a1"}\n')
    retain.write_text('{"question": "q2", "answer": "a2"}\n')
    return {"forget": str(forget), "retain": str(retain), "out": str(tmp_path / "out")}


@pytest.fixture
def minimal(files):
    return {
        "model": "some/model",
        "output_dir": files["out"],
        "data": {"forget": files["forget"], "retain": files["retain"]},
        "train": {"max_steps": 3},
    }


def test_minimal_config_parses(minimal, files):
    cfg = parse_run_config(minimal)
    assert cfg.model == "some/model"
    assert cfg.output_dir == files["out"]
    assert cfg.method_name == "blur"
    assert cfg.data.forget == files["forget"] and cfg.data.retain == files["retain"]
    assert cfg.data.format == "qa" and cfg.data.max_length == 256
    assert cfg.train.max_steps == 3 and cfg.train.epochs is None
    assert cfg.train.lr == 1e-5 and cfg.train.micro_batch_size == 8 and cfg.train.grad_accum == 1
    assert cfg.objective() == build_objective("blur")


def test_method_settings_parse(minimal):
    cfg = parse_run_config(
        {**minimal, "method": {"name": "blur", "gamma": 0.5, "retain_loss": "kl"}}
    )
    obj = cfg.objective()
    assert (obj.gamma, obj.retain_loss) == (0.5, "kl")


def test_epochs_instead_of_max_steps(minimal):
    cfg = parse_run_config({**minimal, "train": {"epochs": 2}})
    assert cfg.train.epochs == 2.0 and cfg.train.max_steps is None


@pytest.mark.parametrize(
    ("patch", "dotted"),
    [
        ({"modle": "x"}, "modle"),
        ({"data": {"forgt": "x"}}, "data.forgt"),
        ({"train": {"max_steps": 3, "lerning_rate": 1}}, "train.lerning_rate"),
    ],
)
def test_misspelled_keys_name_dotted_path(minimal, patch, dotted):
    cfg = {**minimal, **patch}
    if "data" in patch:
        cfg["data"] = {**minimal["data"], **patch["data"]}
    with pytest.raises(ConfigError) as exc:
        parse_run_config(cfg)
    assert dotted in str(exc.value)


def test_misspelled_train_key_lists_valid_keys(minimal):
    with pytest.raises(ConfigError) as exc:
        parse_run_config({**minimal, "train": {"lerning_rate": 1}})
    msg = str(exc.value)
    assert "train.lerning_rate" in msg
    assert "'lr'" in msg and "'max_steps'" in msg


def test_misspelled_method_hparam(minimal):
    with pytest.raises(ConfigError, match=r"method\.gama"):
        parse_run_config({**minimal, "method": {"name": "blur", "gama": 0.1}})


def test_error_names_source(minimal):
    with pytest.raises(ConfigError, match=r"^run\.yaml: "):
        parse_run_config({**minimal, "modle": 1}, source="run.yaml")


@pytest.mark.parametrize(
    ("train", "key"),
    [
        ({"max_steps": 0}, "train.max_steps"),
        ({"max_steps": 3, "lr": 0}, "train.lr"),
        ({"max_steps": 3, "lr": "fast"}, "train.lr"),
        ({"max_steps": 3, "schedule": "step"}, "train.schedule"),
        ({"max_steps": 3, "grad_accum": 1.5}, "train.grad_accum"),
        ({"max_steps": 3, "betas": [0.9, 1.0]}, "train.betas"),
    ],
)
def test_bad_train_values(minimal, train, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_run_config({**minimal, "train": train})


def test_missing_train_section_raises(minimal):
    cfg = {k: v for k, v in minimal.items() if k != "train"}
    with pytest.raises(ConfigError, match="max_steps and epochs"):
        parse_run_config(cfg)


def test_both_max_steps_and_epochs_raise(minimal):
    with pytest.raises(ConfigError, match="exactly one of max_steps and epochs"):
        parse_run_config({**minimal, "train": {"max_steps": 3, "epochs": 1}})


def test_missing_required_model(minimal):
    cfg = {k: v for k, v in minimal.items() if k != "model"}
    with pytest.raises(ConfigError, match="missing required key model"):
        parse_run_config(cfg)


def test_missing_data_file_named(minimal, tmp_path):
    missing = str(tmp_path / "nope" / "forget.jsonl")
    with pytest.raises(ConfigError) as exc:
        parse_run_config({**minimal, "data": {**minimal["data"], "forget": missing}})
    assert missing in str(exc.value)
    assert "data.forget" in str(exc.value)


def test_method_needing_forget_without_forget_set(minimal):
    data = {"retain": minimal["data"]["retain"]}
    with pytest.raises(ConfigError, match=r"'ga' needs data\.forget"):
        parse_run_config({**minimal, "method": {"name": "ga"}, "data": data})
    with pytest.raises(ConfigError, match=r"needs data\.forget"):
        parse_run_config({**minimal, "data": data})  # blur (default)


def test_method_needing_retain_without_retain_set(minimal):
    with pytest.raises(ConfigError, match=r"needs data\.retain"):
        parse_run_config({**minimal, "data": {"forget": minimal["data"]["forget"]}})


def test_sets_not_needed_may_be_absent(minimal):
    # sft uses only the retain set; ga only the forget set; graddiff with retain_weight 0 too.
    sft = parse_run_config(
        {**minimal, "method": {"name": "sft"}, "data": {"retain": minimal["data"]["retain"]}}
    )
    assert sft.data.forget is None and sft.data.files("retain") == [minimal["data"]["retain"]]
    assert not sft.objective().uses_forget and sft.objective().uses_retain
    ga = parse_run_config(
        {**minimal, "method": {"name": "ga"}, "data": {"forget": minimal["data"]["forget"]}}
    )
    assert ga.data.retain is None and ga.data.files("retain") == []
    assert ga.objective().uses_forget and not ga.objective().uses_retain
    graddiff = parse_run_config(
        {
            **minimal,
            "method": {"name": "graddiff", "retain_weight": 0},
            "data": {"forget": minimal["data"]["forget"]},
        }
    )
    assert graddiff.objective().retain_weight == 0.0 and not graddiff.objective().uses_retain


def test_method_without_name_raises(minimal):
    with pytest.raises(ConfigError, match=r"method\.name is required"):
        parse_run_config({**minimal, "method": {"gamma": 0.1}})


def test_unknown_method_in_run_config(minimal):
    with pytest.raises(ConfigError, match="blurr"):
        parse_run_config({**minimal, "method": {"name": "blurr"}})


def test_resolved_includes_every_default(minimal):
    cfg = parse_run_config({**minimal, "method": {"name": "blur", "gamma": 0.5}})
    out = cfg.resolved()
    assert out["method"] == {"name": "blur", **BLUR_DEFAULTS, "gamma": 0.5}
    assert out["model"] == "some/model"
    assert out["tokenizer"] is None
    assert out["train"]["max_steps"] == 3
    assert out["train"]["lr"] == 1e-5
    assert out["train"]["schedule"] == "constant"
    assert out["train"]["betas"] == [0.9, 0.999]
    assert out["data"]["prompt_template"] == "Question: {question}\nAnswer:"
    assert out["data"]["forget"] == minimal["data"]["forget"]
    # round trip: the resolved config is itself a valid run config giving the same objective
    assert parse_run_config(yaml.safe_load(yaml.safe_dump(out))).objective() == cfg.objective()


def test_load_run_config_yaml_and_overrides(minimal, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**minimal, "method": {"name": "blur", "gamma": 0.2}}))
    cfg = load_run_config(path)
    assert cfg.train.lr == 1e-5 and cfg.objective().gamma == 0.2

    cfg = load_run_config(
        path,
        {"train.lr": 0.5, "method.gamma": 0.3, "train.micro_batch_size": 2, "tokenizer": "tok"},
    )
    assert cfg.train.lr == 0.5
    assert cfg.train.micro_batch_size == 2
    assert cfg.objective().gamma == 0.3
    assert cfg.tokenizer == "tok"
    assert cfg.train.max_steps == 3  # untouched siblings survive


def test_load_run_config_override_creates_section(minimal, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in minimal.items() if k != "train"}))
    cfg = load_run_config(path, {"train.max_steps": 7})
    assert cfg.train.max_steps == 7


def test_load_run_config_bad_override_named(minimal, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal))
    with pytest.raises(ConfigError) as exc:
        load_run_config(path, {"train.lrr": 0.5})
    assert "train.lrr" in str(exc.value)
    assert str(path) in str(exc.value)


def test_load_run_config_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml"):
        load_run_config(path)


def test_load_run_config_non_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(path)


def test_override_into_empty_section_fills_it(minimal, tmp_path):
    path = tmp_path / "run.yaml"
    text = yaml.safe_dump({k: v for k, v in minimal.items() if k != "train"}) + "train:\n"
    path.write_text(text)
    assert load_run_config(path, {"train.max_steps": 7}).train.max_steps == 7


def test_override_through_a_scalar_is_config_error(minimal, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal))
    with pytest.raises(ConfigError, match="model"):
        load_run_config(path, {"model.x": 7})


def test_data_prompt_format_is_a_named_format(minimal):
    from blur_core.data.qa import prompt_format

    cfg = parse_run_config({**minimal, "data": {**minimal["data"], "prompt_format": "tofu-llama2"}})
    assert cfg.data.qa_format() == prompt_format("tofu-llama2")
    plain = parse_run_config(minimal).data.qa_format()
    assert (
        plain.prompt_template == "Question: {question}\nAnswer:" and plain.use_chat_template is None
    )
    keys = parse_run_config(
        {**minimal, "data": {**minimal["data"], "question_key": "q", "prompt_format": "chat"}}
    ).data.qa_format()
    assert keys.question_key == "q" and keys.use_chat_template is True


@pytest.mark.parametrize(
    "data, match",
    [
        ({"prompt_format": "llama9"}, r"data\.prompt_format = 'llama9': must be one of \["),
        (
            {"prompt_format": "chat", "prompt_template": "Q: {question}"},
            r"data\.prompt_format = 'chat' and data\.prompt_template are both set",
        ),
        (
            {"prompt_format": "plain", "answer_prefix": ""},
            r"data\.prompt_format = 'plain' and data\.answer_prefix are both set",
        ),
    ],
)
def test_data_prompt_format_errors(minimal, data, match):
    with pytest.raises(ConfigError, match=match):
        parse_run_config({**minimal, "data": {**minimal["data"], **data}})
