"""MUSE-News as an unlearning corpus on the real shared data (slow: SmolLM2's tokenizer on
the whole 3.3 MB forget corpus). The shared data holds only the WMDP questions, not the
cais/wmdp-corpora files, so the WMDP corpus layout is tested on small files in
tests/unit/test_corpus.py."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared_muse(shared_data, tmp_path_factory):
    from blur_core.data.corpus import prepare_muse_corpus

    root = shared_data / "muse_news"
    if not (root / "raw" / "forget.txt").is_file():
        pytest.skip(f"MUSE-News raw corpus not found under {root}")
    out = tmp_path_factory.mktemp("muse") / "prepared"
    counts = prepare_muse_corpus(root, out)
    return root, out, counts


def test_prepared_muse_news_counts_and_text(prepared_muse):
    from blur_core.data.corpus import read_corpus_info, read_text_jsonl

    root, out, counts = prepared_muse
    info = read_corpus_info(out)
    assert info.meta["forget"]["from"] == "raw/forget.txt"
    assert info.meta["retain"]["from"] == "raw/extra_news.txt"  # no retain1/2 in the copy
    assert counts["knowmem_forget"] == counts["verbmem_forget"] == counts["privleak_holdout"] == 100
    for which, name in (("forget", "forget.txt"), ("retain", "extra_news.txt")):
        paragraphs = read_text_jsonl(getattr(info, which))
        assert "\n\n".join(paragraphs) == (root / "raw" / name).read_text(encoding="utf-8")
    assert counts["forget"] == 22098 and counts["retain"] == 22130


def test_muse_chunking_of_the_forget_corpus_matches_muse(prepared_muse, smollm2_dir):
    """TextChunkDataset (muse, 2048) on the prepared paragraphs == MUSE's DefaultDataset on
    raw/forget.txt, restated: the file tokenised whole without special tokens, windows of
    2047 tokens at stride 2047 behind a BOS, the last one completed from the first."""
    from blur_core.data.corpus import load_texts
    from blur_core.data.text import TextChunkDataset
    from blur_core.models import load_tokenizer

    root, out, _ = prepared_muse
    tok = load_tokenizer(str(smollm2_dir))
    ds = TextChunkDataset(load_texts(out / "forget.jsonl"), tok, 2048, chunking="muse")
    raw = (root / "raw" / "forget.txt").read_text(encoding="utf-8")
    ids = tok(raw, add_special_tokens=False, verbose=False)["input_ids"]
    bos = tok.bos_token_id
    expected = [[bos, *ids[i : i + 2047]] for i in range(0, len(ids), 2047)]
    expected[-1] = (expected[-1] + expected[0])[:2048]
    print(f"MUSE-News forget: {len(ids)} SmolLM2 tokens -> {len(ds)} chunks of 2048")
    assert len(ds) == len(expected) == math.ceil(len(ids) / 2047)
    assert all(ds[i]["input_ids"].tolist() == expected[i] for i in range(len(ds)))
