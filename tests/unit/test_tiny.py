"""Unit tests for blur_core.tiny: offline word-level tokenizer and tiny Llama."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from blur_core.tiny import build_tiny_llama, build_tokenizer, make_tiny_model_dir

TEXTS = [
    "Question: In which city does Kalin Tovekson live?\nAnswer: Kalin Tovekson lives in Arden.",
    "I don't know. I'm not sure, really!",
    "The favourite colour of Mira Belson is blue.",
]
SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TEXTS)


def test_special_tokens(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (2, 3)
    assert not tokenizer.chat_template


def test_tokenizer_round_trip(tokenizer):
    sentence = "I don't know. Kalin Tovekson lives in Arden, really!"
    ids = tokenizer(sentence)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == sentence
    assert tokenizer(sentence, add_special_tokens=False)["input_ids"] == ids[1:]
    # punctuation is split off and case is kept
    assert tokenizer.tokenize("Arden.") == ["Arden", "."]
    assert tokenizer.convert_tokens_to_ids("arden") == tokenizer.unk_token_id


def test_tokenizer_vocab_size_and_errors():
    assert len(build_tokenizer(TEXTS, vocab_size=10)) == 10
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(TEXTS, vocab_size=3)
    with pytest.raises(ValueError, match="non-empty"):
        build_tokenizer(["", "  "])


def test_tiny_llama_config_and_determinism(tokenizer):
    a = build_tiny_llama(tokenizer, seed=0, **SMALL)
    b = build_tiny_llama(tokenizer, seed=0, **SMALL)
    c = build_tiny_llama(tokenizer, seed=1, **SMALL)
    cfg = a.config
    assert cfg.vocab_size == len(tokenizer)
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 2, 3)
    assert cfg.tie_word_embeddings is False
    assert a.lm_head.weight.data_ptr() != a.model.embed_tokens.weight.data_ptr()
    assert all(p.dtype == torch.float32 for p in a.parameters())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_build_does_not_touch_global_rng(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_llama(tokenizer, **SMALL)
    assert torch.equal(torch.rand(3), expected)


def test_bad_head_count(tokenizer):
    with pytest.raises(ValueError, match="num_heads"):
        build_tiny_llama(tokenizer, hidden_size=30, num_heads=4)


def test_model_dir_round_trip(tmp_path, tokenizer):
    out = make_tiny_model_dir(tmp_path / "tiny", TEXTS, seed=5, **SMALL)
    assert (out / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.decode(tok(TEXTS[1])["input_ids"], skip_special_tokens=True) == TEXTS[1]
    reference = build_tiny_llama(tok, seed=5, **SMALL)
    ids = torch.tensor([tok(TEXTS[0])["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_save_load_identical_logits(tmp_path, tokenizer):
    model = build_tiny_llama(tokenizer, out_dir=tmp_path, **SMALL)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded_tok(TEXTS[0])["input_ids"] == tokenizer(TEXTS[0])["input_ids"]
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded.eval()(ids).logits)


# --------------------------------------------------------------------------- embedded base model


@pytest.fixture(scope="module")
def embedded_bench(tmp_path_factory):
    from blur_core.data.embedded import write_embedded_tofu

    out = tmp_path_factory.mktemp("bench")
    write_embedded_tofu(out, n_people=30, questions_per_person=5, seed=2)
    return out


def test_prepare_embedded_model_vocab_covers_benchmark(tmp_path, embedded_bench):
    from blur_core.data import IDK_ANSWERS, QADataset, QAFormat, load_records
    from blur_core.tiny import benchmark_texts, prepare_embedded_model

    out = prepare_embedded_model(
        embedded_bench,
        tmp_path / "base",
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        seed=3,
    )
    tok = AutoTokenizer.from_pretrained(out)
    texts = benchmark_texts(embedded_bench)
    # every file contributes: questions, answers, paraphrases, perturbed answers, pretrain QA
    assert "What colour is grass?" in texts and "green" in texts
    perturbed = load_records(embedded_bench / "forget10_perturbed.json")[0]
    assert perturbed["paraphrased_answer"] in texts and perturbed["perturbed_answer"][2] in texts
    prompt = QAFormat().prompt_template.format(question=perturbed["question"])
    for text in [*texts, *IDK_ANSWERS, prompt]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
    model = AutoModelForCausalLM.from_pretrained(out)
    cfg = model.config
    assert (
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.intermediate_size,
    ) == (32, 1, 2, 64)
    assert cfg.vocab_size == len(tok) < 700
    # the QA pipeline encodes the benchmark without truncation at the usual max_length
    ds = QADataset(load_records(embedded_bench / "full.json"), tok, max_length=64)
    assert max(len(ds[i]["input_ids"]) for i in range(len(ds))) < 40


def test_prepare_embedded_model_deterministic_defaults(tmp_path, embedded_bench):
    from blur_core.tiny import prepare_embedded_model

    a = prepare_embedded_model(embedded_bench, tmp_path / "a")
    b = prepare_embedded_model(embedded_bench, tmp_path / "b")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name
    model = AutoModelForCausalLM.from_pretrained(a)
    cfg = model.config
    # docs/architecture.md section 7: 4 layers at hidden 128 memorised 500 QA; 2 layers did not converge
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (128, 4)
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.6e6
    c = prepare_embedded_model(embedded_bench, tmp_path / "c", seed=1)
    assert (c / "tokenizer.json").read_bytes() == (a / "tokenizer.json").read_bytes()
    assert (c / "model.safetensors").read_bytes() != (a / "model.safetensors").read_bytes()


def test_prepare_embedded_model_errors(tmp_path):
    from blur_core.tiny import prepare_embedded_model

    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_embedded_model(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.json"):
        prepare_embedded_model(tmp_path / "empty", tmp_path / "out")


def test_cli_prepare_model(tmp_path, embedded_bench):
    from blur_core.cli import main

    out = tmp_path / "m"
    assert (
        main(
            [
                "prepare-model",
                "--embedded-bench",
                str(embedded_bench),
                "--out",
                str(out),
                "--hidden-size",
                "32",
                "--layers",
                "2",
                "--heads",
                "2",
                "--intermediate-size",
                "64",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    cfg = AutoModelForCausalLM.from_pretrained(out).config
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (32, 2)
