"""Multiple-choice benchmarks (WMDP, MMLU): loading, schema checks and subsetting.

Local layouts (as in ``../shared/data``)::

    <wmdp dir>/wmdp-{bio,chem,cyber}.json       JSON list of {question, choices: [4 str], answer: int}
    <mmlu dir>/{dev,test}/<subject>_{dev,test}.csv
                                                header: question,choice0,choice1,choice2,choice3,answer
                                                (answer = index 0..3)

A ``source`` that is not an existing path is taken as a hub id (``cais/wmdp`` with
config ``wmdp-bio`` ..., ``cais/mmlu`` with config = subject) and loaded with
``datasets.load_dataset``; ``datasets`` is imported only then.

Every item is an :class:`MCItem` whose ``source`` (``"file:row"``) points back at the
record it came from. Subject names follow lm-evaluation-harness' task names:
``wmdp_bio``/``wmdp_chem``/``wmdp_cyber`` and the 57 MMLU subjects
(``abstract_algebra`` ...); :data:`MC_TOPICS` maps each to the topic that lm-eval's
zero-shot description names ("... about {topic}.").
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from blur_core.data.tofu import BenchmarkUnavailableError

__all__ = [
    "MC_TOPICS",
    "MMLU_SUBJECTS",
    "WMDP_SUBSETS",
    "MCItem",
    "load_mmlu",
    "load_wmdp",
    "mc_topic",
    "select_items",
]

N_CHOICES = 4
WMDP_SUBSETS: dict[str, str] = {"bio": "biology", "chem": "chemistry", "cyber": "cybersecurity"}

# The 57 MMLU subjects of lm-eval's tasks/mmlu/default/mmlu_<subject>.yaml. Their
# descriptions were checked against those yamls (lm-eval 0.4.13): for every subject
# the topic is the subject with underscores replaced by spaces.
MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "business_ethics",
    "clinical_knowledge",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_medicine",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "econometrics",
    "electrical_engineering",
    "elementary_mathematics",
    "formal_logic",
    "global_facts",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_european_history",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_mathematics",
    "high_school_microeconomics",
    "high_school_physics",
    "high_school_psychology",
    "high_school_statistics",
    "high_school_us_history",
    "high_school_world_history",
    "human_aging",
    "human_sexuality",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "machine_learning",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "moral_disputes",
    "moral_scenarios",
    "nutrition",
    "philosophy",
    "prehistory",
    "professional_accounting",
    "professional_law",
    "professional_medicine",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
)

MC_TOPICS: dict[str, str] = {
    **{f"wmdp_{subset}": topic for subset, topic in WMDP_SUBSETS.items()},
    **{subject: subject.replace("_", " ") for subject in MMLU_SUBJECTS},
}


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question.

    Attributes:
        question: the question text (used as ``question.strip()`` in prompts).
        choices: the 4 answer options, in order A, B, C, D.
        answer: index of the correct option, ``0 <= answer < len(choices)``.
        subject: ``wmdp_bio``/``wmdp_chem``/``wmdp_cyber`` or an MMLU subject.
        source: ``"file:row"`` (or ``"hub id/config/split:row"``) for error messages.
    """

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str
    source: str


def mc_topic(subject: str) -> str:
    """The topic lm-eval's description names for ``subject`` (e.g. ``wmdp_bio`` -> ``biology``).

    Raises:
        ValueError: an unknown subject (the message names it).
    """
    try:
        return MC_TOPICS[subject]
    except KeyError:
        raise ValueError(
            f"unknown multiple-choice subject {subject!r}; known: wmdp_bio, wmdp_chem, "
            f"wmdp_cyber and the {len(MMLU_SUBJECTS)} MMLU subjects "
            f"(e.g. {MMLU_SUBJECTS[0]!r})"
        ) from None


