"""Text-corpus unlearning benchmarks: one prepared layout, the loaders that write it from
MUSE-News and the WMDP corpora, and its validation.

Prepared layout (written by ``python -m blur_core prepare-data --benchmark
muse|wmdp|corpus-embedded``; every stage downstream reads only this)::

    corpus.json        {"layout": 1, "kind", "source", "forget": {...}, "retain": {...},
                        "training": {the RunConfig ``data:`` keys this corpus is meant for},
                        "evaluation": {...}}
    forget.jsonl       {"text": str}, one document per line: the forget corpus
    retain.jsonl       {"text": str}: the retain corpus
    knowmem/forget_qa.json, forget_qa_icl.json, retain_qa.json, retain_qa_icl.json
    verbmem/forget.json
    privleak/forget.json, retain.json, holdout.json
                       MUSE-format evaluation sets (kinds ``muse`` and ``corpus-embedded``):
                       :func:`blur_core.data.muse.load_muse` reads the prepared dir as is
    mc/forget.json, mc/retain.json
                       4-way questions ``[{question, choices: [4 str], answer: int}]``
                       (``corpus-embedded``; :func:`load_corpus_mc`)

Sources:

* **MUSE-News** (``muse-bench/MUSE-News`` or a local copy in its layout): forget =
  ``raw/forget.txt``; retain = ``raw/retain1.txt`` or ``raw/retain2.txt`` when present,
  else ``raw/extra_news.txt`` (or a name or file given). A raw file is stored as its
  paragraphs (split on ``"\\n\\n"``, so that joining them with ``"\\n\\n"`` gives the file's
  text back exactly); the training defaults are MUSE's chunking (``text_chunking: muse``,
  2048 tokens: BOS + 2047 tokens, stride 2047, no overlap; :mod:`blur_core.data.text`).
* **WMDP corpora** (``cais/wmdp-corpora`` layout): forget = ``bio-forget-corpus.jsonl`` or
  ``cyber-forget-corpus.jsonl`` (JSON lines with a ``text`` field); retain = the matching
  ``*-retain-corpus.jsonl``, WikiText-2 (raw, test split, as the RMU code uses) or a given
  file. As in the RMU code (``centerforaisafety/wmdp`` ``rmu/utils.py``), documents of
  ``min_chars`` characters or fewer are dropped (RMU's ``--min_len``, default 0), and a
  document is one example truncated on the right: 512 tokens for bio, 768 for cyber, 512
  for the retain corpus (``text_chunking: document``). Two of RMU's quirks are *not*
  copied: it reads the cyber corpus's raw JSON lines (braces and the ``"text"`` key
  included) as the text, where this reads the ``text`` field; and it left-pads and averages
  its activation loss over padding too, where padding here is never scored.

A source that is not an existing path is a hub id: its splits go through
:func:`hub_split_texts`, the one function that talks to the hub (cached under
``$BLUR_CACHE/benchmarks/``, so an offline machine can reuse a copy made online).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blur_core.atomic import atomic_dir, atomic_write_text
from blur_core.data.io import write_jsonl
from blur_core.data.tofu import BenchmarkUnavailableError

__all__ = [
    "CORPUS_KINDS",
    "CORPUS_LAYOUT_VERSION",
    "MUSE_EVAL_FILES",
    "WMDP_FORGET_MAX_LENGTH",
    "CorpusInfo",
    "corpus_data_config",
    "corpus_strings",
    "hub_split_texts",
    "load_corpus_mc",
    "load_texts",
    "prepare_muse_corpus",
    "prepare_wmdp_corpus",
    "read_corpus_info",
    "read_text_jsonl",
    "split_paragraphs",
    "training_defaults",
    "validate_corpus",
    "verbmem_paragraphs",
    "write_corpus",
]

CORPUS_LAYOUT_VERSION = 1
CORPUS_KINDS = ("muse", "wmdp", "corpus-embedded")
INFO_FILE = "corpus.json"
FORGET_FILE = "forget.jsonl"
RETAIN_FILE = "retain.jsonl"

# MuseData attribute -> file in the prepared layout (names load_muse accepts)
MUSE_EVAL_FILES: dict[str, str] = {
    "knowmem_forget": "knowmem/forget_qa.json",
    "knowmem_forget_icl": "knowmem/forget_qa_icl.json",
    "knowmem_retain": "knowmem/retain_qa.json",
    "knowmem_retain_icl": "knowmem/retain_qa_icl.json",
    "verbmem_forget": "verbmem/forget.json",
    "privleak_forget": "privleak/forget.json",
    "privleak_retain": "privleak/retain.json",
    "privleak_holdout": "privleak/holdout.json",
}
MC_FILES: dict[str, str] = {"forget": "mc/forget.json", "retain": "mc/retain.json"}

EMBEDDED_MAX_LENGTH = 128  # corpus-embedded: a report is ~60-70 word-level tokens
MUSE_MAX_LENGTH = 2048  # MUSE's MAX_LEN for News (baselines/scripts/unlearn_news.sh)
MUSE_HUB_RETAIN = ("retain1", "retain2")
MUSE_LOCAL_RETAIN = ("retain1", "retain2", "extra_news")
WMDP_SUBSETS = ("bio", "cyber")
WMDP_FORGET_MAX_LENGTH: dict[str, int] = {"bio": 512, "cyber": 768}  # RMU's unlearn.py
WMDP_RETAIN_MAX_LENGTH = 512
WMDP_CORPORA_HUB_ID = "cais/wmdp-corpora"
WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def training_defaults(kind: str, subset: str = "bio") -> dict[str, Any]:
    """The RunConfig ``data:`` keys a corpus kind trains with (written into ``corpus.json``
    and used by the pipeline before the data exists): MUSE's chunking for ``muse``
    (2048 tokens), RMU's per-document truncation for ``wmdp`` (512 bio / 768 cyber forget,
    512 retain), one example per report of at most 128 tokens for ``corpus-embedded``."""
    if kind == "muse":
        return {"format": "text", "text_chunking": "muse", "max_length": MUSE_MAX_LENGTH}
    if kind == "wmdp":
        if subset not in WMDP_SUBSETS:
            raise ValueError(f"unknown WMDP subset {subset!r}; expected one of {WMDP_SUBSETS}")
        return {
            "format": "text",
            "text_chunking": "document",
            "max_length": WMDP_RETAIN_MAX_LENGTH,
            "forget_max_length": WMDP_FORGET_MAX_LENGTH[subset],
            "retain_max_length": WMDP_RETAIN_MAX_LENGTH,
        }
    if kind == "corpus-embedded":
        return {"format": "text", "text_chunking": "document", "max_length": EMBEDDED_MAX_LENGTH}
    raise ValueError(f"unknown corpus kind {kind!r}; expected one of {CORPUS_KINDS}")


# ----------------------------------------------------------------------------- reading


def read_text_jsonl(path: str | Path, field: str = "text") -> list[str]:
    """The ``field`` strings of a JSON Lines file, one per non-blank line.

    Raises:
        FileNotFoundError: no such file (named).
        ValueError: naming the file and the (1-based) line: a line that is not JSON
            ("not JSON lines"), not an object, lacks ``field``, or whose ``field`` is
            not a non-empty string; or a file with no records ("empty").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {str(path)!r}")
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}: line {line_no}: not JSON lines (invalid JSON: {err.msg}); "
                    f"expected one object with a {field!r} field per line"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{path}: line {line_no}: expected a JSON object with a {field!r} field, "
                    f"got {type(obj).__name__}"
                )
            if field not in obj:
                raise ValueError(
                    f"{path}: line {line_no}: missing field {field!r} (has {sorted(obj)})"
                )
            value = obj[field]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"{path}: line {line_no}: field {field!r} must be a non-empty string, "
                    f"got {value!r:.80}"
                )
            texts.append(value)
    if not texts:
        raise ValueError(f"{path}: empty corpus file (no records)")
    return texts


