"""Unit tests for the TOFU hub layout (blur_core.data.tofu), the embedded benchmark
written in it (write_embedded_tofu), the real TOFU copy under ../shared/data, and the
prepare-data CLI. No downloads: the hub path is tested offline and with a stub."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from blur_core.cli import main
from blur_core.data import load_records
from blur_core.data.embedded import (
    UTILITY_PERTURBED,
    embedded_forget_people,
    make_real_authors,
    make_world_facts,
    write_embedded_tofu,
)
from blur_core.data.tofu import (
    TOFU_ALL_FILES,
    TOFU_SPLITS,
    BenchmarkUnavailableError,
    link_tofu,
    resolve_benchmark_root,
    subset_tofu,
    tofu_file_names,
    tofu_files,
    validate_tofu,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("BLUR_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_TOFU = SHARED_DATA / "tofu"

EXPECTED_FILES = {
    "full",
    "forget01",
    "forget05",
    "forget10",
    "retain99",
    "retain95",
    "retain90",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors_perturbed",
    "world_facts_perturbed",
    "pretrain",
    "holdout01",
    "holdout05",
    "holdout10",
    *(
        f"{split}_paraphrased"
        for split in (
            "full",
            "forget01",
            "forget05",
            "forget10",
            "retain99",
            "retain95",
            "retain90",
        )
    ),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    write_embedded_tofu(out, n_people=100, questions_per_person=5, seed=0)
    return out


def _people(records):
    return {r["person"] for r in records}


def _load(bench, stem):
    return load_records(bench / f"{stem}.json")


# --------------------------------------------------------------------------- embedded layout


def test_embedded_files_and_counts(bench):
    assert {p.stem for p in bench.iterdir()} == EXPECTED_FILES | {"preferred"}
    assert all(name in {p.name for p in bench.iterdir()} for name in TOFU_ALL_FILES)
    full = _load(bench, "full")
    assert len(full) == 500 and len(_people(full)) == 100
    for split, n_people in (("forget01", 1), ("forget05", 5), ("forget10", 10)):
        forget = _load(bench, split)
        assert len(_people(forget)) == n_people and len(forget) == 5 * n_people
        assert len(_load(bench, TOFU_SPLITS[split])) == 500 - 5 * n_people
    assert len(_load(bench, "retain_perturbed")) == 100
    assert len(_load(bench, "real_authors_perturbed")) == 40
    assert len(_load(bench, "world_facts_perturbed")) == 40
    assert len(_load(bench, "pretrain")) == 80
    for split in ("01", "05", "10"):
        holdout, forget = _load(bench, f"holdout{split}"), _load(bench, f"forget{split}")
        assert len(holdout) == len(forget) and _people(holdout).isdisjoint(_people(full))
        assert {r["name"] for r in holdout}.isdisjoint({r["name"] for r in full})


def test_embedded_holdout_people_leave_the_other_files_unchanged(tmp_path):
    from blur_core.data.embedded import make_people, make_qa

    write_embedded_tofu(tmp_path, n_people=30, questions_per_person=4, seed=2)
    qa = make_qa(make_people(30, seed=2), 4, seed=2)  # the benchmark without holdout people
    assert [(r["question"], r["answer"]) for r in _load(tmp_path, "full")] == [
        (r["question"], r["answer"]) for r in qa
    ]


def test_embedded_preferred_answers_for_dpo(bench, tmp_path):
    from blur_core.data import IDK_ANSWERS, load_refusals
    from blur_core.data.embedded import MORE_REFUSALS
    from blur_core.tiny import benchmark_texts, build_tokenizer

    refusals = load_refusals(bench / "preferred" / "idk.jsonl")
    assert refusals == (*IDK_ANSWERS, *MORE_REFUSALS) and len(set(refusals)) == 20
    by_question = {}
    for split in TOFU_SPLITS:
        forget = _load(bench, split)
        alts = load_records(bench / "preferred" / f"{split}_alternate.json")
        assert [r["question"] for r in alts] == [r["question"] for r in forget]
        for alt, rec, pert in zip(alts, forget, _load(bench, f"{split}_perturbed")):
            # the same sentence with another value: not the answer, no perturbed value
            assert alt["alternate"] != rec["answer"]
            assert alt["alternate"].split()[:2] == rec["answer"].split()[:2]
            wrong = [
                w for w in pert["perturbed_answer"] if w.split()[-1] == alt["alternate"].split()[-1]
            ]
            assert not wrong, (alt, pert["perturbed_answer"])
            assert by_question.setdefault(rec["question"], alt["alternate"]) == alt["alternate"]
        # the second wording (trained on too) has its own file, aligned with it, same alternates
        para = _load(bench, f"{split}_paraphrased")
        para_alts = load_records(bench / "preferred" / f"{split}_paraphrased_alternate.json")
        assert [r["question"] for r in para_alts] == [r["question"] for r in para]
        assert [a["alternate"] for a in para_alts] == [a["alternate"] for a in alts]
    # the tokenizer is trained on the TOFU files only (preferred/ is out of its reach), and
    # still knows every word of the refusals and alternates
    copy = tmp_path / "no_preferred"
    shutil.copytree(bench, copy, ignore=shutil.ignore_patterns("preferred"))
    assert benchmark_texts(copy) == benchmark_texts(bench)
    prompt_words = "Question: \nAnswer:"
    tok = build_tokenizer([*benchmark_texts(bench), prompt_words, *IDK_ANSWERS])
    texts = [*refusals, *by_question.values()]
    unk = [t for t in texts if tok.unk_token_id in tok(t, add_special_tokens=False)["input_ids"]]
    assert not unk


def test_embedded_files_are_json_lines(bench):
    lines = (bench / "full.json").read_text().splitlines()
    assert len(lines) == 500
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_embedded_deterministic_byte_identical(bench, tmp_path):
    paths = write_embedded_tofu(tmp_path / "again", n_people=100, questions_per_person=5, seed=0)
    assert set(paths) == EXPECTED_FILES
    for stem, path in paths.items():
        assert path.read_bytes() == (bench / f"{stem}.json").read_bytes(), stem
    other = write_embedded_tofu(tmp_path / "seed1", n_people=100, questions_per_person=5, seed=1)
    assert other["full"].read_bytes() != paths["full"].read_bytes()
    assert other["forget10"].read_bytes() != paths["forget10"].read_bytes()


def test_forget_splits_nested_by_person(bench):
    f01, f05, f10 = (_people(_load(bench, s)) for s in ("forget01", "forget05", "forget10"))
    assert f01 < f05 < f10
    full = _load(bench, "full")
    by_person = {}
    for r in full:
        by_person.setdefault(r["person"], []).append(r)
    for split in TOFU_SPLITS:
        forget = _load(bench, split)
        # every record of a forgotten person is in the split, in the order of full.json
        assert forget == [r for r in full if r["person"] in _people(forget)]
        assert all(len(by_person[p]) == 5 for p in _people(forget))


def test_retain_is_full_minus_forget(bench):
    full = _load(bench, "full")
    for forget_split, retain_split in TOFU_SPLITS.items():
        forget, retain = _load(bench, forget_split), _load(bench, retain_split)
        assert not _people(forget) & _people(retain)
        assert retain == [r for r in full if r["person"] not in _people(forget)]


def test_paraphrased_files_pair_each_training_record_with_its_second_wording(bench):
    """<split>_paraphrased.json: one record per record of <split>.json, same order and
    person, the paraphrased question -> the paraphrased answer of the perturbed files."""
    perturbed = {
        r["question"]: r
        for split in TOFU_SPLITS
        for r in _load(bench, f"{split}_perturbed") + _load(bench, "retain_perturbed")
    }
    for split in ("full", *TOFU_SPLITS, *TOFU_SPLITS.values()):
        plain, para = _load(bench, split), _load(bench, f"{split}_paraphrased")
        assert len(para) == len(plain)
        for a, b in zip(plain, para):
            assert (a["person"], a["name"], a["attribute"]) == (
                b["person"],
                b["name"],
                b["attribute"],
            )
            assert b["question"] != a["question"] and a["name"] in b["question"]
            assert b["answer"] != a["answer"] and a["name"] in b["answer"]
            if a["question"] in perturbed:  # the wording the truth ratio scores
                assert b["answer"] == perturbed[a["question"]]["paraphrased_answer"]
    # no question of the training data has two answers
    questions = [r["question"] for r in _load(bench, "full") + _load(bench, "full_paraphrased")]
    assert len(set(questions)) == len(questions)


def test_retain_perturbed_disjoint_from_every_forget_split(bench):
    rp = _load(bench, "retain_perturbed")
    retain90 = _load(bench, "retain90")
    assert _people(rp) <= _people(retain90)
    assert len(_people(rp)) == 20
    for split in TOFU_SPLITS:
        assert not _people(rp) & _people(_load(bench, split))
        assert not {r["question"] for r in rp} & {r["question"] for r in _load(bench, split)}


def test_perturbed_files_schema(bench):
    for split in TOFU_SPLITS:
        plain, perturbed = _load(bench, split), _load(bench, f"{split}_perturbed")
        assert [r["question"] for r in plain] == [r["question"] for r in perturbed]
        assert [r["answer"] for r in plain] == [r["answer"] for r in perturbed]
    for stem in ("forget10_perturbed", "retain_perturbed"):
        for r in _load(bench, stem):
            assert list(r)[:4] == ["question", "answer", "paraphrased_answer", "perturbed_answer"]
            assert len(r["perturbed_answer"]) >= 3 and len(set(r["perturbed_answer"])) == 3
            assert r["answer"] not in r["perturbed_answer"]
            assert r["paraphrased_answer"] != r["answer"]
    for r in _load(bench, "full"):
        assert isinstance(r["question"], str) and isinstance(r["answer"], str)
        assert "perturbed_answer" not in r


def test_utility_sets(bench):
    ra, wf = _load(bench, "real_authors_perturbed"), _load(bench, "world_facts_perturbed")
    assert ra == make_real_authors(0) and wf == make_world_facts(0)
    for records in (ra, wf):
        assert len({r["question"] for r in records}) == len(records) == 40
        for r in records:
            assert set(r) == {"question", "answer", "perturbed_answer"}
            assert len(set(r["perturbed_answer"])) == UTILITY_PERTURBED == 3
            assert r["answer"] not in r["perturbed_answer"]
    assert {"question": "What colour is grass?", "answer": "green"} in [
        {"question": r["question"], "answer": r["answer"]} for r in wf
    ]
    # pretrain.json is exactly the utility QA; none of it is about the fictitious people
    pretrain = _load(bench, "pretrain")
    assert pretrain == [{"question": r["question"], "answer": r["answer"]} for r in ra + wf]
    names = {r["name"] for r in _load(bench, "full")}
    assert not any(name in r["question"] or name in r["answer"] for r in pretrain for name in names)
    assert make_real_authors(1) != ra


def test_embedded_validates_as_tofu(bench):
    for split in TOFU_SPLITS:
        counts = validate_tofu(bench, split)
        assert counts["full"] == 500 and counts["retain_perturbed"] == 100
        assert counts["real_authors"] == counts["world_facts"] == 40


def test_embedded_small_and_options(tmp_path):
    paths = write_embedded_tofu(tmp_path, n_people=3, questions_per_person=2, n_perturbed=5, seed=4)
    for split in ("forget01", "forget05", "forget10"):
        assert len(_people(load_records(paths[split]))) == 1  # max(1, round(pct * 3))
    assert all(len(r["perturbed_answer"]) == 5 for r in load_records(paths["forget10_perturbed"]))
    # a one-record-per-person retain_perturbed still reads back (JSON Lines in .json)
    assert len(load_records(paths["retain_perturbed"])) == 4
    for split in TOFU_SPLITS:
        validate_tofu(tmp_path, split)


def test_embedded_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_people"):
        write_embedded_tofu(tmp_path, n_people=1)
    with pytest.raises(ValueError, match="n_perturbed"):
        write_embedded_tofu(tmp_path, n_people=10, n_perturbed=0)
    with pytest.raises(ValueError, match="questions_per_person"):
        write_embedded_tofu(tmp_path, n_people=10, questions_per_person=8)


def test_forget_people_counts():
    for n in (2, 10, 37, 100, 250):
        people = embedded_forget_people(n, seed=3)
        sizes = [len(people[s]) for s in ("forget01", "forget05", "forget10")]
        assert sizes == [max(1, round(f * n)) for f in (0.01, 0.05, 0.10)]
        assert set(people["forget01"]) <= set(people["forget05"]) <= set(people["forget10"])
        assert len(people["forget10"]) < n


# --------------------------------------------------------------------------- layout + validation


def test_tofu_file_names():
    names = tofu_file_names("forget05")
    assert names == {
        "full": "full.json",
        "forget": "forget05.json",
        "retain": "retain95.json",
        "forget_perturbed": "forget05_perturbed.json",
        "retain_perturbed": "retain_perturbed.json",
        "real_authors": "real_authors_perturbed.json",
        "world_facts": "world_facts_perturbed.json",
    }
    with pytest.raises(ValueError, match="forget20"):
        tofu_file_names("forget20")


def test_tofu_files_missing_names_file_and_root(bench, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bench, copy)
    assert tofu_files(copy, "forget10")["retain"] == copy / "retain90.json"
    (copy / "retain90.json").unlink()
    tofu_files(copy, "forget01")  # other splits are unaffected
    with pytest.raises(FileNotFoundError) as err:
        tofu_files(copy, "forget10")
    assert "retain90.json" in str(err.value) and str(copy) in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tofu_files(tmp_path / "nowhere", "forget10")


def _rewrite(path: Path, index: int, change) -> None:
    records = load_records(path)
    change(records[index])
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    "stem, index, change, expected",
    [
        (
            "forget05",
            3,
            lambda r: r.pop("answer"),
            r"forget05\.json: record 3 is missing field 'answer'",
        ),
        ("full", 7, lambda r: r.update(question=5), r"full\.json: record 7: field 'question'"),
        (
            "forget05_perturbed",
            2,
            lambda r: r.pop("paraphrased_answer"),
            r"forget05_perturbed\.json: record 2 is missing field 'paraphrased_answer'",
        ),
        (
            "retain_perturbed",
            9,
            lambda r: r.update(perturbed_answer=[]),
            r"retain_perturbed\.json: record 9: field 'perturbed_answer'",
        ),
        (
            "real_authors_perturbed",
            1,
            lambda r: r.update(perturbed_answer="Paris"),
            r"real_authors_perturbed\.json: record 1: field 'perturbed_answer'",
        ),
        (
            "world_facts_perturbed",
            0,
            lambda r: r.update(perturbed_answer=["a", 3]),
            r"world_facts_perturbed\.json: record 0: field 'perturbed_answer'",
        ),
    ],
)
def test_validate_names_file_record_field(bench, tmp_path, stem, index, change, expected):
    shutil.copytree(bench, tmp_path / "b")
    _rewrite(tmp_path / "b" / f"{stem}.json", index, change)
    with pytest.raises(ValueError, match=expected):
        validate_tofu(tmp_path / "b", "forget05")


def test_validate_consistency_checks(bench, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bench, b)
    retain = load_records(b / "retain95.json")
    (b / "retain95.json").write_text("".join(json.dumps(r) + "\n" for r in retain[:-1]))
    with pytest.raises(ValueError, match=r"full\.json"):
        validate_tofu(b, "forget05")
    shutil.copy(bench / "forget10_perturbed.json", b / "forget01_perturbed.json")
    with pytest.raises(ValueError, match=r"forget01_perturbed\.json: questions differ"):
        validate_tofu(b, "forget01")
    forget = load_records(bench / "forget10_perturbed.json")
    (b / "retain_perturbed.json").write_text(json.dumps(forget[0]) + "\n")
    with pytest.raises(
        ValueError, match=r"retain_perturbed\.json: record 0 asks a question of the forget"
    ):
        validate_tofu(b, "forget10")


def test_link_tofu_symlinks_and_copies(bench, tmp_path):
    linked = link_tofu(bench, tmp_path / "linked")
    # pretrain.json is not TOFU's; the optional holdout files are linked when present
    assert set(linked) == {Path(n).stem for n in TOFU_ALL_FILES} | {
        "holdout01",
        "holdout05",
        "holdout10",
    }
    assert all(
        p.is_symlink() and p.resolve() == (bench / p.name).resolve() for p in linked.values()
    )
    link_tofu(bench, tmp_path / "linked")  # idempotent
    copied = link_tofu(bench, tmp_path / "copied", copy=True)
    assert not any(p.is_symlink() for p in copied.values())
    assert validate_tofu(tmp_path / "copied", "forget10") == validate_tofu(bench, "forget10")


# --------------------------------------------------------------------------- resolving sources


def test_resolve_local_dir_as_is(bench):
    assert resolve_benchmark_root(bench) == bench
    assert resolve_benchmark_root(str(bench)) == bench


def test_resolve_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_benchmark_root(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_benchmark_root("./absent/TOFU")


def test_resolve_hub_id_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BenchmarkUnavailableError) as err:
        resolve_benchmark_root("locuslab/TOFU", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "'locuslab/TOFU'" in msg and "local directory" in msg
    assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "cache.tmp").exists()


def test_resolve_hub_id_materialises_layout(bench, tmp_path, monkeypatch):
    """The hub path with datasets.load_dataset stubbed by the embedded files."""
    import datasets

    calls = []

    def fake_load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return datasets.Dataset.from_list(load_records(bench / f"{config}.json"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    root = resolve_benchmark_root("someone/TOFU-copy", cache_dir=tmp_path / "cache")
    assert root == tmp_path / "cache"
    assert {c[1] for c in calls} == {Path(n).stem for n in TOFU_ALL_FILES}
    assert all(c[0] == "someone/TOFU-copy" and c[2] == "train" for c in calls)
    for split in TOFU_SPLITS:
        assert validate_tofu(root, split) == validate_tofu(bench, split)
    n_calls = len(calls)
    assert resolve_benchmark_root("someone/TOFU-copy", cache_dir=tmp_path / "cache") == root
    assert len(calls) == n_calls  # a complete copy is reused


# --------------------------------------------------------------------------- real TOFU copy


@pytest.mark.skipif(
    not REAL_TOFU.is_dir(), reason=f"no TOFU copy at {REAL_TOFU} (set BLUR_SHARED_DATA)"
)
def test_real_tofu_layout_and_counts():
    paths = tofu_files(REAL_TOFU, "forget01")
    assert paths["retain"].name == "retain99.json"
    counts = validate_tofu(REAL_TOFU, "forget01")
    assert counts == {
        "full": 4000,
        "forget": 40,
        "retain": 3960,
        "forget_perturbed": 40,
        "retain_perturbed": 400,
        "real_authors": 100,
        "world_facts": 117,
    }
    assert validate_tofu(REAL_TOFU, "forget05")["retain"] == 3800
    assert validate_tofu(REAL_TOFU, "forget10")["forget"] == 400
    # JSON Lines inside .json files, as on the hub
    first = (REAL_TOFU / "forget01.json").read_text().splitlines()[0]
    assert load_records(REAL_TOFU / "forget01.json")[0] == json.loads(first)


@pytest.mark.skipif(
    not REAL_TOFU.is_dir(), reason=f"no TOFU copy at {REAL_TOFU} (set BLUR_SHARED_DATA)"
)
def test_cli_prepare_data_tofu_links_real_copy(tmp_path, capsys):
    out = tmp_path / "tofu"
    assert (
        main(["prepare-data", "--benchmark", "tofu", "--source", str(REAL_TOFU), "--out", str(out)])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(TOFU_ALL_FILES)
    assert all(p.is_symlink() for p in out.iterdir())
    assert "forget01: full 4000, forget 40, retain 3960" in capsys.readouterr().out


# --------------------------------------------------------------------------- small-budget subset


def test_subset_tofu_cuts_retain_full_and_retain_perturbed(bench, tmp_path):
    out = tmp_path / "cut"
    link_tofu(bench, out)
    retain, perturbed = _load(bench, "retain90"), _load(bench, "retain_perturbed")
    kept_q = {r["question"] for r in retain[:40]}
    expected_perturbed = [r for r in perturbed if r["question"] in kept_q]
    assert 0 < len(expected_perturbed) < len(perturbed)  # the cut keeps some and drops some

    counts = subset_tofu(out, "forget10", 40)

    assert counts == {"retain": 40, "full": 40 + 50, "retain_perturbed": len(expected_perturbed)}
    assert _load(out, "retain90") == retain[:40]
    assert _load(out, "full") == retain[:40] + _load(bench, "forget10")
    assert _load(out, "retain_perturbed") == expected_perturbed
    assert validate_tofu(out, "forget10")["full"] == 90
    # the cut files are real files; the source copy behind the symlinks is untouched
    assert not (out / "full.json").is_symlink() and len(_load(bench, "full")) == 500
    assert (out / "forget10.json").is_symlink() and (out / "holdout10.json").is_symlink()
    # the other splits no longer add up to full.json, so they are gone
    assert not any(
        (out / f"{name}.json").exists() for name in ("forget01", "retain99", "forget05_perturbed")
    )
    assert json.loads((out / "subset.json").read_text())["retain_limit"] == 40


@pytest.mark.parametrize(
    "limit, message",
    [
        (0, "retain_limit must be a positive integer, got 0"),
        (450, "retain_limit 450 keeps all of retain90.json (450 records)"),
        (
            5,
            "none of retain_perturbed.json's questions is among the first 5 records of retain90.json",
        ),
    ],
)
def test_subset_tofu_errors_name_the_value(bench, tmp_path, limit, message):
    out = tmp_path / "cut"
    link_tofu(bench, out)
    with pytest.raises(ValueError, match=re.escape(message)):
        subset_tofu(out, "forget10", limit)
    assert _load(out, "full") == _load(bench, "full")  # nothing was cut


@pytest.mark.skipif(
    not REAL_TOFU.is_dir(), reason=f"no TOFU copy at {REAL_TOFU} (set BLUR_SHARED_DATA)"
)
def test_cli_prepare_data_real_tofu_subset(tmp_path, capsys):
    out = tmp_path / "tofu"
    assert (
        main(
            [
                "prepare-data",
                "--benchmark",
                "tofu",
                "--source",
                str(REAL_TOFU),
                "--out",
                str(out),
                "--forget-split",
                "forget01",
                "--retain-limit",
                "160",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # 8 whole authors; retain_perturbed's first 160 questions are theirs
    assert (
        "forget01: full 200, forget 40, retain 160, forget_perturbed 40, retain_perturbed 160"
        in printed
    )
    assert "forget10" not in printed


def test_cli_retain_limit_is_for_tofu_only(tmp_path):
    with pytest.raises(SystemExit, match="--retain-limit applies to --benchmark tofu only"):
        main(
            [
                "prepare-data",
                "--benchmark",
                "embedded",
                "--out",
                str(tmp_path / "e"),
                "--people",
                "20",
                "--retain-limit",
                "10",
            ]
        )
    assert not (tmp_path / "e").exists()  # refused before anything was written


# --------------------------------------------------------------------------- CLI


def test_cli_prepare_data_embedded(bench, tmp_path):
    out = tmp_path / "emb"
    assert (
        main(
            [
                "prepare-data",
                "--benchmark",
                "embedded",
                "--out",
                str(out),
                "--people",
                "100",
                "--questions-per-person",
                "5",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    assert {p.stem for p in out.iterdir()} == EXPECTED_FILES | {"preferred"}
    assert all(
        (out / p.name).read_bytes() == p.read_bytes() for p in bench.iterdir() if p.is_file()
    )


def test_cli_prepare_data_errors(bench, tmp_path, capsys):
    assert (
        main(
            [
                "prepare-data",
                "--benchmark",
                "tofu",
                "--source",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "nope" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(bench, broken)
    _rewrite(broken / "forget10.json", 4, lambda r: r.pop("question"))
    assert (
        main(
            [
                "prepare-data",
                "--benchmark",
                "tofu",
                "--source",
                str(broken),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "forget10.json: record 4 is missing field 'question'" in err
    with pytest.raises(SystemExit):
        main(["prepare-data", "--benchmark", "tofu", "--out", str(tmp_path / "o")])
