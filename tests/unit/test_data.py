"""Unit tests for blur_core.data: record I/O, QA/text datasets, collation and the
embedded fictitious-people benchmark. Uses a tiny word-level tokenizer, no downloads."""

from __future__ import annotations

import json

import pytest
import torch

from blur_core.data import (
    IDK_ANSWERS,
    IGNORE_INDEX,
    QADataset,
    QAFormat,
    TextChunkDataset,
    corpus_texts,
    encode_prompt,
    encode_qa,
    idk_answer,
    load_records,
    make_people,
    make_qa,
    pad_collate,
    require_fields,
    split_forget_retain,
    write_jsonl,
)
from blur_core.tiny import build_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<s> User: {{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %} Assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def qa_records():
    return make_qa(make_people(6, seed=1), questions_per_person=4, seed=1)


@pytest.fixture(scope="module")
def tokenizer(qa_records):
    extra = ["Question: Answer: User: Assistant:", *IDK_ANSWERS]
    return build_tokenizer(corpus_texts(qa_records, extra))


@pytest.fixture
def chat_tokenizer(qa_records):
    tok = build_tokenizer(corpus_texts(qa_records, ["User: Assistant:"]))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _labelled_text(tokenizer, enc):
    ids = [t for t in enc["labels"] if t != IGNORE_INDEX]
    return tokenizer.decode(ids, skip_special_tokens=True)


# --------------------------------------------------------------------------- io


def test_jsonl_round_trip(tmp_path):
    records = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "ä2"}]
    path = write_jsonl(tmp_path / "sub" / "r.jsonl", records)
    assert load_records(path) == records


def test_json_list_and_wrapped_object(tmp_path):
    records = [{"a": 1}, {"a": 2}]
    (tmp_path / "l.json").write_text(json.dumps(records))
    (tmp_path / "w.json").write_text(json.dumps({"data": records}))
    assert load_records(tmp_path / "l.json") == records
    assert load_records(tmp_path / "w.json") == records


def test_json_object_with_several_keys_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"a": [], "b": []}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_records(path)


def test_json_lines_in_json_file(tmp_path):
    """The TOFU files on the hub are JSON Lines with a .json extension."""
    records = [
        {"question": "q1", "answer": "a1", "perturbed_answer": ["x", "y"]},
        {"question": "q2", "answer": "a2"},
    ]
    path = tmp_path / "forget01.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    assert load_records(path) == records
    assert load_records(write_jsonl(tmp_path / "w.json", records)) == records
    # a single JSON Lines record (even one holding a list of strings) is one record
    one = tmp_path / "one.json"
    one.write_text(json.dumps(records[0]) + "\n")
    assert load_records(one) == [records[0]]


def test_json_lines_in_json_file_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "retain90.json"
    path.write_text('{"question": "q1"}\n{"question": "q2"}\n{"question": }\n')
    with pytest.raises(ValueError, match=r"retain90\.json: line 3: invalid JSON"):
        load_records(path)
    path.write_text('{"question": "q1"}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"retain90\.json: line 3: expected a JSON object"):
        load_records(path)


def test_json_wrapper_and_pretty_object_still_rejected(tmp_path):
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps({"question": "q", "answer": "a"}, indent=2))
    with pytest.raises(ValueError, match=r"pretty\.json"):
        load_records(path)
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"a": 1}], "meta": [{"b": 2}]}))
    with pytest.raises(ValueError, match=r"wrapped\.json"):
        load_records(wrapped)


def test_txt_is_one_record(tmp_path):
    (tmp_path / "doc.txt").write_text("line one\nline two\n")
    assert load_records(tmp_path / "doc.txt") == [{"text": "line one\nline two\n"}]


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_records(path)


def test_bad_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2"):
        load_records(path)


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"a": 1},\n{"a": }\n]')
    with pytest.raises(ValueError, match=r"broken\.json: line 3"):
        load_records(path)