def load_texts(path: str | Path, field: str = "text") -> list[str]:
    """The documents of one corpus file, by extension:

    * ``.jsonl``: :func:`read_text_jsonl` (errors name the line);
    * ``.json``: a JSON list of objects with ``field``, or of strings (errors name the
      record index), or JSON Lines in a ``.json`` file (errors name the line);
    * ``.txt``: the whole file as one document.

    Raises:
        FileNotFoundError, ValueError: naming the file and line / record and field; an
            empty file or a blank document is an error.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_text_jsonl(path, field)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {str(path)!r}")
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"{path}: empty corpus file")
        return [text]
    if suffix != ".json":
        raise ValueError(
            f"cannot read a corpus from {str(path)!r}: unknown extension {path.suffix!r}; "
            "accepted: .jsonl, .json, .txt"
        )
    raw = path.read_text(encoding="utf-8")
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several documents on several lines: JSON Lines
            return read_text_jsonl(path, field)
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(records, dict):  # one JSON Lines record
        return read_text_jsonl(path, field)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of documents, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{path}: empty corpus file (no records)")
    texts = []
    for index, rec in enumerate(records):
        value = rec.get(field, None) if isinstance(rec, dict) else rec
        if isinstance(rec, dict) and field not in rec:
            raise ValueError(
                f"{path}: record {index} is missing field {field!r} (has {sorted(rec)})"
            )
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"{path}: record {index}: field {field!r} must be a non-empty string, "
                f"got {value!r:.80}"
            )
        texts.append(value)
    return texts


def split_paragraphs(text: str) -> list[str]:
    """Split a raw corpus file into paragraphs so that ``"\\n\\n".join(result) == text``.

    Splits at every ``"\\n\\n"`` followed by a character other than a newline (a run of
    blank lines stays inside the paragraph before it); a piece that would be blank is
    merged into its neighbour, so no paragraph is blank (a text with leading blank lines
    keeps them in its first paragraph).

    Raises:
        ValueError: ``text`` is blank.
    """
    if not text.strip():
        raise ValueError("cannot split a blank text into paragraphs")
    merged: list[str] = []
    for piece in re.split(r"\n\n(?=[^\n])", text):
        if merged and not (piece.strip() and merged[-1].strip()):
            merged[-1] = f"{merged[-1]}\n\n{piece}"  # keep the join exact
        else:
            merged.append(piece)
    return merged


# ----------------------------------------------------------------------------- the hub


def _hub_cache_file(hub_id: str, config: str | None, split: str, cache_dir) -> Path:
    from blur_core.data.tofu import _default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir(hub_id)
    return root / (config or "default") / f"{split}.jsonl"


def hub_split_texts(
    hub_id: str,
    config: str | None,
    split: str,
    field: str = "text",
    cache_dir: str | Path | None = None,
) -> list[str]:
    """The ``field`` strings of one split of a hub dataset (blank ones dropped).

    The split is materialised once as JSON Lines ``{field: ...}`` in the offline cache
    (``<cache_dir or $BLUR_CACHE/benchmarks/<owner>__<name>>/<config>/<split>.jsonl``) and
    read from there afterwards, so a copy made online serves offline runs.

    Raises:
        BenchmarkUnavailableError: not cached and the hub cannot be reached (offline,
            unknown id, config or split, a gated dataset); the message names all three.
    """
    cached = _hub_cache_file(hub_id, config, split, cache_dir)
    if cached.is_file():
        return read_text_jsonl(cached, field)
    try:
        import datasets

        rows = datasets.load_dataset(hub_id, config, split=split)
        texts = [r[field] for r in rows if isinstance(r.get(field), str) and r[field].strip()]
    except Exception as err:  # offline, gated, unknown id/config/split: one clear message
        raise BenchmarkUnavailableError(
            f"cannot load {hub_id!r} (config {config!r}, split {split!r}) from the Hugging Face "
            f"hub ({type(err).__name__}: {err}); pass a local copy instead, or run once with "
            f"network access to cache it at {str(cached)!r}"
        ) from err
    if not texts:
        raise ValueError(f"{hub_id}/{config}/{split}: no non-empty {field!r} values")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".tmp")
    write_jsonl(tmp, [{field: t} for t in texts])
    tmp.replace(cached)
    return texts


def _is_hub_id(source: str | Path) -> bool:
    text = str(source)
    return not Path(text).expanduser().exists() and bool(_HUB_ID.match(text))


def _local_dir(source: str | Path, what: str) -> Path:
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} directory not found: {str(source)!r} (and it is not a hub id like "
            f"'owner/name')"
        )
    return path


# ----------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class CorpusInfo:
    """What ``corpus.json`` of a prepared corpus dir says (see the module docstring).

    Attributes:
        root: the prepared directory.
        kind: ``muse``, ``wmdp`` or ``corpus-embedded``.
        forget / retain: paths of ``forget.jsonl`` / ``retain.jsonl``.
        training: the ``data:`` keys of a RunConfig this corpus is meant for
            (``format``, ``text_chunking``, ``max_length``, maybe per-set lengths).
        muse_eval: whether ``knowmem/``, ``verbmem/``, ``privleak/`` are there
            (``load_muse(root)`` reads them).
        mc: ``{"forget": path, "retain": path}`` of the 4-way question files, if any.
        meta: the whole ``corpus.json``.
    """

    root: Path
    kind: str
    forget: Path
    retain: Path
    training: dict[str, Any]
    muse_eval: bool
    mc: dict[str, Path]
    meta: dict[str, Any]


def write_corpus(
    out_dir: str | Path,
    kind: str,
    source: str,
    forget: Sequence[str],
    retain: Sequence[str],
    training: dict[str, Any],
    *,
    forget_from: str = "",
    retain_from: str = "",
    muse_eval: dict[str, list] | None = None,
    mc: dict[str, list[dict]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a prepared corpus dir atomically (it appears whole or not at all).

    ``muse_eval`` maps :data:`MUSE_EVAL_FILES` keys to record lists; ``mc`` maps
    ``forget``/``retain`` to question lists. ``extra`` goes into ``corpus.json`` as is.
    The result is validated (:func:`validate_corpus`) before it is moved into place.
    Returns ``Path(out_dir)``.

    Raises:
        ValueError: an unknown ``kind``, an empty corpus, or (from validation) a bad record.
    """
    if kind not in CORPUS_KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; expected one of {CORPUS_KINDS}")
    for name, texts in (("forget", forget), ("retain", retain)):
        if not texts:
            raise ValueError(f"the {name} corpus holds no documents (from {source})")
    out_dir = Path(out_dir)
    info: dict[str, Any] = {
        "layout": CORPUS_LAYOUT_VERSION,
        "kind": kind,
        "source": str(source),
        "forget": _set_info(FORGET_FILE, forget, forget_from),
        "retain": _set_info(RETAIN_FILE, retain, retain_from),
        "training": dict(training),
        "evaluation": {
            "muse": sorted(MUSE_EVAL_FILES.values()) if muse_eval else [],
            "mc": sorted(MC_FILES[k] for k in (mc or {})),
        },
        **(extra or {}),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / FORGET_FILE, [{"text": t} for t in forget])
        write_jsonl(tmp / RETAIN_FILE, [{"text": t} for t in retain])
        for key, records in (muse_eval or {}).items():
            _write_json(tmp / MUSE_EVAL_FILES[key], records)
        for key, records in (mc or {}).items():
            _write_json(tmp / MC_FILES[key], records)
        atomic_write_text(tmp / INFO_FILE, json.dumps(info, indent=2) + "\n")
        validate_corpus(tmp)
    return out_dir


