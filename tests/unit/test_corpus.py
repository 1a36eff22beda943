"""Text-corpus benchmarks: the prepared layout, the MUSE / WMDP corpus loaders (on small
files written here), MUSE's chunking, RMU's truncation, the embedded corpus and the schema
errors that name file and line. No model, no downloads."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from blur_core.config import ConfigError
from blur_core.data import corpus as corpus_mod
from blur_core.data.corpus import (
    corpus_data_config,
    corpus_strings,
    hub_split_texts,
    load_corpus_mc,
    load_texts,
    prepare_muse_corpus,
    prepare_wmdp_corpus,
    read_corpus_info,
    read_text_jsonl,
    split_paragraphs,
    validate_corpus,
)
from blur_core.data.corpus_embedded import write_embedded_corpus
from blur_core.data.muse import load_muse
from blur_core.data.text import TextChunkDataset, document_chunks, muse_chunks
from blur_core.data.tofu import BenchmarkUnavailableError
from blur_core.tiny import build_tokenizer
from blur_core.train.config import parse_run_config

# --------------------------------------------------------------------------- fixtures


def _write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _jsonl(path, texts, field="text"):
    return _write_lines(path, [json.dumps({field: t}) for t in texts])


WORDS = ("the", "cat", "sat", "on", "a", "mat", "ships", "sail", "north", "birds", "sing")


def _sentence(rng, n=8):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([" ".join(WORDS), " ".join(w.capitalize() for w in WORDS)])


@pytest.fixture
def muse_dir(tmp_path):
    """A miniature MUSE-News dir: raw corpora and every evaluation file load_muse needs."""
    rng = random.Random(0)
    root = tmp_path / "muse"
    raw = root / "raw"
    raw.mkdir(parents=True)
    (raw / "forget.txt").write_text(
        "\n\n".join(_sentence(rng) for _ in range(5)) + "\n\n\n" + _sentence(rng)
    )
    (raw / "extra_news.txt").write_text("\n\n".join(_sentence(rng) for _ in range(4)))
    qa = [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(3)]
    files = {
        "knowmem/forget_qa.json": qa,
        "knowmem/forget_qa_icl.json": qa[:1],
        "knowmem/retain2_qa.json": qa,
        "knowmem/retain2_qa_icl.json": qa[:1],
        "verbmem/forget.json": [{"prompt": "The cat", "gt": "sat on a mat"}],
        "privleak/forget.json": ["The cat sat."],
        "privleak/retain2.json": ["Ships sail."],
        "privleak/holdout.json": ["Birds sing."],
    }
    for name, records in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(records))
    return root


@pytest.fixture
def wmdp_dir(tmp_path):
    """A miniature cais/wmdp-corpora dir (the shared data has only the WMDP questions)."""
    rng = random.Random(1)
    root = tmp_path / "wmdp-corpora"
    for name, n in (
        ("bio-forget-corpus", 5),
        ("bio-retain-corpus", 4),
        ("cyber-forget-corpus", 3),
        ("cyber-retain-corpus", 6),
    ):
        texts = [" ".join(_sentence(rng) for _ in range(3)) for _ in range(n)]
        texts[0] = "Short."  # 6 characters: dropped by min_chars=10
        _jsonl(root / f"{name}.jsonl", texts)
    return root


# --------------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"text": "ok"}\n\n{"title": "no text"}\n', r"bad\.jsonl: line 3: missing field 'text'"),
        ('{"text": "ok"}\nnot json at all\n', r"bad\.jsonl: line 2: not JSON lines"),
        ('{"text": "ok"}\n["a list"]\n', r"bad\.jsonl: line 2: expected a JSON object"),
        ('{"text": "ok"}\n{"text": 3}\n', r"bad\.jsonl: line 2: field 'text' must be a non-empty"),
        ('{"text": "  "}\n', r"bad\.jsonl: line 1: field 'text' must be a non-empty"),
        ("", r"bad\.jsonl: empty corpus file"),
        ("\n\n  \n", r"bad\.jsonl: empty corpus file"),
    ],
)
def test_bad_corpus_file_names_file_and_line(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_text_jsonl(path)
    with pytest.raises(ValueError, match=match):
        load_texts(path)


def test_load_texts_formats(tmp_path):
    assert load_texts(_jsonl(tmp_path / "a.jsonl", ["x", "y"])) == ["x", "y"]
    (tmp_path / "b.json").write_text(json.dumps([{"text": "x"}, {"text": "y", "id": 2}]))
    assert load_texts(tmp_path / "b.json") == ["x", "y"]
    (tmp_path / "c.json").write_text(json.dumps(["x", "y"]))
    assert load_texts(tmp_path / "c.json") == ["x", "y"]
    (tmp_path / "d.json").write_text('{"text": "x"}\n{"text": "y"}\n')  # JSON lines in .json
    assert load_texts(tmp_path / "d.json") == ["x", "y"]
    (tmp_path / "e.txt").write_text("whole\n\nfile\n")
    assert load_texts(tmp_path / "e.txt") == ["whole\n\nfile\n"]
    (tmp_path / "f.json").write_text(json.dumps([{"text": "x"}, {"body": "y"}]))
    with pytest.raises(ValueError, match=r"f\.json: record 1 is missing field 'text'"):
        load_texts(tmp_path / "f.json")
    (tmp_path / "g.json").write_text("[]")
    with pytest.raises(ValueError, match=r"g\.json: empty corpus file"):
        load_texts(tmp_path / "g.json")
    (tmp_path / "h.csv").write_text("text\nx\n")
    with pytest.raises(ValueError, match="unknown extension"):
        load_texts(tmp_path / "h.csv")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_texts(tmp_path / "missing.jsonl")
    # another field name
    assert load_texts(_jsonl(tmp_path / "k.jsonl", ["z"], field="body"), field="body") == ["z"]


# --------------------------------------------------------------------------- paragraphs


@pytest.mark.parametrize(
    "text",
    ["a", "a\n\nb", "a\n\n\nb", "\n\na\n\nb", "a\n\n \n\nb\n\n", "a\n\n\n\n\nb\nc", "a\nb"],
)
def test_split_paragraphs_joins_back_exactly(text):
    paragraphs = split_paragraphs(text)
    assert "\n\n".join(paragraphs) == text
    assert all(p.strip() for p in paragraphs)


def test_split_paragraphs_counts_and_blank():
    assert split_paragraphs("one\n\ntwo\n\nthree") == ["one", "two", "three"]
    with pytest.raises(ValueError, match="blank"):
        split_paragraphs(" \n\n ")


# --------------------------------------------------------------------------- chunking


def _muse_reference(ids, max_len, bos):
    """MUSE's DefaultDataset on a .txt (add_bos_token=True), restated: windows of max_len-1
    tokens at stride max_len-1, BOS in front; a short last window is completed with the
    first window (its BOS first)."""
    windows = []
    start = 0
    while start < len(ids):
        windows.append([bos, *ids[start : start + max_len - 1]])
        start += max_len - 1
    if len(windows[-1]) < max_len:
        windows[-1] = (windows[-1] + windows[0])[:max_len]
    return windows


@pytest.mark.parametrize(("n", "max_len"), [(1, 2), (5, 8), (14, 8), (15, 8), (100, 16), (7, 3)])
def test_muse_chunks_match_muse(n, max_len):
    ids = list(range(10, 10 + n))
    chunks = muse_chunks(ids, max_len, bos_id=2)
    assert chunks == _muse_reference(ids, max_len, 2)
    assert len(chunks) == math.ceil(n / (max_len - 1))
    assert all(c[0] == 2 for c in chunks)
    # no overlap: the windows' own tokens tile the stream exactly once
    own = [t for c in chunks[:-1] for t in c[1:]]
    assert own == ids[: len(own)]
    if 2 * (max_len - 1) <= n:  # long enough to fill the rotated last chunk
        assert all(len(c) == max_len for c in chunks)


def test_muse_chunks_rejects_bad_input():
    with pytest.raises(ValueError, match="BOS"):
        muse_chunks([1, 2], 4, bos_id=None)
    with pytest.raises(ValueError, match="max_length"):
        muse_chunks([1, 2], 1, bos_id=0)
    with pytest.raises(ValueError, match="empty"):
        muse_chunks([], 4, bos_id=0)


def test_text_dataset_muse_mode_is_one_stream(tokenizer):
    rng = random.Random(3)
    docs = [_sentence(rng) for _ in range(6)]
    ds = TextChunkDataset(docs, tokenizer, 8, chunking="muse")
    stream = tokenizer("\n\n".join(docs), add_special_tokens=False)["input_ids"]
    expected = _muse_reference(stream, 8, tokenizer.bos_token_id)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == expected
    for i in range(len(ds)):  # every token is a label: loss on all tokens of the chunk
        assert torch.equal(ds[i]["labels"], ds[i]["input_ids"]) and ds[i]["index"] == i


def test_document_chunks_truncate_like_rmu(tokenizer):
    docs = ["the cat sat on a mat", "birds sing", "ships sail north on a mat birds sing"]
    chunks = document_chunks(docs, tokenizer, max_length=5)
    for doc, chunk in zip(docs, chunks):
        full = tokenizer(doc)["input_ids"]  # with special tokens (BOS), as RMU's tokenizer call
        assert chunk == full[:5] and chunk[0] == tokenizer.bos_token_id
    ds = TextChunkDataset(docs, tokenizer, 5, chunking="document")
    assert [len(ds[i]["input_ids"]) for i in range(3)] == [5, 3, 5]
    tokenizer.truncation_side = "left"  # RMU forces right-side truncation; so do we
    try:
        assert document_chunks(docs, tokenizer, max_length=5) == chunks
        assert tokenizer.truncation_side == "left"  # the caller's setting is restored
    finally:
        tokenizer.truncation_side = "right"
    with pytest.raises(ValueError, match="chunking"):
        TextChunkDataset(docs, tokenizer, 5, chunking="paragraph")


# --------------------------------------------------------------------------- MUSE loader


def test_prepare_muse_corpus(muse_dir, tmp_path):
    out = tmp_path / "prepared"
    counts = prepare_muse_corpus(muse_dir, out)
    raw = (muse_dir / "raw" / "forget.txt").read_text()
    forget = read_text_jsonl(out / "forget.jsonl")
    assert "\n\n".join(forget) == raw  # the paragraphs give MUSE's raw file back
    assert counts["forget"] == 6 and counts["retain"] == 4 and counts["knowmem_forget"] == 3
    info = read_corpus_info(out)
    assert info.kind == "muse" and info.muse_eval and not info.mc
    assert info.meta["retain"]["from"] == "raw/extra_news.txt"  # no retain1/retain2 here
    assert info.training == {"format": "text", "text_chunking": "muse", "max_length": 2048}
    assert load_muse(out).counts() == load_muse(muse_dir).counts()  # the suite reads it as is
    # retain1 / retain2 win over extra_news when present; a name or a file can be given
    (muse_dir / "raw" / "retain2.txt").write_text("Retain two.\n\nSecond paragraph.")
    prepare_muse_corpus(muse_dir, out)
    assert read_corpus_info(out).meta["retain"]["from"] == "raw/retain2.txt"
    prepare_muse_corpus(muse_dir, out, retain="extra_news", forget_docs=2, retain_docs=1)
    assert validate_corpus(out)["forget"] == 2 and validate_corpus(out)["retain"] == 1
    other = _jsonl(tmp_path / "mine.jsonl", ["my retain text"])
    prepare_muse_corpus(muse_dir, out, retain=str(other))
    assert read_text_jsonl(out / "retain.jsonl") == ["my retain text"]
    with pytest.raises(FileNotFoundError, match=r"raw/retain1\.txt"):
        prepare_muse_corpus(muse_dir, out, retain="retain1")


def test_prepare_muse_rejects_bad_eval_file(muse_dir, tmp_path):
    (muse_dir / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(ValueError, match=r"verbmem/forget\.json: record 0 has no field 'gt'"):
        prepare_muse_corpus(muse_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


# --------------------------------------------------------------------------- WMDP loader


def test_prepare_wmdp_corpus_layout_and_rmu_defaults(wmdp_dir, tmp_path):
    out = tmp_path / "bio"
    counts = prepare_wmdp_corpus(wmdp_dir, out, subset="bio", min_chars=10)
    assert counts == {"forget": 4, "retain": 3}  # "Short." dropped from both (len <= 10)
    info = read_corpus_info(out)
    assert info.kind == "wmdp" and not info.muse_eval
    assert info.training == {
        "format": "text",
        "text_chunking": "document",
        "max_length": 512,
        "forget_max_length": 512,
        "retain_max_length": 512,
    }
    assert info.meta["forget"]["from"] == "bio-forget-corpus.jsonl"
    assert (
        read_text_jsonl(out / "forget.jsonl")
        == read_text_jsonl(wmdp_dir / "bio-forget-corpus.jsonl")[1:]
    )
    cyber = prepare_wmdp_corpus(wmdp_dir, tmp_path / "cyber", subset="cyber", forget_docs=2)
    assert cyber == {"forget": 2, "retain": 6}  # min_chars 0 keeps "Short."
    assert read_corpus_info(tmp_path / "cyber").training["forget_max_length"] == 768


def test_wmdp_wikitext_style_retain_files(wmdp_dir, tmp_path):
    rows = ["", " = Valkyria Chronicles = \n", "", " Senjo no Valkyria is a game . \n", "   \n"]
    txt = tmp_path / "wiki.test.txt"
    txt.write_text("".join(r if r.endswith("\n") else r + "\n" for r in rows))
    prepare_wmdp_corpus(wmdp_dir, tmp_path / "t", retain=str(txt))
    assert read_text_jsonl(tmp_path / "t" / "retain.jsonl") == [
        " = Valkyria Chronicles = \n",
        " Senjo no Valkyria is a game . \n",
    ]  # blank rows dropped, rows kept as they are (RMU keeps WikiText's rows)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    parquet = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": rows}), parquet)
    prepare_wmdp_corpus(wmdp_dir, tmp_path / "p", retain=str(parquet))
    assert read_text_jsonl(tmp_path / "p" / "retain.jsonl") == [
        " = Valkyria Chronicles = \n",
        " Senjo no Valkyria is a game . \n",
    ]
    pq.write_table(pa.table({"body": rows}), parquet)
    with pytest.raises(ValueError, match="no 'text' column"):
        prepare_wmdp_corpus(wmdp_dir, tmp_path / "p", retain=str(parquet))


def test_wmdp_bad_files(wmdp_dir, tmp_path):
    (wmdp_dir / "bio-forget-corpus.jsonl").write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(ValueError, match=r"bio-forget-corpus\.jsonl: line 2: missing field 'text'"):
        prepare_wmdp_corpus(wmdp_dir, tmp_path / "x")
    (wmdp_dir / "cyber-forget-corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"cyber-forget-corpus\.jsonl"):
        prepare_wmdp_corpus(wmdp_dir, tmp_path / "x", subset="cyber")
    with pytest.raises(ValueError, match="subset"):
        prepare_wmdp_corpus(wmdp_dir, tmp_path / "x", subset="chem")
    _jsonl(wmdp_dir / "bio-forget-corpus.jsonl", ["fine again"])
    with pytest.raises(FileNotFoundError, match="not 'corpus', 'wikitext'"):
        prepare_wmdp_corpus(wmdp_dir, tmp_path / "x", subset="bio", retain="nowhere.jsonl")
    with pytest.raises(FileNotFoundError, match="directory not found"):
        prepare_wmdp_corpus(tmp_path / "nope", tmp_path / "x")


# --------------------------------------------------------------------------- the hub path


def test_hub_id_offline_fails_naming_the_id(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline (HF_HUB_OFFLINE=1)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkUnavailableError, match=r"cais/wmdp-corpora.*cyber-forget-corpus"):
        prepare_wmdp_corpus("cais/wmdp-corpora", tmp_path / "x", subset="cyber", cache_dir=tmp_path)
    with pytest.raises(BenchmarkUnavailableError, match="not public on the hub"):
        prepare_wmdp_corpus("cais/wmdp-corpora", tmp_path / "x", subset="bio", cache_dir=tmp_path)
    with pytest.raises(BenchmarkUnavailableError, match=r"muse-bench/MUSE-News.*'raw'"):
        prepare_muse_corpus("muse-bench/MUSE-News", tmp_path / "x", cache_dir=tmp_path)


def test_hub_split_is_cached_and_reused(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"text": "first doc"}, {"text": ""}, {"text": "second doc"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert hub_split_texts("org/set", "cfg", "train", cache_dir=tmp_path) == [
        "first doc",
        "second doc",
    ]
    assert (tmp_path / "cfg" / "train.jsonl").is_file()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: 1 / 0)  # offline now
    assert hub_split_texts("org/set", "cfg", "train", cache_dir=tmp_path) == [
        "first doc",
        "second doc",
    ]
    assert calls == [("org/set", "cfg", "train")]


# --------------------------------------------------------------------------- the layout


def test_validate_corpus_catches_inconsistency(tmp_path):
    out = tmp_path / "c"
    write_embedded_corpus(out, n_people=6, forget_fraction=0.34, seed=0)
    _jsonl(out / "forget.jsonl", ["only one"])
    with pytest.raises(ValueError, match=r"forget\.documents = 2 but .*holds 1 records"):
        validate_corpus(out)
    (out / "mc" / "retain.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"mc/retain\.json"):
        read_corpus_info(out)
    info = json.loads((out / "corpus.json").read_text())
    (out / "corpus.json").write_text(json.dumps({**info, "layout": 99}))
    with pytest.raises(ValueError, match="layout 99"):
        read_corpus_info(out)
    with pytest.raises(FileNotFoundError, match="not a prepared corpus"):
        read_corpus_info(tmp_path)


def test_corpus_data_config_is_a_valid_run_config(tmp_path):
    out = tmp_path / "c"
    write_embedded_corpus(out, n_people=6, forget_fraction=0.34, seed=0)
    data = corpus_data_config(out, max_length=64)
    cfg = parse_run_config(
        {"model": "m", "output_dir": str(tmp_path / "o"), "data": data, "train": {"max_steps": 1}}
    )
    cfg.validate("run")
    assert cfg.data.format == "text" and cfg.data.text_chunking == "document"
    assert cfg.data.max_length_of("forget") == 64


def test_run_config_text_keys(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", ["a text"])
    base = {"model": "m", "output_dir": str(tmp_path / "o"), "train": {"max_steps": 1}}
    data = {"forget": str(path), "retain": str(path), "format": "text"}
    with pytest.raises(ConfigError, match=r"idk.*question/answer"):
        parse_run_config({**base, "method": {"name": "idk"}, "data": data}).validate("run")
    with pytest.raises(ConfigError, match="text_chunking"):
        parse_run_config({**base, "data": {**data, "text_chunking": "sentences"}})
    with pytest.raises(ConfigError, match="forget_max_length"):
        parse_run_config({**base, "data": {**data, "forget_max_length": 4}})
    cfg = parse_run_config({**base, "data": {**data, "forget_max_length": 768}})
    assert (cfg.data.max_length_of("forget"), cfg.data.max_length_of("retain")) == (768, 256)


# --------------------------------------------------------------------------- embedded corpus


def test_embedded_corpus_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_embedded_corpus(a, n_people=10, forget_fraction=0.2, seed=3)
    write_embedded_corpus(b, n_people=10, forget_fraction=0.2, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 13  # corpus.json, 2 corpora, 8 MUSE-format sets, 2 question sets
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    write_embedded_corpus(tmp_path / "c", n_people=10, forget_fraction=0.2, seed=4)
    assert (a / "forget.jsonl").read_bytes() != (tmp_path / "c" / "forget.jsonl").read_bytes()


def test_embedded_corpus_facts_agree(tmp_path):
    """KnowMem answers, 4-way questions and VerbMem all come from the forget reports;
    forget, retain and holdout people are disjoint."""
    out = tmp_path / "c"
    counts = write_embedded_corpus(out, n_people=20, forget_fraction=0.2, seed=0)
    info = read_corpus_info(out)
    people = info.meta["people"]
    assert [len(people[r]) for r in ("forget", "retain", "holdout")] == [4, 16, 4]
    assert len({n for names in people.values() for n in names}) == 24
    assert counts["knowmem_forget"] + counts["knowmem_forget_icl"] == 4 * 7 == counts["mc_forget"]
    forget_docs = read_text_jsonl(info.forget)
    data = load_muse(out)

    def doc_of(question):
        (doc,) = [d for d, name in zip(forget_docs, people["forget"]) if name in question]
        return doc

    for qa in data.knowmem_forget + data.knowmem_forget_icl:
        assert qa["answer"] in doc_of(qa["question"])
    for item in load_corpus_mc(out, "forget"):
        doc = doc_of(item.question)
        words = doc.replace(".", " ").split()
        assert item.choices[item.answer] in words
        assert not [c for i, c in enumerate(item.choices) if i != item.answer and c in words]
    for rec, doc in zip(data.verbmem_forget, forget_docs):
        assert f"{rec['prompt']} {rec['gt']}" == doc
    retain_docs = read_text_jsonl(info.retain)
    assert not set(data.privleak_holdout) & set(forget_docs + retain_docs)
    answers = [item.answer for item in load_corpus_mc(out, "retain")]
    assert len(set(answers)) == 4  # the true option is not always in the same place


def test_embedded_corpus_vocabulary_is_covered(tmp_path):
    out = tmp_path / "c"
    write_embedded_corpus(out, n_people=8, forget_fraction=0.25, seed=0)
    texts = corpus_strings(out)
    tok = build_tokenizer([*texts, "Question: Answer:"])
    assert sum(tok(t)["input_ids"].count(tok.unk_token_id) for t in texts) == 0
    assert len(texts) > 8 * 7


def test_write_corpus_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus kind"):
        corpus_mod.write_corpus(tmp_path / "x", "books", "s", ["a"], ["b"], {})
    with pytest.raises(ValueError, match="retain corpus holds no documents"):
        corpus_mod.write_corpus(tmp_path / "x", "wmdp", "s", ["a"], [], {})
    with pytest.raises(ValueError, match="n_people"):
        write_embedded_corpus(tmp_path / "x", n_people=1)


# --------------------------------------------------------------------------- the CLI


def test_cli_prepare_data_corpus_kinds(muse_dir, wmdp_dir, tmp_path, capsys):
    from blur_core.cli import main

    out = tmp_path / "emb"
    assert (
        main(
            ["prepare-data", "--benchmark", "corpus-embedded", "--out", str(out), "--people", "10"]
        )
        == 0
    )
    assert read_corpus_info(out).meta["forget"]["documents"] == 1
    assert "prepared corpus-embedded corpus" in capsys.readouterr().out
    args = [
        "prepare-data",
        "--benchmark",
        "muse",
        "--source",
        str(muse_dir),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main([*args, "--retain-docs", "2"]) == 0
    assert validate_corpus(tmp_path / "m")["retain"] == 2
    args = [
        "prepare-data",
        "--benchmark",
        "wmdp",
        "--source",
        str(wmdp_dir),
        "--out",
        str(tmp_path / "w"),
    ]
    assert main([*args, "--subset", "cyber", "--min-chars", "10"]) == 0
    assert read_corpus_info(tmp_path / "w").meta["subset"] == "cyber"
    # bad data: exit status 2 and the file and line on stderr, nothing written
    (wmdp_dir / "bio-forget-corpus.jsonl").write_text('{"text": "fine"}\n{"text": ""}\n')
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "w2")]) == 2
    assert "bio-forget-corpus.jsonl: line 2: field 'text' must be a non-empty string" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "w2").exists()
    with pytest.raises(SystemExit, match="needs --source"):
        main(["prepare-data", "--benchmark", "wmdp", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--subset"):
        main(
            [
                "prepare-data",
                "--benchmark",
                "embedded",
                "--subset",
                "bio",
                "--out",
                str(tmp_path / "x"),
            ]
        )
    with pytest.raises(SystemExit, match="--subset"):
        main(
            [
                "prepare-data",
                "--benchmark",
                "muse",
                "--source",
                str(muse_dir),
                "--subset",
                "bio",
                "--out",
                str(tmp_path / "x"),
            ]
        )