def test_unknown_extension_names_path_and_accepted(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n")
    with pytest.raises(ValueError) as err:
        load_records(path)
    assert "table.csv" in str(err.value) and ".jsonl" in str(err.value)


def test_require_fields_names_file_index_field():
    records = [{"question": "q", "answer": "a"}, {"question": "q"}]
    require_fields(records[:1], ["question", "answer"], "x.jsonl")
    with pytest.raises(ValueError) as err:
        require_fields(records, ["question", "answer"], "x.jsonl")
    msg = str(err.value)
    assert "x.jsonl" in msg and "record 1" in msg and "'answer'" in msg


# --------------------------------------------------------------------------- qa


def test_encode_qa_plain_template_labels_only_answer(tokenizer, qa_records):
    rec = qa_records[0]
    enc = encode_qa(tokenizer, rec["question"], rec["answer"], QAFormat(), max_length=128)
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == len(labels)
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == labels[-1] == tokenizer.eos_token_id
    n_prompt = len(encode_prompt(tokenizer, rec["question"], QAFormat()))
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert _labelled_text(tokenizer, enc) == rec["answer"]
    prompt_text = tokenizer.decode(ids[:n_prompt], skip_special_tokens=True)
    assert prompt_text == f"Question: {rec['question']} Answer:"


def test_encode_qa_chat_template(chat_tokenizer, qa_records):
    rec = qa_records[1]
    enc = encode_qa(chat_tokenizer, rec["question"], rec["answer"], QAFormat(), max_length=128)
    ids, labels = enc["input_ids"], enc["labels"]
    prompt = chat_tokenizer(
        "<s> User: " + rec["question"] + " Assistant:", add_special_tokens=False
    )
    n_prompt = len(prompt["input_ids"])
    assert ids[:n_prompt] == prompt["input_ids"]
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert all(t != IGNORE_INDEX for t in labels[n_prompt:])
    assert _labelled_text(chat_tokenizer, enc) == rec["answer"]
    # the plain template is not used when a chat template is present
    question_id = chat_tokenizer.convert_tokens_to_ids("Question")
    assert question_id == chat_tokenizer.unk_token_id or question_id not in ids


def test_chat_template_forced_off_and_forced_on(tokenizer, chat_tokenizer, qa_records):
    rec = qa_records[0]
    off = encode_qa(
        chat_tokenizer, rec["question"], rec["answer"], QAFormat(use_chat_template=False)
    )
    assert off["input_ids"][0] == chat_tokenizer.bos_token_id
    with pytest.raises(ValueError, match="chat_template"):
        encode_qa(tokenizer, rec["question"], rec["answer"], QAFormat(use_chat_template=True))


def test_encode_qa_truncates_answer_from_right(tokenizer, qa_records):
    rec = qa_records[0]
    n_prompt = len(encode_prompt(tokenizer, rec["question"]))
    enc = encode_qa(tokenizer, rec["question"], rec["answer"], max_length=n_prompt + 2)
    assert len(enc["input_ids"]) == len(enc["labels"]) == n_prompt + 2
    assert sum(t != IGNORE_INDEX for t in enc["labels"]) == 2
    assert tokenizer.eos_token_id not in enc["labels"]


def test_encode_qa_prompt_too_long_names_example(tokenizer, qa_records):
    question = " ".join([qa_records[0]["question"]] * 5)
    n_prompt = len(encode_prompt(tokenizer, question))
    with pytest.raises(ValueError) as err:
        encode_qa(tokenizer, question, "x", max_length=n_prompt)
    msg = str(err.value)
    assert f"max_length={n_prompt}" in msg
    assert question[:40] in msg and question not in msg


def test_qa_dataset_items(tokenizer, qa_records):
    ds = QADataset(qa_records, tokenizer, max_length=64)
    assert len(ds) == len(qa_records)
    item = ds[3]
    assert item["index"] == 3
    assert item["input_ids"].dtype == torch.long and item["labels"].dtype == torch.long
    assert item["input_ids"].shape == item["labels"].shape
    labelled = item["labels"][item["labels"] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(labelled, skip_special_tokens=True) == qa_records[3]["answer"]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_qa_dataset_idk_override(tokenizer, qa_records):
    ds = QADataset(qa_records, tokenizer, max_length=64, answer_override=idk_answer)
    for i in range(len(ds)):
        labels = ds[i]["labels"]
        text = tokenizer.decode(labels[labels != IGNORE_INDEX].tolist(), skip_special_tokens=True)
        assert text == IDK_ANSWERS[i % len(IDK_ANSWERS)]
    assert idk_answer(0, {}) == idk_answer(len(IDK_ANSWERS), {})
    assert len(set(IDK_ANSWERS)) == len(IDK_ANSWERS) >= 8


def test_qa_dataset_missing_field(tokenizer):
    with pytest.raises(ValueError, match=r"record 1.*'answer'"):
        QADataset([{"question": "a", "answer": "b"}, {"question": "c"}], tokenizer)


# --------------------------------------------------------------------------- text


def test_text_chunks(tokenizer, qa_records):
    texts = [r["answer"] for r in qa_records]
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    ds = TextChunkDataset(texts, tokenizer, max_length=32)
    full, rest = divmod(n_tokens, 32)
    assert len(ds) == full + (1 if rest >= 16 else 0)
    for i in range(full):
        assert ds[i]["input_ids"].shape == (32,)
        assert torch.equal(ds[i]["input_ids"], ds[i]["labels"])
        assert ds[i]["index"] == i
    eos = tokenizer.eos_token_id
    assert (torch.cat([ds[i]["input_ids"] for i in range(len(ds))]) == eos).sum() >= full


def test_text_chunks_keeps_short_last_and_only_chunk(tokenizer):
    short = TextChunkDataset(["In which year"], tokenizer, max_length=32)
    assert len(short) == 1 and short[0]["input_ids"].shape == (4,)  # 3 words + EOS
    # 5 x (3 words + EOS) = 20 tokens with max_length 4: five full chunks, no tail
    ds = TextChunkDataset(["In which year"] * 5, tokenizer, max_length=4)
    assert [len(ds[i]["input_ids"]) for i in range(len(ds))] == [4] * 5
    ds = TextChunkDataset(["In which year"] * 5, tokenizer, max_length=6)
    # 20 tokens = 3 x 6 + 2 -> the 2-token tail (< 16) is dropped
    assert [len(ds[i]["input_ids"]) for i in range(len(ds))] == [6, 6, 6]


# --------------------------------------------------------------------------- collate


def test_pad_collate():
    items = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]), "index": 4},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "index": 9},
    ]
    batch = pad_collate(items, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["index"].tolist() == [4, 9]
    assert all(v.dtype == torch.long for v in batch.values())


def test_pad_collate_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        pad_collate([], pad_token_id=0)


def test_pad_collate_on_dataset(tokenizer, qa_records):
    ds = QADataset(qa_records[:5], tokenizer, max_length=64)
    batch = pad_collate([ds[i] for i in range(5)], tokenizer.pad_token_id)
    lengths = [len(ds[i]["input_ids"]) for i in range(5)]
    assert batch["input_ids"].shape == (5, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths


# --------------------------------------------------------------------------- embedded


def _dump(obj):
    return json.dumps(obj, sort_keys=False).encode()


def test_embedded_deterministic():
    a = make_qa(make_people(20, seed=3), 5, seed=3)
    b = make_qa(make_people(20, seed=3), 5, seed=3)
    c = make_qa(make_people(20, seed=4), 5, seed=4)
    assert _dump(a) == _dump(b)
    assert _dump(a) != _dump(c)
    assert split_forget_retain(a, 0.2, seed=0) == split_forget_retain(b, 0.2, seed=0)


def test_embedded_people_and_questions():
    people = make_people(30, seed=0)
    assert [p["id"] for p in people] == list(range(30))
    assert len({p["name"] for p in people}) == 30
    qa = make_qa(people, questions_per_person=5, seed=0)
    assert len(qa) == 150
    for rec in qa:
        assert {"question", "answer", "paraphrased_answer", "perturbed_answer", "person"} <= set(
            rec
        )
        assert len(rec["perturbed_answer"]) >= 3
        assert rec["answer"] not in rec["perturbed_answer"]
        assert len(set(rec["perturbed_answer"])) == len(rec["perturbed_answer"])
        assert rec["paraphrased_answer"] != rec["answer"]
        assert people[rec["person"]]["name"] in rec["question"]
    # distinct attributes per person
    by_person = {}
    for rec in qa:
        by_person.setdefault(rec["person"], []).append(rec["question"])
    assert all(len(set(qs)) == 5 for qs in by_person.values())


def test_embedded_bad_arguments():
    with pytest.raises(ValueError, match="n_people"):
        make_people(0, seed=0)
    with pytest.raises(ValueError, match="questions_per_person"):
        make_qa(make_people(2, seed=0), questions_per_person=99)
    qa = make_qa(make_people(4, seed=0), 2)
    with pytest.raises(ValueError, match="forget_fraction"):
        split_forget_retain(qa, 1.5)
    with pytest.raises(ValueError, match="forget_fraction"):
        split_forget_retain(qa, 0.99)


def test_split_by_person():
    qa = make_qa(make_people(20, seed=0), 5, seed=0)
    forget, retain = split_forget_retain(qa, 0.1, seed=7)
    forget_people = {r["person"] for r in forget}
    retain_people = {r["person"] for r in retain}
    assert len(forget_people) == 2
    assert not forget_people & retain_people
    assert len(forget) == 10 and len(forget) + len(retain) == len(qa)
    other_seeds = [{r["person"] for r in split_forget_retain(qa, 0.1, seed=s)[0]} for s in range(8)]
    assert len({tuple(sorted(p)) for p in other_seeds}) > 1  # the seed picks the people


def test_embedded_vocabulary_is_small():
    qa = make_qa(make_people(100, seed=0), 5, seed=0)
    tok = build_tokenizer(corpus_texts(qa, ["Question: Answer:"]))
    assert len(tok) < 600
    assert tok.unk_token_id not in tok("Question: " + qa[0]["question"])["input_ids"]


# ----------------------------------------------------------------------------- prompt formats


class _RecordingTokenizer:
    """Records what the encoders hand to the tokenizer (text, chat messages, template kwargs)."""

    chat_template = "{{ messages }}"
    eos_token_id = 0

    def __init__(self):
        self.calls = []

    def __call__(self, text, add_special_tokens=True):
        self.calls.append(("text", text, add_special_tokens))
        return {"input_ids": [len(w) + 1 for w in text.split()] or [1]}

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, **kwargs):
        self.calls.append(("chat", messages, add_generation_prompt, kwargs))
        return [7] * len(messages)


def test_open_unlearning_llama3_prompt_has_system_message_and_date():
    from blur_core.data.qa import encode_answer, encode_prompt, prompt_format

    tok = _RecordingTokenizer()
    fmt = prompt_format("open-unlearning-llama3")
    assert encode_prompt(tok, "Who?", fmt) == [7, 7]
    kind, messages, gen, kwargs = tok.calls[-1]
    assert kind == "chat" and gen is True
    assert messages == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Who?"},
    ]
    assert kwargs == {"date_string": "10 Apr 2025"}
    encode_answer(tok, "An author.", fmt)
    assert tok.calls[-1] == ("text", "An author.", False)  # no prefix after a chat template


def test_tofu_llama2_prompt_puts_the_answer_right_after_inst():
    from blur_core.data.qa import encode_answer, encode_prompt, prompt_format

    tok = _RecordingTokenizer()
    fmt = prompt_format("tofu-llama2")
    encode_prompt(tok, "Who?", fmt)
    assert tok.calls[-1] == ("text", "[INST] Who? [/INST]", True)
    encode_answer(tok, "An author.", fmt)
    assert tok.calls[-1] == ("text", "An author.", False)  # asst_start_tag "" as the original


def test_plain_and_auto_formats():
    from blur_core.data.qa import QAFormat, encode_prompt, prompt_format

    tok = _RecordingTokenizer()
    encode_prompt(tok, "Q?", prompt_format("plain"))
    assert tok.calls[-1] == ("text", "Question: Q?\nAnswer:", True)
    encode_prompt(tok, "Q?", prompt_format("auto"))  # the tokenizer has a chat template
    assert tok.calls[-1][0] == "chat" and len(tok.calls[-1][1]) == 1
    assert prompt_format("auto") == QAFormat()
    with pytest.raises(ValueError, match=r"unknown prompt format 'llama9'; known formats: \["):
        prompt_format("llama9")