def _set_info(name: str, texts: Sequence[str], origin: str) -> dict[str, Any]:
    return {
        "file": name,
        "documents": len(texts),
        "characters": sum(len(t) for t in texts),
        "from": origin,
    }


def _write_json(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def read_corpus_info(root: str | Path) -> CorpusInfo:
    """Read ``corpus.json`` of a prepared corpus dir (files are checked to exist, not read).

    Raises:
        FileNotFoundError: no such dir, no ``corpus.json`` (the dir is not a prepared
            corpus), or a file it names is missing.
        ValueError: a malformed ``corpus.json`` (the key is named).
    """
    root = Path(root)
    path = root / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(root)!r} is not a prepared corpus dir (no {INFO_FILE}); write one with "
            "python -m blur_core prepare-data --benchmark muse|wmdp|corpus-embedded"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("layout") != CORPUS_LAYOUT_VERSION:
        raise ValueError(
            f"{path}: layout {meta.get('layout')!r}; this version reads layout "
            f"{CORPUS_LAYOUT_VERSION} (prepare the data again)"
        )
    if meta.get("kind") not in CORPUS_KINDS:
        raise ValueError(f"{path}: kind {meta.get('kind')!r} is not one of {CORPUS_KINDS}")
    for key in ("training", "evaluation"):
        if not isinstance(meta.get(key), dict):
            raise ValueError(f"{path}: key {key!r} must be an object")
    evaluation = meta["evaluation"]
    files = [FORGET_FILE, RETAIN_FILE, *evaluation.get("muse", []), *evaluation.get("mc", [])]
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"prepared corpus {str(root)!r} lacks {', '.join(missing)}")
    mc = {k: root / v for k, v in MC_FILES.items() if v in evaluation.get("mc", [])}
    return CorpusInfo(
        root=root,
        kind=meta["kind"],
        forget=root / FORGET_FILE,
        retain=root / RETAIN_FILE,
        training=dict(meta["training"]),
        muse_eval=bool(evaluation.get("muse")),
        mc=mc,
        meta=meta,
    )


