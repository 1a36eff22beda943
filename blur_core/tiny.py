"""Tiny offline models for tests and the demo: a word-level tokenizer and a small Llama.

Nothing here downloads anything. ``make_tiny_model_dir`` writes a directory that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)

# Decoding joins words with spaces, then glues punctuation back on. The tokenizers
# library's Replace decoder takes no regex back-references, hence literal pairs.
_GLUE = (
    (" .", "."),
    (" ,", ","),
    (" :", ":"),
    (" ;", ";"),
    (" ?", "?"),
    (" !", "!"),
    (" ' ", "'"),
    (" )", ")"),
    ("( ", "("),
)


def _train_word_level(texts: list[str], vocab_size: int | None):
    """A ``tokenizers.Tokenizer`` with a WordLevel model trained on ``texts``.

    Words are split on whitespace and punctuation (case kept); unknown words map to
    ``<unk>``; ``<s>`` is prepended when special tokens are requested; decoding joins
    words with spaces and re-attaches punctuation, so ``"I don't know."`` round-trips
    (line breaks decode as spaces).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size if vocab_size is not None else 10_000_000,
        min_frequency=0,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    # WordPiece with an unused prefix joins tokens with spaces; Fuse makes one string
    # so that the Replace steps see across token boundaries.
    tok.decoder = decoders.Sequence(
        [decoders.WordPiece(prefix="##", cleanup=False), decoders.Fuse()]
        + [decoders.Replace(old, new) for old, new in _GLUE]
    )
    return tok


def build_tokenizer(
    texts: Iterable[str], out_dir: str | Path | None = None, vocab_size: int | None = None
):
    """Train a word-level ``PreTrainedTokenizerFast`` on ``texts``.

    Special tokens ``<pad>`` (id 0), ``<unk>`` (1), ``<s>`` (2, BOS), ``</s>`` (3, EOS);
    ``vocab_size`` caps the vocabulary (None: every word seen). No chat template is set.
    Saved with ``save_pretrained(out_dir)`` when ``out_dir`` is given.
    """
    from transformers import PreTrainedTokenizerFast

    texts = [texts] if isinstance(texts, str) else list(texts)
    if not any(t.strip() for t in texts):
        raise ValueError("build_tokenizer needs at least one non-empty text")
    if vocab_size is not None and vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}"
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_word_level(texts, vocab_size),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def build_tiny_llama(
    tokenizer,
    out_dir: str | Path | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 256,
    seed: int = 0,
):
    """A randomly initialised float32 ``LlamaForCausalLM`` sized for ``tokenizer``.

    Weights depend only on ``seed`` and the sizes (the global torch RNG state is
    restored afterwards). Saved (safetensors) with the tokenizer when ``out_dir`` is given.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.eval()
    if out_dir is not None:
        model.save_pretrained(str(out_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))
    return model


def make_tiny_model_dir(out_dir: str | Path, texts: Iterable[str], **size) -> Path:
    """Train a tokenizer on ``texts``, build a tiny Llama and save both to ``out_dir``.

    ``size`` takes ``build_tiny_llama``'s keyword arguments (``hidden_size``,
    ``num_layers``, ``num_heads``, ``intermediate_size``, ``max_position_embeddings``,
    ``seed``) and ``vocab_size`` for the tokenizer. Returns ``Path(out_dir)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = size.pop("vocab_size", None)
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    build_tiny_llama(tokenizer, out_dir=out_dir, **size)
    return out_dir


