"""Zero-shot multiple choice: prompt literal, accuracy, scores against torch by hand,
batched vs one-at-a-time, padding invariance, loaders' schema errors, select_items."""

from __future__ import annotations

import json
import math

import pytest
import torch

from blur_core.data.mc import (
    MC_TOPICS,
    MMLU_SUBJECTS,
    MCItem,
    load_mmlu,
    load_wmdp,
    mc_topic,
    select_items,
)
from blur_core.eval.mc import encode_pair, evaluate_mc, mc_accuracy, mc_context, mc_continuations
from blur_core.tiny import build_tiny_llama, build_tokenizer

ITEM = MCItem(
    question="  What is 2 + 2?\n",
    choices=("3", "4", "five", "22"),
    answer=1,
    subject="wmdp_bio",
    source="t.json:0",
)


def _items(n: int = 6) -> list[MCItem]:
    """``n`` items of different lengths over three subjects."""
    subjects = ["wmdp_bio", "abstract_algebra", "high_school_us_history"]
    return [
        MCItem(
            question="Which one is right ?" + " really" * (3 * i % 7),
            choices=tuple(f"option {k} of {i}" + " long" * ((i + k) % 3) for k in range(4)),
            answer=i % 4,
            subject=subjects[i % 3],
            source=f"mem:{i}",
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------
# prompt and accuracy
# ---------------------------------------------------------------------------


def test_mc_context_is_lm_eval_zero_shot_prompt_literal():
    assert mc_context(ITEM) == (
        "The following are multiple choice questions (with answers) about biology.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. five\nD. 22\nAnswer:"
    )
    assert mc_continuations() == (" A", " B", " C", " D")
    mmlu = MCItem("Q?", ("a", "b", "c", "d"), 0, "high_school_us_history", "x:0")
    assert mc_context(mmlu).startswith(
        "The following are multiple choice questions (with answers) about high school us history.\n\nQ?\nA. a"
    )
    assert mc_context(mmlu, topic="history").startswith(
        "The following are multiple choice questions (with answers) about history.\n\n"
    )


def test_topics_cover_wmdp_and_all_mmlu_subjects():
    assert len(MMLU_SUBJECTS) == 57
    assert (mc_topic("wmdp_bio"), mc_topic("wmdp_chem"), mc_topic("wmdp_cyber")) == (
        "biology",
        "chemistry",
        "cybersecurity",
    )
    assert mc_topic("college_computer_science") == "college computer science"
    assert len(MC_TOPICS) == 60
    with pytest.raises(ValueError, match="'astrology'"):
        mc_topic("astrology")
    with pytest.raises(ValueError, match="expected 4 choices"):
        mc_context(MCItem("Q", ("a", "b"), 0, "wmdp_bio", "x:0"))


def test_mc_accuracy_by_hand():
    logliks = [
        [-1.0, -2.0, -3.0, -4.0],  # pred 0, answer 0: right
        [-5.0, -0.5, -0.7, -9.0],  # pred 1, answer 2: wrong
        [-1.0, -1.0, -3.0, -1.0],  # tie -> first maximum (0), answer 0: right
        [-9.0, -8.0, -7.0, -6.0],
    ]  # pred 3, answer 3: right
    assert mc_accuracy(logliks, [0, 2, 0, 3]) == pytest.approx(0.75)
    assert mc_accuracy(logliks, [1, 1, 3, 0]) == pytest.approx(0.25)  # the tie does not count for 3
    assert math.isnan(mc_accuracy([], []))
    with pytest.raises(ValueError, match="2 loglik rows but 1 answers"):
        mc_accuracy(logliks[:2], [0])
    with pytest.raises(ValueError, match=r"answers\[0\] = 4"):
        mc_accuracy(logliks[:1], [4])


# ---------------------------------------------------------------------------
# scores against torch: a character-level stub tokenizer and a bigram model
# ---------------------------------------------------------------------------


class CharTokenizer:
    """One token per character (``ord(c) % 128``), no special tokens added; EOS = 0.

    " A" after "Answer:" is TWO tokens, so evaluate_mc must take the general
    (per-choice) path, not the single-forward one.
    """

    bos_token_id = None
    eos_token_id = 0
    pad_token_id = 0
    model_max_length = 10_000

    def __len__(self):
        return 128

    def __call__(self, strings, add_special_tokens=True):
        return {"input_ids": [[ord(c) % 128 for c in s] for s in strings]}

    def decode(self, ids):
        return "".join(chr(i) for i in ([ids] if isinstance(ids, int) else ids))


class Bigram(torch.nn.Module):
    """``logits[b, t] = W[input_ids[b, t]]``: the next-token distribution depends on the
    current token only, so every score can be written down with ``log_softmax(W)``."""

    def __init__(self, vocab: int = 128, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(vocab, vocab, generator=gen))
        self.config = None

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.W[input_ids]})()