def corpus_data_config(root: str | Path, **overrides: Any) -> dict[str, Any]:
    """The ``data:`` section of a RunConfig that trains on a prepared corpus: forget and
    retain files, ``format: text`` and the corpus's chunking defaults; ``overrides``
    (e.g. ``max_length=256``) replace keys. Pass ``retain=[forget, retain]`` style lists
    yourself for fine-tuning on both corpora."""
    info = read_corpus_info(root)
    return {
        "forget": str(info.forget),
        "retain": str(info.retain),
        **info.training,
        **overrides,
    }


def load_corpus_mc(root: str | Path, which: str):
    """The 4-way questions of a prepared corpus (``which``: ``forget`` or ``retain``) as
    :class:`~blur_core.data.mc.MCItem` s with subject ``corpus_<which>``.

    Raises:
        ValueError: unknown ``which``, or a bad record (file, row and field named).
        FileNotFoundError: the corpus has no such file.
    """
    from blur_core.data.mc import _check_record

    if which not in MC_FILES:
        raise ValueError(f"unknown question set {which!r}; expected one of {sorted(MC_FILES)}")
    path = Path(root) / MC_FILES[which]
    if not path.is_file():
        raise FileNotFoundError(f"no 4-way question file {str(path)!r} in this corpus")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of questions")
    return [_check_record(r, f"{path}: row {i}", f"corpus_{which}") for i, r in enumerate(records)]


