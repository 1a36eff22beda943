"""Benchmark data: record I/O, QA and raw-text datasets, collation, and the embedded
fictitious-people benchmark.

Submodules import torch; importing this package has no other side effects.
"""

from blur_core.data.collate import IGNORE_INDEX, pad_collate
from blur_core.data.embedded import (
    ATTRIBUTE_KEYS,
    corpus_texts,
    make_people,
    make_qa,
    split_forget_retain,
)
from blur_core.data.io import ACCEPTED_EXTENSIONS, load_records, require_fields, write_jsonl
from blur_core.data.qa import (
    IDK_ANSWERS,
    QADataset,
    QAFormat,
    encode_answer,
    encode_prompt,
    encode_qa,
    idk_answer,
)
from blur_core.data.text import TextChunkDataset

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "ATTRIBUTE_KEYS",
    "IDK_ANSWERS",
    "IGNORE_INDEX",
    "QADataset",
    "QAFormat",
    "TextChunkDataset",
    "corpus_texts",
    "encode_answer",
    "encode_prompt",
    "encode_qa",
    "idk_answer",
    "load_records",
    "make_people",
    "make_qa",
    "pad_collate",
    "require_fields",
    "split_forget_retain",
    "write_jsonl",
]