def test_scores_equal_bigram_log_probs_by_hand():
    model, tok = Bigram(), CharTokenizer()
    logp = torch.log_softmax(model.W.detach().double(), dim=-1)
    # context ends with ":"; continuation " X" = tokens " " and "X":
    #   loglik_k = log p(" " | ":") + log p(letter_k | " ")
    expected = [float(logp[ord(":"), ord(" ")] + logp[ord(" "), ord(letter)]) for letter in "ABCD"]
    out = evaluate_mc(model, tok, [ITEM, _items(2)[1]], batch_size=2)
    for row in out["per_example"]:
        assert row["loglik"] == pytest.approx(expected, abs=1e-5)
    best = max(range(4), key=lambda k: expected[k])
    assert [r["pred"] for r in out["per_example"]] == [best, best]
    assert out["accuracy"] == pytest.approx(mc_accuracy([expected] * 2, [ITEM.answer, 1]))
    assert out["n"] == 2 and out["per_example"][0]["source"] == "t.json:0"


def test_left_truncation_to_max_length_as_lm_eval():
    # lm-eval feeds (ctx + cont)[-(L+1):][:-1]; with a bigram model the score does not
    # depend on how much of the context is kept, only on the last context token.
    model, tok = Bigram(), CharTokenizer()
    full = evaluate_mc(model, tok, [ITEM], batch_size=1)["per_example"][0]["loglik"]
    with pytest.warns(UserWarning, match="1 of 1 items exceed max_length=3"):
        short = evaluate_mc(model, tok, [ITEM], batch_size=1, max_length=3)["per_example"][0][
            "loglik"
        ]
    assert short == pytest.approx(full, abs=1e-6)
    with pytest.raises(ValueError, match="max_length=1"):
        evaluate_mc(model, tok, [ITEM], max_length=1)  # " A" has 2 tokens > 1
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate_mc(model, tok, [ITEM], batch_size=0)


def test_encode_pair_moves_trailing_space_and_splits_whole_encoding():
    tok = CharTokenizer()
    ctx, cont = encode_pair(tok, "Answer: ", "A")  # trailing space moves to the continuation
    assert ctx == [ord(c) for c in "Answer:"] and cont == [ord(" "), ord("A")]
    with pytest.raises(ValueError, match="non-empty context"):
        encode_pair(tok, "", " A")


# ---------------------------------------------------------------------------
# a tiny Llama with a word-level tokenizer: single-forward path, batching, padding
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    items = _items(7)
    texts = [mc_context(it) + " A B C D" for it in items]
    tok = build_tokenizer(texts)
    model = build_tiny_llama(
        tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=1
    )
    with torch.no_grad():  # sharpen the random init so that scores differ visibly between choices
        model.lm_head.weight.mul_(20.0)
    return model, tok, items


def test_single_forward_equals_torch_on_each_choice(tiny):
    model, tok, items = tiny
    out = evaluate_mc(model, tok, items[:3], batch_size=3)
    for item, row in zip(items[:3], out["per_example"]):
        ctx = tok(mc_context(item))["input_ids"]
        assert ctx[0] == tok.bos_token_id  # the tokenizer's default adds BOS, as lm-eval's HFLM
        for k, letter in enumerate("ABCD"):
            whole = tok(mc_context(item) + " " + letter)["input_ids"]
            assert whole[:-1] == ctx and len(whole) == len(ctx) + 1
            with torch.no_grad():
                logits = model(torch.tensor([whole[:-1]])).logits[0, -1]
            expected = torch.log_softmax(logits.double(), -1)[whole[-1]].item()
            assert row["loglik"][k] == pytest.approx(expected, abs=1e-5)