def validate_corpus(root: str | Path) -> dict[str, int]:
    """Check a prepared corpus dir: ``corpus.json``, every record of ``forget.jsonl`` and
    ``retain.jsonl`` (file and line named on error), the MUSE evaluation sets through
    :func:`~blur_core.data.muse.load_muse` and the 4-way questions. Returns record counts
    (``forget``, ``retain``, then one per evaluation set).
    """
    info = read_corpus_info(root)
    counts = {
        "forget": len(read_text_jsonl(info.forget)),
        "retain": len(read_text_jsonl(info.retain)),
    }
    for name in ("forget", "retain"):
        declared = info.meta[name].get("documents")
        if declared != counts[name]:
            raise ValueError(
                f"{info.root / INFO_FILE}: {name}.documents = {declared} but "
                f"{getattr(info, name)} holds {counts[name]} records"
            )
    if info.muse_eval:
        from blur_core.data.muse import load_muse

        counts.update(load_muse(info.root).counts())
    for which in info.mc:
        counts[f"mc_{which}"] = len(load_corpus_mc(info.root, which))
    return counts


def corpus_strings(root: str | Path) -> list[str]:
    """Every string of a prepared corpus dir that a model reads or is scored on, in a
    fixed order: the forget and retain documents, then the MUSE evaluation sets
    (questions, answers, prompts, ground truths, passages) and the 4-way questions and
    choices. A tokenizer trained on these covers the whole benchmark."""
    info = read_corpus_info(root)
    texts = read_text_jsonl(info.forget) + read_text_jsonl(info.retain)
    if info.muse_eval:
        from blur_core.data.muse import load_muse

        data = load_muse(info.root)
        for key in MUSE_EVAL_FILES:
            for rec in getattr(data, key):
                texts += [rec] if isinstance(rec, str) else [str(v) for v in rec.values()]
    for which in info.mc:
        for item in load_corpus_mc(info.root, which):
            texts += [item.question, *item.choices]
    return texts


