"""DPO's second answer per forget example: refusal files, alternate answers, collation, the
run config's data keys and the forget dataset the loop builds from them."""

from __future__ import annotations

import json

import pytest

from blur_core.config import ConfigError
from blur_core.data import (
    IDK_ANSWERS,
    alternate_answers,
    load_records,
    load_refusals,
    pad_collate,
    refusal_answer,
)
from blur_core.data.collate import IGNORE_INDEX
from blur_core.methods import build_objective
from blur_core.models import load_tokenizer
from blur_core.train.config import parse_run_config
from blur_core.train.loop import build_dataset


def test_load_refusals_reads_plain_and_json_string_lines(tmp_path):
    path = tmp_path / "idk.jsonl"
    path.write_text('I have no idea.\n\n  "I can\'t say."  \nNot "quoted" text\n')
    assert load_refusals(path) == ("I have no idea.", "I can't say.", 'Not "quoted" text')
    path.write_text("\n \n")
    with pytest.raises(ValueError, match=r"idk.jsonl.*holds no refusal"):
        load_refusals(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_refusals(tmp_path / "nope.jsonl")


def test_refusal_answer_cycles_deterministically():
    pick = refusal_answer(("a", "b", "c"))
    assert [pick(i, {}) for i in range(5)] == ["a", "b", "c", "a", "b"]
    with pytest.raises(ValueError, match="at least one refusal"):
        refusal_answer(())


def test_alternate_answers_from_records_or_an_aligned_file():
    forget = [{"question": "q0", "answer": "a0"}, {"question": "q1", "answer": "a1"}]
    alts = [{"question": "q0", "alternate": "x0"}, {"question": "q1", "alternate": "x1"}]
    assert alternate_answers(forget, alternates=alts) == ["x0", "x1"]
    assert alternate_answers([{**r, "alt": r["answer"] + "!"} for r in forget], "alt") == [
        "a0!",
        "a1!",
    ]
    with pytest.raises(ValueError, match=r"alt.json: record 1 has no alternate answer field 'alt'"):
        alternate_answers(forget, "alt", [{"alt": "x"}, {}], alt_source="alt.json")
    with pytest.raises(ValueError, match=r"holds 1 records but forget set holds 2"):
        alternate_answers(forget, alternates=alts[:1])
    with pytest.raises(ValueError, match=r"record 1 is for question 'q0'.*asks 'q1'"):
        alternate_answers(forget, alternates=[alts[0], alts[0]])
    with pytest.raises(ValueError, match=r"forget set: record 0 has no alternate answer field"):
        alternate_answers(forget)


def test_pad_collate_pads_the_second_answer():
    items = [
        {
            "input_ids": [5, 6, 7],
            "labels": [-100, 6, 7],
            "alt_input_ids": [5, 8],
            "alt_labels": [-100, 8],
        },
        {
            "input_ids": [5],
            "labels": [5],
            "alt_input_ids": [5, 9, 9, 9],
            "alt_labels": [-100, 9, 9, 9],
        },
    ]
    batch = pad_collate(items, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["alt_input_ids"].tolist() == [[5, 8, 0, 0], [5, 9, 9, 9]]
    assert batch["alt_labels"].tolist() == [
        [IGNORE_INDEX, 8, IGNORE_INDEX, IGNORE_INDEX],
        [IGNORE_INDEX, 9, 9, 9],
    ]
    assert batch["alt_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["index"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"items \[1\] have no alt_input_ids"):
        pad_collate([items[0], {"input_ids": [1], "labels": [1]}], pad_token_id=0)
    bad = {**items[0], "alt_labels": [1]}
    with pytest.raises(
        ValueError, match=r"item 0: alt_input_ids has 2 tokens but alt_labels has 1"
    ):
        pad_collate([bad], pad_token_id=0)


def _cfg(embedded, tmp_path, method, **data):
    return parse_run_config(
        {
            "model": str(embedded["base_model"]),
            "output_dir": str(tmp_path / "run"),
            "method": method,
            "data": {
                "forget": str(embedded["forget"]),
                "retain": str(embedded["retain"]),
                "max_length": 64,
                **data,
            },
            "train": {"max_steps": 1},
        }
    )


def _answer_text(tokenizer, ids, labels) -> str:
    scored = [int(t) for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    return tokenizer.decode(scored, skip_special_tokens=True).strip()


def test_dpo_forget_set_carries_refusals_from_the_idk_file(embedded, tmp_path):
    idk = tmp_path / "idk.jsonl"
    idk.write_text("I have no idea.\nI cannot say.\n")
    cfg = _cfg(embedded, tmp_path, {"name": "dpo", "preferred": "idk"}, idk_file=str(idk))
    tok = load_tokenizer(cfg.model)
    ds = build_dataset(cfg, "forget", tok, cfg.objective())
    records = load_records(embedded["forget"])
    for i in range(3):
        item = ds[i]
        assert (
            _answer_text(tok, item["alt_input_ids"], item["alt_labels"])
            == (
                "I have no idea.",
                "I cannot say.",
            )[i % 2]
        )
        # the rejected answer stays the forget answer
        assert _answer_text(tok, item["input_ids"], item["labels"]) == records[i]["answer"]
    # without idk_file: the built-in refusals; the idk method reads the same file
    default = build_dataset(
        _cfg(embedded, tmp_path, {"name": "dpo"}), "forget", tok, cfg.objective()
    )
    assert default[1]["alt_input_ids"].shape[0] > 0
    idk_cfg = _cfg(embedded, tmp_path, {"name": "idk"}, idk_file=str(idk))
    item = build_dataset(idk_cfg, "forget", tok, idk_cfg.objective())[1]
    assert "alt_input_ids" not in item
    assert _answer_text(tok, item["input_ids"], item["labels"]) == "I cannot say."
    idk.write_text("\n")
    with pytest.raises(ValueError, match=r"data.idk_file: refusal file .*idk.jsonl.* no refusal"):
        build_dataset(idk_cfg, "forget", tok, idk_cfg.objective())
    plain = _cfg(embedded, tmp_path, {"name": "idk"})
    item = build_dataset(plain, "forget", tok, plain.objective())[1]
    assert _answer_text(tok, item["input_ids"], item["labels"]) == IDK_ANSWERS[1]


def test_dpo_alternate_answers_and_their_errors(embedded, tmp_path):
    records = load_records(embedded["forget"])
    alt = tmp_path / "alt.jsonl"
    alt.write_text(
        "".join(
            json.dumps({"question": r["question"], "other": r["perturbed_answer"][1]}) + "\n"
            for r in records
        )
    )
    method = {"name": "dpo", "preferred": "alternate"}
    cfg = _cfg(embedded, tmp_path, method, alternate_file=str(alt), alternate_key="other")
    tok = load_tokenizer(cfg.model)
    item = build_dataset(cfg, "forget", tok, cfg.objective())[2]
    assert (
        _answer_text(tok, item["alt_input_ids"], item["alt_labels"])
        == (records[2]["perturbed_answer"][1])
    )
    missing = _cfg(embedded, tmp_path, method)  # the forget records have no 'alternate' field
    with pytest.raises(ValueError, match=r"data.forget: .*forget.jsonl: record 0 has no alternate"):
        build_dataset(missing, "forget", tok, missing.objective())


def test_run_config_names_missing_preferred_answer_files_and_text_data(embedded, tmp_path):
    with pytest.raises(ConfigError, match=r"data.idk_file: file not found: .*no-idk.jsonl"):
        _cfg(embedded, tmp_path, {"name": "dpo"}, idk_file=str(tmp_path / "no-idk.jsonl"))
    with pytest.raises(ConfigError, match=r"data.alternate_file: file not found: .*none.json"):
        _cfg(embedded, tmp_path, {"name": "dpo"}, alternate_file=str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match=r"'dpo' \(forget loss dpo\).*format 'text'"):
        _cfg(embedded, tmp_path, {"name": "dpo"}, format="text")
    with pytest.raises(ConfigError, match=r"preferred.*'refusal'"):
        _cfg(embedded, tmp_path, {"name": "dpo", "preferred": "refusal"})


@pytest.mark.parametrize(
    "name, hparams, field, value",
    [
        ("undial", {"beta": -1.0}, "beta", "-1.0"),
        ("wga", {"beta": -0.5}, "beta", "-0.5"),
        ("satimp", {"beta2": -2.0}, "beta2", "-2.0"),
        ("ceu", {"ignore_first_n_answer_tokens": -1}, "ignore_first_n_answer_tokens", "-1"),
        ("blur", {"forget_loss": "wga", "wga_beta": -3.0}, "wga_beta", "-3.0"),
        ("dpo", {"beta": 0.0}, "beta", "0.0"),
    ],
)
def test_rival_hyperparameters_are_validated(name, hparams, field, value):
    with pytest.raises(ConfigError, match=rf"{field}.*{value}"):
        build_objective(name, hparams)


def test_rival_objectives_resolve_to_their_losses_and_references():
    dpo = build_objective("dpo", {"beta": 0.2, "preferred": "alternate"})
    assert (dpo.forget_loss, dpo.beta, dpo.preferred_answers) == ("dpo", 0.2, "alternate")
    assert dpo.needs_reference_logprobs and not dpo.needs_reference_model
    undial = build_objective("undial", {"beta": 3.0})
    assert undial.undial_beta == 3.0 and undial.needs_reference_model and not undial.uses_retain
    sat = build_objective("satimp", {"beta1": 2.0})
    assert (sat.satimp_beta1, sat.satimp_beta2, sat.forget_weight) == (2.0, 1.0, 0.1)
    ceu = build_objective("ceu", {"retain_weight": 1.0, "ignore_first_n_answer_tokens": 0})
    assert ceu.ceu_ignore_first == 0 and ceu.uses_retain
    blur = build_objective("blur", {"forget_loss": "undial", "undial_beta": 2.0})
    assert blur.undial_beta == 2.0 and blur.needs_reference_model
    assert build_objective("wga").wga_beta == 1.0