def test_batched_equals_one_at_a_time(tiny):
    model, tok, items = tiny
    batched = evaluate_mc(model, tok, items, batch_size=4)
    single = evaluate_mc(model, tok, items, batch_size=1, single_forward=False, scoring="padded")
    for a, b in zip(batched["per_example"], single["per_example"]):
        assert a["loglik"] == pytest.approx(b["loglik"], abs=1e-5)
        assert a["pred"] == b["pred"]
    assert batched["accuracy"] == single["accuracy"]


def test_right_padding_does_not_change_scores(tiny):
    model, tok, items = tiny
    # items[0] is short, items[2] long: in one batch item 0 is right-padded
    alone = evaluate_mc(model, tok, [items[0]], batch_size=1)["per_example"][0]["loglik"]
    for batch_size in (2, 7):
        padded = evaluate_mc(model, tok, [items[2], items[0], *items[3:]], batch_size=batch_size)
        assert padded["per_example"][1]["loglik"] == pytest.approx(alone, abs=1e-5)


def test_general_path_on_tiny_llama_matches_per_pair_forward():
    tok = CharTokenizer()
    model = build_tiny_llama(
        tok,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    items = _items(3)
    out = evaluate_mc(model, tok, items, batch_size=5)
    for item, row in zip(items, out["per_example"]):
        ctx = [ord(c) for c in mc_context(item)]
        for k, letter in enumerate("ABCD"):
            whole = [*ctx, ord(" "), ord(letter)]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0].double(), -1)
            expected = (logp[-2, ord(" ")] + logp[-1, ord(letter)]).item()
            assert row["loglik"][k] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("max_length", [None, 40])
def test_packed_equals_padded_path_multi_token_and_truncated(max_length):
    tok = CharTokenizer()
    model = build_tiny_llama(
        tok,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        seed=2,
        max_position_embeddings=512,
    )
    items = _items(6)
    kwargs = {"max_length": max_length}
    if max_length is not None:  # every context is longer: lm-eval's per-pair left truncation
        with pytest.warns(UserWarning, match="6 of 6 items exceed max_length=40"):
            padded = evaluate_mc(model, tok, items, batch_size=3, scoring="padded", **kwargs)
        with pytest.warns(UserWarning, match="6 of 6 items exceed max_length=40"):
            packed = evaluate_mc(model, tok, items, scoring="packed", batch_tokens=256, **kwargs)
    else:
        padded = evaluate_mc(model, tok, items, batch_size=3, scoring="padded")
        packed = evaluate_mc(model, tok, items, scoring="packed", batch_tokens=256)
    worst = max(
        abs(a - b)
        for pa, pb in zip(padded["per_example"], packed["per_example"])
        for a, b in zip(pa["loglik"], pb["loglik"])
    )
    assert worst <= 1e-4, worst
    assert [r["pred"] for r in packed["per_example"]] == [r["pred"] for r in padded["per_example"]]


def test_matches_lm_eval_hflm_on_tiny_llama(tiny):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tok, items = tiny
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=3)
    requests = [
        Instance("loglikelihood", {}, (mc_context(it), cont), idx=k)
        for it in items
        for k, cont in enumerate(mc_continuations())
    ]
    theirs = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    ours = [
        ll
        for row in evaluate_mc(model, tok, items, batch_size=3)["per_example"]
        for ll in row["loglik"]
    ]
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_empty_items():
    out = evaluate_mc(Bigram(), CharTokenizer(), [])
    assert out["n"] == 0 and out["per_example"] == [] and math.isnan(out["accuracy"])


# ---------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------

GOOD = {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2}
HEADER = "question,choice0,choice1,choice2,choice3,answer\n"


def _wmdp(tmp_path, records) -> object:
    (tmp_path / "wmdp-bio.json").write_text(json.dumps(records))
    return tmp_path


def test_load_wmdp_good_file(tmp_path):
    items = load_wmdp(_wmdp(tmp_path, [GOOD, {**GOOD, "answer": 0}]), "bio")
    assert items[1] == MCItem(
        "Q?", ("a", "b", "c", "d"), 0, "wmdp_bio", f"{tmp_path / 'wmdp-bio.json'}:1"
    )