# ----------------------------------------------------------------------------- MUSE-News


def _limit(texts: list[str], n: int | None, what: str) -> list[str]:
    if n is None:
        return texts
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return texts[:n]


def verbmem_paragraphs(paragraphs: Sequence[str], verbmem: Sequence[dict], n: int) -> list[str]:
    """The paragraphs (in corpus order) that hold the passages of the first ``n`` VerbMem items
    (each item's ``prompt`` + ``gt``, located in the corpus text): a forget corpus sized for a
    small budget that still holds exactly what VerbMem measures. Items whose prompt is not found
    verbatim are skipped (2 of MUSE-News's 100).

    Raises:
        ValueError: ``n`` is not a positive integer, or no item was found.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"forget_verbmem must be a positive integer, got {n!r}")
    text = "\n\n".join(paragraphs)
    starts, pos = [], 0
    for p in paragraphs:  # character offset of each paragraph in the joined text
        starts.append(pos)
        pos += len(p) + 2
    keep: set[int] = set()
    for item in verbmem[:n]:
        at = text.find(item["prompt"])
        if at < 0:
            continue
        end = at + len(item["prompt"]) + len(item.get("gt", ""))
        for i, s in enumerate(starts):
            if s < end and s + len(paragraphs[i]) > at:
                keep.add(i)
    if not keep:
        raise ValueError(f"none of the first {n} VerbMem passages occurs in the forget corpus")
    return [paragraphs[i] for i in sorted(keep)]


def _read_raw_paragraphs(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path}: empty corpus file")
    return split_paragraphs(text)


def _muse_texts(source: str | Path, split: str, cache_dir) -> tuple[list[str], str]:
    """Paragraphs of MUSE's raw ``split`` (a local ``raw/<split>.txt`` or the hub's
    ``raw`` config), and where they came from."""
    if _is_hub_id(source):
        docs = hub_split_texts(str(source), "raw", split, cache_dir=cache_dir)
        return split_paragraphs("\n\n".join(docs)), f"{source}:raw/{split}"
    path = _local_dir(source, "MUSE") / "raw" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"MUSE raw corpus not found: {str(path)!r}")
    return _read_raw_paragraphs(path), f"raw/{split}.txt"


def _muse_retain(source: str | Path, retain: str | None, cache_dir) -> tuple[list[str], str]:
    if retain is None:  # the first that exists
        names = MUSE_HUB_RETAIN if _is_hub_id(source) else MUSE_LOCAL_RETAIN
        if not _is_hub_id(source):
            raw = _local_dir(source, "MUSE") / "raw"
            present = [n for n in names if (raw / f"{n}.txt").is_file()]
            if not present:
                raise FileNotFoundError(
                    f"MUSE dir {str(source)!r} has no retain corpus: none of "
                    f"{', '.join(f'raw/{n}.txt' for n in names)}; pass one with retain="
                )
            names = tuple(present)
        return _muse_texts(source, names[0], cache_dir)
    path = Path(retain).expanduser()
    if path.suffix in (".txt", ".jsonl", ".json") and path.is_file():
        texts = load_texts(path)
        if path.suffix == ".txt":
            texts = split_paragraphs(texts[0])
        return texts, str(path)
    if "/" in retain or "." in retain:
        raise FileNotFoundError(f"MUSE retain corpus file not found: {retain!r}")
    return _muse_texts(source, retain, cache_dir)


def prepare_muse_corpus(
    source: str | Path,
    out_dir: str | Path,
    retain: str | None = None,
    forget_docs: int | None = None,
    retain_docs: int | None = None,
    cache_dir: str | Path | None = None,
    forget_verbmem: int | None = None,
) -> dict[str, int]:
    """Write MUSE-News as a prepared corpus (layout in the module docstring).

    Args:
        source: a local MUSE-News dir (``raw/``, ``knowmem/``, ``verbmem/``, ``privleak/``)
            or a hub id (``muse-bench/MUSE-News``).
        retain: None (the first of ``raw/retain1.txt``, ``raw/retain2.txt``,
            ``raw/extra_news.txt`` that exists; on the hub ``retain1``), a raw split name
            (``retain1``, ``retain2``, ``extra_news``, ``holdout``) or a text file
            (``.txt`` split into paragraphs; ``.jsonl``/``.json`` with ``text``).
        forget_docs / retain_docs: keep only the first N paragraphs (a CPU-sized slice).
        forget_verbmem: keep only the forget paragraphs that hold the first N VerbMem
            passages (:func:`verbmem_paragraphs`; a small forget corpus that VerbMem with
            ``limit: N`` still measures); applied before ``forget_docs``.

    The evaluation sets (KnowMem, VerbMem, PrivLeak) are validated by
    :func:`~blur_core.data.muse.load_muse` and written with the layout's file names. The
    training defaults are MUSE's: ``text_chunking: muse`` with ``max_length: 2048``.
    Returns the record counts of the result.
    """
    from blur_core.data.muse import load_muse

    forget, forget_from = _muse_texts(source, "forget", cache_dir)
    retain_texts, retain_from = _muse_retain(source, retain, cache_dir)
    data = load_muse(source)
    if forget_verbmem is not None:
        forget = verbmem_paragraphs(forget, data.verbmem_forget, forget_verbmem)
        forget_from += f" (the paragraphs of the first {forget_verbmem} VerbMem passages)"
    forget = _limit(forget, forget_docs, "forget_docs")
    retain_texts = _limit(retain_texts, retain_docs, "retain_docs")
    muse_eval = {key: list(getattr(data, key)) for key in MUSE_EVAL_FILES}
    training = training_defaults("muse")
    write_corpus(
        out_dir,
        "muse",
        str(source),
        forget,
        retain_texts,
        training,
        forget_from=forget_from,
        retain_from=retain_from,
        muse_eval=muse_eval,
        extra={"documents_are": "paragraphs of the raw files (joined with a blank line: the file)"},
    )
    return validate_corpus(out_dir)


# ----------------------------------------------------------------------------- WMDP


def _wmdp_corpus(source: str | Path, name: str, cache_dir) -> tuple[list[str], str]:
    """``<name>.jsonl`` of a local cais/wmdp-corpora copy, or the hub config ``name``."""
    if _is_hub_id(source):
        try:
            return hub_split_texts(str(source), name, "train", cache_dir=cache_dir), (
                f"{source}:{name}"
            )
        except BenchmarkUnavailableError as err:
            if name == "bio-forget-corpus":
                raise BenchmarkUnavailableError(
                    f"{err}. Note: bio-forget-corpus is not public on the hub; the WMDP "
                    "authors share it on request (see the WMDP README), then pass the "
                    "directory holding bio-forget-corpus.jsonl"
                ) from err
            raise
    path = _local_dir(source, "WMDP corpora") / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"WMDP corpus file not found: {str(path)!r}")
    return read_text_jsonl(path), path.name


def _wikitext_rows(path: Path) -> list[str]:
    """WikiText rows from a local file: ``.parquet`` (the hub's files), ``.txt`` (one row
    per line, e.g. ``wiki.test.raw`` renamed), or ``.jsonl``/``.json`` with ``text``."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise ValueError(f"{path}: no 'text' column (has {table.column_names})")
        return [t for t in table.column("text").to_pylist() if isinstance(t, str)]
    if path.suffix == ".txt":
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    return load_texts(path)


