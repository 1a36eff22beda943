"""The MUSE-News benchmark (Shi et al. 2024, ``muse-bench/MUSE-News``): loading and validating it.

Local layout (the shared copy, as in MUSE's ``data/news``)::

    knowmem/forget_qa.json, forget_qa_icl.json      [{question, answer}]
    knowmem/retain2_qa.json, retain2_qa_icl.json    [{question, answer}]   (or retain_qa*.json)
    verbmem/forget.json                             [{prompt, gt}]
    privleak/forget.json, retain2.json, holdout.json  [str]                (or retain.json)
    raw/forget.txt                                  plain text (the forget corpus)
    raw/retain1.txt | raw/retain.txt | raw/extra_news.txt   plain text (retain corpus; first found)

:func:`load_muse` reads a directory in that layout, or, when ``source`` is not an existing
path, the hub dataset id (``muse-bench/MUSE-News``, configs ``knowmem``/``verbmem``/
``privleak``/``raw``) through ``datasets`` (imported only then; offline, a
:class:`~blur_core.data.tofu.BenchmarkUnavailableError` names the id). Every record is
checked: a missing or non-string field, or an empty file, raises ``ValueError`` naming the
file, the index and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from blur_core.data.tofu import BenchmarkUnavailableError

__all__ = ["MUSE_NEWS_HUB_ID", "MuseData", "load_muse", "validate_muse_records"]

MUSE_NEWS_HUB_ID = "muse-bench/MUSE-News"

# attribute -> (candidate local files, first found; record kind)
_LOCAL_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    "knowmem_forget": (("knowmem/forget_qa.json",), "qa"),
    "knowmem_forget_icl": (("knowmem/forget_qa_icl.json",), "qa"),
    "knowmem_retain": (("knowmem/retain2_qa.json", "knowmem/retain_qa.json"), "qa"),
    "knowmem_retain_icl": (("knowmem/retain2_qa_icl.json", "knowmem/retain_qa_icl.json"), "qa"),
    "verbmem_forget": (("verbmem/forget.json",), "verbmem"),
    "privleak_forget": (("privleak/forget.json",), "text"),
    "privleak_retain": (("privleak/retain2.json", "privleak/retain.json"), "text"),
    "privleak_holdout": (("privleak/holdout.json",), "text"),
}
_RAW_FORGET = ("raw/forget.txt",)
_RAW_RETAIN = ("raw/retain1.txt", "raw/retain.txt", "raw/extra_news.txt")

# attribute -> (hub config, hub split); MUSE's hub splits (not verifiable offline)
_HUB_SPLITS: dict[str, tuple[str, str]] = {
    "knowmem_forget": ("knowmem", "forget_qa"),
    "knowmem_forget_icl": ("knowmem", "forget_qa_icl"),
    "knowmem_retain": ("knowmem", "retain_qa"),
    "knowmem_retain_icl": ("knowmem", "retain_qa_icl"),
    "verbmem_forget": ("verbmem", "forget"),
    "privleak_forget": ("privleak", "forget"),
    "privleak_retain": ("privleak", "retain"),
    "privleak_holdout": ("privleak", "holdout"),
}
_FIELDS = {"qa": ("question", "answer"), "verbmem": ("prompt", "gt")}


@dataclass(frozen=True)
class MuseData:
    """MUSE-News evaluation sets (lists of records) and the raw training corpora (paths).

    Attributes:
        knowmem_forget / knowmem_retain: ``[{question, answer}]`` (100 each in MUSE-News).
        knowmem_forget_icl / knowmem_retain_icl: in-context examples (10 each).
        verbmem_forget: ``[{prompt, gt}]`` (100).
        privleak_forget / privleak_retain / privleak_holdout: texts (100 each).
        raw_forget / raw_retain: plain-text corpora for training (None if absent).
        source: where the data came from (directory or hub id).
    """

    knowmem_forget: list[dict]
    knowmem_forget_icl: list[dict]
    knowmem_retain: list[dict]
    knowmem_retain_icl: list[dict]
    verbmem_forget: list[dict]
    privleak_forget: list[str]
    privleak_retain: list[str]
    privleak_holdout: list[str]
    raw_forget: Path | None = None
    raw_retain: Path | None = None
    source: str = ""

    def counts(self) -> dict[str, int]:
        """Number of records per set."""
        return {name: len(getattr(self, name)) for name in _LOCAL_FILES}


def validate_muse_records(records, kind: str, where: str) -> list:
    """Check one MUSE file's records; return them as a list.

    ``kind`` is ``"qa"`` (objects with string ``question``/``answer``), ``"verbmem"``
    (string ``prompt``/``gt``) or ``"text"`` (strings). ``where`` names the file in errors.

    Raises:
        ValueError: not a list, empty, a record of the wrong type, or a missing/non-string
            field (naming ``where``, the index and the field).
    """
    if kind not in ("qa", "verbmem", "text"):
        raise ValueError(f"unknown MUSE record kind {kind!r}; expected 'qa', 'verbmem' or 'text'")
    if not isinstance(records, list):
        raise ValueError(f"{where}: expected a JSON list, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{where}: no records (empty list)")
    for i, rec in enumerate(records):
        if kind == "text":
            if not isinstance(rec, str):
                raise ValueError(f"{where}: record {i} must be a string, got {type(rec).__name__}")
            if not rec.strip():
                raise ValueError(f"{where}: record {i} is an empty string")
            continue
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: record {i} must be an object, got {type(rec).__name__}")
        for field in _FIELDS[kind]:
            if field not in rec:
                raise ValueError(f"{where}: record {i} has no field {field!r}")
            if not isinstance(rec[field], str):
                raise ValueError(
                    f"{where}: record {i} field {field!r} must be a string, "
                    f"got {type(rec[field]).__name__}"
                )
    return list(records)


def _first_existing(root: Path, candidates: tuple[str, ...]) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_file()), None)


def _load_local(root: Path) -> MuseData:
    sets = {}
    for attr, (candidates, kind) in _LOCAL_FILES.items():
        path = _first_existing(root, candidates)
        if path is None:
            raise FileNotFoundError(
                f"MUSE data dir {str(root)!r} lacks {' or '.join(candidates)} ({attr})"
            )
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from err
        sets[attr] = validate_muse_records(records, kind, str(path))
    return MuseData(
        **sets,
        raw_forget=_first_existing(root, _RAW_FORGET),
        raw_retain=_first_existing(root, _RAW_RETAIN),
        source=str(root),
    )


def _load_hub(hub_id: str, raw_dir: str | Path | None) -> MuseData:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a dependency
        raise BenchmarkUnavailableError(
            f"{hub_id!r} is not a local directory and `datasets` is not installed to fetch it"
        ) from err
    fetched: dict[str, list] = {}
    raw: dict[str, Path | None] = {"raw_forget": None, "raw_retain": None}
    try:
        for attr, (config, split) in _HUB_SPLITS.items():
            ds = datasets.load_dataset(hub_id, config, split=split)
            fetched[attr] = [r["text"] if _LOCAL_FILES[attr][1] == "text" else dict(r) for r in ds]
        if raw_dir is not None:
            raw_dir = Path(raw_dir)
            raw_dir.mkdir(parents=True, exist_ok=True)
            for attr, split in (("raw_forget", "forget"), ("raw_retain", "retain1")):
                ds = datasets.load_dataset(hub_id, "raw", split=split)
                path = raw_dir / f"{split}.txt"
                path.write_text("\n\n".join(r["text"] for r in ds), encoding="utf-8")
                raw[attr] = path
    except Exception as err:  # offline, unknown id or config, hub failure
        raise BenchmarkUnavailableError(
            f"MUSE data {hub_id!r} is not a local directory and could not be loaded from the hub "
            f"({type(err).__name__}: {err}); with HF_HUB_OFFLINE=1 pass a local copy instead"
        ) from err
    sets = {
        attr: validate_muse_records(
            records, _LOCAL_FILES[attr][1], f"{hub_id}:{'/'.join(_HUB_SPLITS[attr])}"
        )
        for attr, records in fetched.items()
    }
    return MuseData(**sets, **raw, source=hub_id)


def load_muse(source: str | Path, raw_dir: str | Path | None = None) -> MuseData:
    """Load MUSE-News from a local directory (layout in the module docstring) or a hub id.

    Args:
        source: a directory, or (only when no such path exists) a hub dataset id such as
            ``"muse-bench/MUSE-News"``.
        raw_dir: hub only: where to write the raw corpora as ``forget.txt`` / ``retain1.txt``
            (``raw_forget``/``raw_retain`` are None without it).

    Raises:
        FileNotFoundError: a local directory lacking a required file (named).
        BenchmarkUnavailableError: a hub id that cannot be fetched (offline: names the id).
        ValueError: malformed records (file, index and field named).
    """
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise ValueError(
                f"MUSE source {str(path)!r} is a file; expected a directory or a hub id"
            )
        return _load_local(path)
    if str(source).startswith((".", "/")) or str(source).count("/") != 1:
        raise FileNotFoundError(
            f"MUSE data directory not found: {str(source)!r} (and not a hub id "
            f"like {MUSE_NEWS_HUB_ID!r})"
        )
    return _load_hub(str(source), raw_dir)