@pytest.mark.parametrize(
    "bad, field",
    [
        ({k: v for k, v in GOOD.items() if k != "answer"}, "missing field 'answer'"),
        ({**GOOD, "answer": 4}, "field 'answer'"),
        ({**GOOD, "answer": -1}, "field 'answer'"),
        ({**GOOD, "choices": ["a", "b", "c"]}, "field 'choices'"),
        ({**GOOD, "choices": ["a", "", "c", "d"]}, "field 'choices' item 1"),
        ({**GOOD, "question": 7}, "field 'question'"),
    ],
)
def test_load_wmdp_bad_row_names_file_row_and_field(tmp_path, bad, field):
    root = _wmdp(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(ValueError) as err:
        load_wmdp(root, "bio")
    assert (
        "wmdp-bio.json" in str(err.value) and "row 2" in str(err.value) and field in str(err.value)
    )


def test_load_wmdp_bad_subset_missing_file_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'physics'"):
        load_wmdp(tmp_path, "physics")
    with pytest.raises(FileNotFoundError, match=r"wmdp-chem\.json"):
        load_wmdp(tmp_path, "chem")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no-such-org/wmdp"):  # BenchmarkUnavailableError
        load_wmdp("no-such-org/wmdp", "bio")


def _mmlu(tmp_path, rows: str, subject="anatomy", split="test"):
    (tmp_path / split).mkdir(exist_ok=True)
    (tmp_path / split / f"{subject}_{split}.csv").write_text(HEADER + rows)
    return tmp_path


def test_load_mmlu_good_files_keep_string_choices_and_subject_order(tmp_path):
    _mmlu(tmp_path, '"Q1, with comma",0,1,"0,1",2,3\n', subject="anatomy")
    _mmlu(tmp_path, "Q2,a,b,c,d,0\n", subject="abstract_algebra")
    items = load_mmlu(tmp_path, "test", subjects=["anatomy", "abstract_algebra"])
    assert [it.question for it in items] == ["Q1, with comma", "Q2"]
    assert items[0].choices == ("0", "1", "0,1", "2") and items[0].answer == 3
    assert items[0].subject == "anatomy" and items[0].source.endswith("anatomy_test.csv:0")


@pytest.mark.parametrize(
    "row, field",
    [
        ("Q,a,b,c,d,4\n", "field 'answer'"),
        ("Q,a,b,c,d,B\n", "field 'answer'"),
        ("Q,a,,c,d,1\n", "field 'choices' item 1"),
        (",a,b,c,d,1\n", "field 'question'"),
        ("Q,a,b,c\n", "columns"),
    ],
)
def test_load_mmlu_bad_row_names_file_row_and_field(tmp_path, row, field):
    _mmlu(tmp_path, "Q,a,b,c,d,0\n" + row)
    with pytest.raises(ValueError) as err:
        load_mmlu(tmp_path, subjects=["anatomy"])
    assert (
        "anatomy_test.csv" in str(err.value)
        and "row 1" in str(err.value)
        and field in str(err.value)
    )


def test_load_mmlu_bad_subject_header_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="'astrology'"):
        load_mmlu(tmp_path, subjects=["astrology"])
    with pytest.raises(FileNotFoundError, match=r"virology_test\.csv"):
        load_mmlu(tmp_path, subjects=["virology"])
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "anatomy_test.csv").write_text("question,a,b\nQ,1,2\n")
    with pytest.raises(ValueError, match=r"anatomy_test.csv.*missing field\(s\) \['choice0'"):
        load_mmlu(tmp_path, subjects=["anatomy"])


def test_select_items_is_seeded_ordered_subset():
    items = _items(40)
    a, b = select_items(items, 10, seed=3), select_items(items, 10, seed=3)
    assert a == b and len(a) == 10
    positions = [items.index(it) for it in a]
    assert positions == sorted(positions)  # original order kept
    assert select_items(items, 10, seed=4) != a
    assert select_items(items, None) == items and select_items(items, 100) == items
    assert select_items(items, 0) == []
    with pytest.raises(ValueError, match="-1"):
        select_items(items, -1)


def test_shared_data_loads(shared_data):
    wmdp = load_wmdp(shared_data / "wmdp", "bio")
    mmlu = load_mmlu(shared_data / "mmlu", "dev", subjects=["abstract_algebra", "virology"])
    assert len(wmdp) == 1273 and len(mmlu) == 10
    spread = {it.subject for it in select_items(load_mmlu(shared_data / "mmlu"), 200)}
    assert len(spread) >= 30  # a seeded subset of the subject-ordered list spans the subjects