def _wmdp_retain(
    source: str | Path, subset: str, retain: str, cache_dir
) -> tuple[list[str], str, bool]:
    """(texts, origin, blank rows allowed). ``retain``: ``corpus``, ``wikitext`` or a path."""
    if retain == "corpus":
        texts, origin = _wmdp_corpus(source, f"{subset}-retain-corpus", cache_dir)
        return texts, origin, False
    if retain == "wikitext":
        hub_id, config, split = WIKITEXT_HUB
        return (
            hub_split_texts(hub_id, config, split, cache_dir=None),
            (f"{hub_id}:{config}/{split}"),
            True,
        )
    path = Path(retain).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"WMDP retain corpus {retain!r}: not 'corpus', 'wikitext' or an existing file"
        )
    return _wikitext_rows(path), str(path), True


def prepare_wmdp_corpus(
    source: str | Path,
    out_dir: str | Path,
    subset: str = "bio",
    retain: str = "corpus",
    min_chars: int = 0,
    forget_docs: int | None = None,
    retain_docs: int | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, int]:
    """Write one WMDP unlearning corpus as a prepared corpus (layout in the module docstring).

    Args:
        source: a dir holding the ``cais/wmdp-corpora`` files (``bio-forget-corpus.jsonl``,
            ``cyber-forget-corpus.jsonl``, ``*-retain-corpus.jsonl``) or that hub id.
        subset: ``bio`` or ``cyber``.
        retain: ``corpus`` (``<subset>-retain-corpus.jsonl``), ``wikitext`` (WikiText-2
            raw, test split, from the hub cache: what RMU uses) or a local file
            (``.parquet`` with a ``text`` column, ``.txt`` one row per line, ``.jsonl``).
        min_chars: drop documents of ``min_chars`` characters or fewer (RMU's ``min_len``,
            default 0). Blank retain rows (WikiText's empty lines) are always dropped.
        forget_docs / retain_docs: keep only the first N documents.

    Training defaults: ``text_chunking: document``, forget truncated to 512 (bio) / 768
    (cyber) tokens, retain to 512. Evaluation is the WMDP / MMLU multiple-choice suites
    on their own data (not part of this dir). Returns the record counts.
    """
    if subset not in WMDP_SUBSETS:
        raise ValueError(f"unknown WMDP corpus subset {subset!r}; expected one of {WMDP_SUBSETS}")
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"min_chars must be an integer >= 0, got {min_chars!r}")
    forget, forget_from = _wmdp_corpus(source, f"{subset}-forget-corpus", cache_dir)
    retain_texts, retain_from, lenient = _wmdp_retain(source, subset, retain, cache_dir)
    forget = [t for t in forget if len(t) > min_chars]
    retain_texts = [t for t in retain_texts if len(t) > min_chars and (t.strip() or not lenient)]
    forget = _limit(forget, forget_docs, "forget_docs")
    retain_texts = _limit(retain_texts, retain_docs, "retain_docs")
    training = training_defaults("wmdp", subset)
    write_corpus(
        out_dir,
        "wmdp",
        str(source),
        forget,
        retain_texts,
        training,
        forget_from=forget_from,
        retain_from=retain_from,
        extra={"subset": subset, "min_chars": min_chars},
    )
    return validate_corpus(out_dir)
