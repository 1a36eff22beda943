"""Benchmark data: record I/O, QA and raw-text datasets, collation, the TOFU hub
layout (locate, validate, materialise), the embedded fictitious-people benchmark
written in that layout, the WMDP / MMLU / MUSE-News evaluation loaders, and the
text-corpus unlearning benchmarks (MUSE-News and WMDP corpora, the embedded corpus) in
one prepared layout (``corpus.py``).

Submodules import torch; importing this package has no other side effects.
"""

from blur_core.data.collate import IGNORE_INDEX, pad_collate
from blur_core.data.corpus import (
    CorpusInfo,
    corpus_data_config,
    load_corpus_mc,
    load_texts,
    prepare_muse_corpus,
    prepare_wmdp_corpus,
    read_corpus_info,
    validate_corpus,
)
from blur_core.data.corpus_embedded import write_embedded_corpus
from blur_core.data.embedded import (
    ATTRIBUTE_KEYS,
    corpus_texts,
    embedded_forget_people,
    make_people,
    make_qa,
    make_real_authors,
    make_world_facts,
    split_forget_retain,
    write_embedded_tofu,
)
from blur_core.data.io import ACCEPTED_EXTENSIONS, load_records, require_fields, write_jsonl
from blur_core.data.mc import MCItem, load_mmlu, load_wmdp, select_items
from blur_core.data.muse import MuseData, load_muse
from blur_core.data.qa import (
    IDK_ANSWERS,
    PROMPT_FORMATS,
    QADataset,
    QAFormat,
    alternate_answers,
    encode_answer,
    encode_prompt,
    encode_qa,
    idk_answer,
    load_refusals,
    prompt_format,
    refusal_answer,
)
from blur_core.data.text import TextChunkDataset
from blur_core.data.tofu import (
    TOFU_SPLITS,
    BenchmarkUnavailableError,
    link_tofu,
    resolve_benchmark_root,
    tofu_files,
    validate_tofu,
)

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "ATTRIBUTE_KEYS",
    "IDK_ANSWERS",
    "IGNORE_INDEX",
    "PROMPT_FORMATS",
    "TOFU_SPLITS",
    "BenchmarkUnavailableError",
    "CorpusInfo",
    "MCItem",
    "MuseData",
    "QADataset",
    "QAFormat",
    "TextChunkDataset",
    "alternate_answers",
    "corpus_data_config",
    "corpus_texts",
    "embedded_forget_people",
    "encode_answer",
    "encode_prompt",
    "encode_qa",
    "idk_answer",
    "link_tofu",
    "load_corpus_mc",
    "load_mmlu",
    "load_muse",
    "load_records",
    "load_refusals",
    "load_texts",
    "load_wmdp",
    "make_people",
    "make_qa",
    "make_real_authors",
    "make_world_facts",
    "pad_collate",
    "prepare_muse_corpus",
    "prepare_wmdp_corpus",
    "prompt_format",
    "read_corpus_info",
    "refusal_answer",
    "require_fields",
    "resolve_benchmark_root",
    "select_items",
    "split_forget_retain",
    "tofu_files",
    "validate_corpus",
    "validate_tofu",
    "write_embedded_corpus",
    "write_embedded_tofu",
    "write_jsonl",
]