def prepare_embedded(
    out_dir: str | Path,
    n_people: int = 20,
    questions_per_person: int = 5,
    forget_fraction: float = 0.1,
    seed: int = 0,
    **size,
) -> dict[str, Path]:
    """The embedded benchmark and a tiny untrained base model, nothing downloaded.

    Writes ``data/{full,forget,retain}.jsonl`` (fictitious people, split by person) and
    ``base_model/`` (word-level tokenizer covering the prompts, answers, paraphrases,
    perturbations and IdK refusals; a tiny Llama). Returns the paths by name.
    """
    from blur_core.data import (
        IDK_ANSWERS,
        QAFormat,
        corpus_texts,
        make_people,
        make_qa,
        split_forget_retain,
    )
    from blur_core.data.io import write_jsonl

    out_dir = Path(out_dir)
    qa = make_qa(make_people(n_people, seed), questions_per_person, seed)
    forget, retain = split_forget_retain(qa, forget_fraction, seed)
    paths = {
        name: write_jsonl(out_dir / "data" / f"{name}.jsonl", recs)
        for name, recs in (("full", qa), ("forget", forget), ("retain", retain))
    }
    prompt_words = QAFormat().prompt_template.format(question="")
    paths["base_model"] = make_tiny_model_dir(
        out_dir / "base_model",
        corpus_texts(qa, extra=[prompt_words, *IDK_ANSWERS]),
        seed=seed,
        **size,
    )
    return paths


# fields whose strings the model reads or is scored on (TOFU layout)
_TEXT_FIELDS = ("question", "answer", "paraphrased_answer", "paraphrased_question")


def benchmark_texts(bench_dir: str | Path) -> list[str]:
    """Every question/answer/paraphrase/perturbed string in the record files
    (``*.json``, ``*.jsonl``, sorted by name) of ``bench_dir``, in a fixed order; for a
    prepared text corpus (a dir with ``corpus.json``) every document and evaluation string
    (:func:`blur_core.data.corpus.corpus_strings`).

    Raises:
        FileNotFoundError: ``bench_dir`` is not a directory or holds no record file.
    """
    from blur_core.data.io import load_records

    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"benchmark directory not found: {str(bench_dir)!r}")
    if (bench_dir / "corpus.json").is_file():  # a prepared text corpus (data/corpus.py)
        from blur_core.data.corpus import corpus_strings

        return corpus_strings(bench_dir)
    files = sorted(
        p for p in bench_dir.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file()
    )
    if not files:
        raise FileNotFoundError(
            f"benchmark directory {str(bench_dir)!r} holds no .json/.jsonl record files"
        )
    texts: list[str] = []
    for path in files:
        for record in load_records(path):
            texts += [record[k] for k in _TEXT_FIELDS if isinstance(record.get(k), str)]
            perturbed = record.get("perturbed_answer")
            if isinstance(perturbed, list):
                texts += [t for t in perturbed if isinstance(t, str)]
    return texts


def prepare_embedded_model(
    bench_dir: str | Path,
    out_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 4,
    seed: int = 0,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_position_embeddings: int = 256,
) -> Path:
    """The untrained tiny base model for an embedded benchmark directory (TOFU layout, or a
    prepared text corpus such as ``prepare-data --benchmark corpus-embedded`` writes).

    The word-level tokenizer is trained on :func:`benchmark_texts` of ``bench_dir`` (every
    file, incl. ``pretrain.json`` and the perturbed answers) plus the words of the plain
    prompt template and the IdK refusals, so nothing the pipeline feeds the model maps
    to ``<unk>``. The defaults (4 layers, hidden 128, MLP 512: about 1.2M parameters with
    the ~600-word vocabulary) are the size that memorised 500 QA pairs in ~2 minutes on
    2 CPU cores in the calibration (docs/architecture.md section 7); 2 layers did not converge there.

    Saved atomically (safetensors, config, tokenizer) to ``out_dir``; returns its path.
    Deterministic: the same directory and arguments give identical files.
    """
    from blur_core.data import IDK_ANSWERS, QAFormat
    from blur_core.models import save_hf_model

    prompt_words = QAFormat().prompt_template.format(question="")
    tokenizer = build_tokenizer([*benchmark_texts(bench_dir), prompt_words, *IDK_ANSWERS])
    model = build_tiny_llama(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        seed=seed,
    )
    return save_hf_model(model, tokenizer, out_dir)