def _check_record(rec: object, where: str, subject: str) -> MCItem:
    """Validate one raw record ``{question, choices, answer}`` and build an :class:`MCItem`.

    ``where`` is ``"<file>: row <i>"``; every error message starts with it and names
    the field.
    """
    if not isinstance(rec, dict):
        raise ValueError(
            f"{where}: expected an object with question/choices/answer, got {type(rec).__name__}"
        )
    for field in ("question", "choices", "answer"):
        if field not in rec:
            raise ValueError(f"{where}: missing field {field!r}")
    question = rec["question"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: field 'question' must be a non-empty string, got {question!r}")
    choices = rec["choices"]
    if not isinstance(choices, (list, tuple)) or len(choices) != N_CHOICES:
        raise ValueError(
            f"{where}: field 'choices' must be a list of {N_CHOICES} strings, got {choices!r}"
        )
    for k, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise ValueError(
                f"{where}: field 'choices' item {k} must be a non-empty string, got {choice!r}"
            )
    answer = rec["answer"]
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < N_CHOICES:
        raise ValueError(
            f"{where}: field 'answer' must be an integer in 0..{N_CHOICES - 1}, got {rec['answer']!r}"
        )
    return MCItem(question, tuple(choices), answer, subject, where.replace(": row ", ":"))


def _hub_rows(hub_id: str, config: str, split: str) -> list[dict]:
    """Rows of ``hub_id``/``config``/``split`` via ``datasets.load_dataset``.

    Raises:
        BenchmarkUnavailableError: the dataset could not be loaded (e.g. offline).
    """
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as err:
        raise BenchmarkUnavailableError(
            f"could not load {hub_id!r} (config {config!r}, split {split!r}) from the hub: "
            f"{type(err).__name__}: {err}. Pass a local directory instead "
            "(e.g. ../shared/data/wmdp or ../shared/data/mmlu)"
        ) from err


def load_wmdp(source: str | Path, subset: str) -> list[MCItem]:
    """WMDP questions of one subset (``bio``, ``chem`` or ``cyber``), in file order.

    Args:
        source: a directory holding ``wmdp-<subset>.json``, or a hub id (``cais/wmdp``;
            config ``wmdp-<subset>``, split ``test``) when no such path exists.
        subset: ``bio``, ``chem`` or ``cyber``.

    Returns:
        One :class:`MCItem` per record, subject ``wmdp_<subset>``.

    Raises:
        ValueError: an unknown subset, or a bad record (file, row and field named).
        FileNotFoundError: ``source`` is a directory without the subset's file.
        BenchmarkUnavailableError: a hub id that could not be loaded.
    """
    if subset not in WMDP_SUBSETS:
        raise ValueError(f"unknown WMDP subset {subset!r}; expected one of {sorted(WMDP_SUBSETS)}")
    subject = f"wmdp_{subset}"
    path = Path(source).expanduser()
    if not path.exists():
        rows = _hub_rows(str(source), f"wmdp-{subset}", "test")
        return [
            _check_record(r, f"{source}/wmdp-{subset}/test: row {i}", subject)
            for i, r in enumerate(rows)
        ]
    file = path / f"wmdp-{subset}.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"WMDP file not found: {str(file)!r} (expected wmdp-{subset}.json in {str(path)!r})"
        )
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: invalid JSON at line {err.lineno}: {err.msg}") from err
    if not isinstance(records, list):
        raise ValueError(f"{file}: expected a JSON list of questions, got {type(records).__name__}")
    return [_check_record(r, f"{file}: row {i}", subject) for i, r in enumerate(records)]


def _read_mmlu_csv(file: Path, subject: str) -> list[MCItem]:
    """One MMLU subject file (header ``question,choice0..choice3,answer``)."""
    with file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [
            f
            for f in ("question", *(f"choice{k}" for k in range(N_CHOICES)), "answer")
            if f not in header
        ]
        if missing:
            raise ValueError(f"{file}: header is missing field(s) {missing}; got {header}")
        items = []
        for i, row in enumerate(reader):
            if None in row or any(v is None for v in row.values()):
                raise ValueError(
                    f"{file}: row {i}: expected {len(header)} columns ({','.join(header)})"
                )
            rec = {
                "question": row["question"],
                "answer": row["answer"],
                "choices": [row[f"choice{k}"] for k in range(N_CHOICES)],
            }
            items.append(_check_record(rec, f"{file}: row {i}", subject))
    return items


def load_mmlu(
    source: str | Path, split: str = "test", subjects: Iterable[str] | None = None
) -> list[MCItem]:
    """MMLU questions of ``split`` for ``subjects`` (default: all 57), subject by subject
    in the order given (alphabetical by default), rows in file order.

    Args:
        source: a directory with ``<split>/<subject>_<split>.csv``, or a hub id
            (``cais/mmlu``; config = subject) when no such path exists.
        split: ``test`` or ``dev`` (any split name for a hub id).
        subjects: MMLU subject names (``abstract_algebra`` ...); None = all.

    Raises:
        ValueError: an unknown subject, or a bad row (file, row and field named).
        FileNotFoundError: a missing subject file in a local directory.
        BenchmarkUnavailableError: a hub id that could not be loaded.
    """
    names = list(MMLU_SUBJECTS if subjects is None else subjects)
    if isinstance(subjects, str):
        raise ValueError(f"subjects must be a list of subject names, got the string {subjects!r}")
    unknown = [s for s in names if s not in MMLU_SUBJECTS]
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {unknown}; e.g. {list(MMLU_SUBJECTS[:3])}")
    path = Path(source).expanduser()
    items: list[MCItem] = []
    for subject in names:
        if not path.exists():
            rows = _hub_rows(str(source), subject, split)
            items += [
                _check_record(r, f"{source}/{subject}/{split}: row {i}", subject)
                for i, r in enumerate(rows)
            ]
            continue
        file = path / split / f"{subject}_{split}.csv"
        if not file.is_file():
            raise FileNotFoundError(f"MMLU file not found: {str(file)!r}")
        items += _read_mmlu_csv(file, subject)
    return items


def select_items(items: Sequence[MCItem], limit: int | None, seed: int = 0) -> list[MCItem]:
    """A seeded random subset of ``limit`` items, returned in their original order.

    ``random.Random(seed).sample`` picks the indices, which are then sorted, so a
    subset of a subject-ordered list still spans the subjects and the same
    ``(items, limit, seed)`` always gives the same subset. ``limit=None`` or
    ``limit >= len(items)`` returns all items.

    Raises:
        ValueError: ``limit`` is not None or a non-negative integer.
    """
    if limit is None:
        return list(items)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be None or a non-negative integer, got {limit!r}")
    if limit >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]
