"""The TOFU benchmark's file layout (as on the hub, ``locuslab/TOFU``), locating and
validating a copy of it, and materialising it from the hub.

A TOFU benchmark directory holds JSON Lines files named ``.json``::

    full.json                      question, answer            (all 4000 QA)
    forget01/05/10.json            question, answer            (1/5/10 % of the authors)
    retain99/95/90.json            question, answer            (full minus the forget split)
    forget01/05/10_perturbed.json  + paraphrased_answer, perturbed_answer [str, ...]
    retain_perturbed.json          + paraphrased_answer, perturbed_answer (retain subset)
    real_authors_perturbed.json    question, answer, perturbed_answer
    world_facts_perturbed.json     question, answer, perturbed_answer

The embedded benchmark (:func:`blur_core.data.embedded.write_embedded_tofu`) writes the
same layout, so every downstream stage reads one layout. Nothing here imports
``datasets`` unless a hub id is materialised.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from blur_core.atomic import atomic_dir
from blur_core.config import require_int
from blur_core.data.io import load_records, write_jsonl
from blur_core.hub import cached_snapshot, fill_command, hub_cache_dir, is_hub_id, is_offline

__all__ = [
    "FORGET_FRACTIONS",
    "TOFU_ALL_FILES",
    "TOFU_FILE_KEYS",
    "TOFU_HOLDOUT_FILES",
    "TOFU_SPLITS",
    "BenchmarkUnavailableError",
    "link_tofu",
    "resolve_benchmark_root",
    "subset_tofu",
    "tofu_file_names",
    "tofu_files",
    "validate_tofu",
]

TOFU_SPLITS: dict[str, str] = {
    "forget01": "retain99",
    "forget05": "retain95",
    "forget10": "retain90",
}
FORGET_FRACTIONS: dict[str, float] = {"forget01": 0.01, "forget05": 0.05, "forget10": 0.10}

TOFU_FILE_KEYS = (
    "full",
    "forget",
    "retain",
    "forget_perturbed",
    "retain_perturbed",
    "real_authors",
    "world_facts",
)

# every file of the layout (all three splits), as written by the hub and by the embedded benchmark
TOFU_ALL_FILES: tuple[str, ...] = (
    "full.json",
    *(f"{s}.json" for s in TOFU_SPLITS),
    *(f"{s}.json" for s in TOFU_SPLITS.values()),
    *(f"{s}_perturbed.json" for s in TOFU_SPLITS),
    "retain_perturbed.json",
    "real_authors_perturbed.json",
    "world_facts_perturbed.json",
)

# optional: QA about people in no training file (membership-inference non-members)
TOFU_HOLDOUT_FILES: tuple[str, ...] = ("holdout01.json", "holdout05.json", "holdout10.json")

# required fields per file key; perturbed_answer must be a non-empty list of strings
_QA = ("question", "answer")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "full": _QA,
    "forget": _QA,
    "retain": _QA,
    "forget_perturbed": (*_QA, "paraphrased_answer", "perturbed_answer"),
    "retain_perturbed": (*_QA, "paraphrased_answer", "perturbed_answer"),
    "real_authors": (*_QA, "perturbed_answer"),
    "world_facts": (*_QA, "perturbed_answer"),
}


class BenchmarkUnavailableError(FileNotFoundError):
    """A benchmark named by hub id could not be fetched (offline, or the hub failed).

    A ``FileNotFoundError`` so that callers (and the CLI) treat it like missing data.
    """


def _check_split(forget_split: str) -> str:
    if forget_split not in TOFU_SPLITS:
        raise ValueError(
            f"unknown TOFU forget split {forget_split!r}; expected one of {sorted(TOFU_SPLITS)}"
        )
    return TOFU_SPLITS[forget_split]


def tofu_file_names(forget_split: str) -> dict[str, str]:
    """File names of the seven sets one experiment on ``forget_split`` reads, by key
    (``full, forget, retain, forget_perturbed, retain_perturbed, real_authors, world_facts``)."""
    retain_split = _check_split(forget_split)
    return {
        "full": "full.json",
        "forget": f"{forget_split}.json",
        "retain": f"{retain_split}.json",
        "forget_perturbed": f"{forget_split}_perturbed.json",
        "retain_perturbed": "retain_perturbed.json",
        "real_authors": "real_authors_perturbed.json",
        "world_facts": "world_facts_perturbed.json",
    }


def tofu_files(root: str | Path, forget_split: str) -> dict[str, Path]:
    """Paths of the seven sets for ``forget_split`` under ``root`` (see :func:`tofu_file_names`).

    Raises:
        ValueError: unknown ``forget_split``.
        FileNotFoundError: ``root`` is not a directory, or a file is missing (the
            message names every missing file and ``root``).
    """
    root = Path(root)
    names = tofu_file_names(forget_split)
    if not root.is_dir():
        raise FileNotFoundError(f"TOFU benchmark directory not found: {str(root)!r}")
    paths = {key: root / name for key, name in names.items()}
    missing = [name for key, name in names.items() if not paths[key].is_file()]
    if missing:
        raise FileNotFoundError(
            f"TOFU benchmark directory {str(root)!r} lacks {', '.join(missing)} "
            f"(needed for forget split {forget_split!r})"
        )
    return paths


def _check_records(key: str, records: list[dict], path: Path) -> None:
    """Field and type checks for one file; errors name the file, record index and field."""
    if not records:
        raise ValueError(f"{path}: holds no records")
    for index, record in enumerate(records):
        for field in _REQUIRED[key]:
            if field not in record:
                raise ValueError(
                    f"{path}: record {index} is missing field {field!r} (has {sorted(record)})"
                )
            value = record[field]
            if field == "perturbed_answer":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(v, str) and v.strip() for v in value)
                ):
                    raise ValueError(
                        f"{path}: record {index}: field 'perturbed_answer' must be a non-empty "
                        f"list of non-empty strings, got {value!r}"
                    )
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"{path}: record {index}: field {field!r} must be a non-empty string, "
                    f"got {value!r}"
                )


def validate_tofu(root: str | Path, forget_split: str) -> dict[str, int]:
    """Check the seven sets of ``forget_split`` under ``root``; return their record counts.

    Checks every record's required fields (question and answer everywhere; plus
    paraphrased_answer and perturbed_answer on forget/retain_perturbed; plus
    perturbed_answer on real_authors/world_facts), that forget + retain have as many
    records as full, that the forget_perturbed questions are the forget questions (same
    order), and that retain_perturbed shares no question with the forget split.

    Raises:
        FileNotFoundError: missing directory or file (see :func:`tofu_files`).
        ValueError: naming the file, record index and field, or the inconsistency.
    """
    paths = tofu_files(root, forget_split)
    records = {key: load_records(path) for key, path in paths.items()}
    for key, recs in records.items():
        _check_records(key, recs, paths[key])
    counts = {key: len(recs) for key, recs in records.items()}
    if counts["forget"] + counts["retain"] != counts["full"]:
        raise ValueError(
            f"{paths['forget'].name} ({counts['forget']}) + {paths['retain'].name} ({counts['retain']}) "
            f"records != {paths['full'].name} ({counts['full']}) under {str(Path(root))!r}"
        )
    forget_q = [r["question"] for r in records["forget"]]
    perturbed_q = [r["question"] for r in records["forget_perturbed"]]
    if forget_q != perturbed_q:
        first = next(
            (i for i, (a, b) in enumerate(zip(forget_q, perturbed_q)) if a != b),
            min(len(forget_q), len(perturbed_q)),
        )
        raise ValueError(
            f"{paths['forget_perturbed']}: questions differ from {paths['forget'].name} "
            f"({len(perturbed_q)} vs {len(forget_q)} records; first difference at record {first})"
        )
    forget_set = set(forget_q)
    for index, record in enumerate(records["retain_perturbed"]):
        if record["question"] in forget_set:
            raise ValueError(
                f"{paths['retain_perturbed']}: record {index} asks a question of the forget "
                f"split {paths['forget'].name}: {record['question']!r}"
            )
    return counts


def link_tofu(root: str | Path, out_dir: str | Path, copy: bool = False) -> dict[str, Path]:
    """Make ``out_dir`` hold every file of the layout that ``root`` has, as absolute
    symlinks (or copies with ``copy=True``), so that downstream stages read one layout.

    ``full.json`` and the evaluation files of at least one forget split must exist
    (validate with :func:`validate_tofu` first). Returns ``{file stem: path in out_dir}``.
    """
    root = Path(root).resolve()
    present = [name for name in TOFU_ALL_FILES + TOFU_HOLDOUT_FILES if (root / name).is_file()]
    if "full.json" not in present:
        raise FileNotFoundError(f"TOFU benchmark directory {str(root)!r} lacks full.json")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    linked = {}
    for name in present:
        dest = out_dir / name
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        if copy:
            shutil.copyfile(root / name, dest)
        else:
            dest.symlink_to(root / name)
        linked[Path(name).stem] = dest
    return linked


def subset_tofu(out_dir: str | Path, forget_split: str, retain_limit: int) -> dict[str, int]:
    """Cut a prepared benchmark directory (as written by :func:`link_tofu`) down to a
    small-budget study of ``forget_split``: its retain split keeps its first
    ``retain_limit`` records (TOFU orders them by author, 20 QA each, so a multiple of 20
    keeps whole authors), ``full.json`` becomes those plus the whole forget split, and
    ``retain_perturbed.json`` keeps only the questions still in the retain split. The
    forget split, the utility sets and the holdout files are untouched; the other
    splits' files are removed, since they no longer add up to ``full.json``. The cut
    files are written as real files (never through the symlinks), and the choice is
    recorded in ``subset.json``. Validate with :func:`validate_tofu` first.

    Returns the new record counts ``{full, retain, retain_perturbed}``.

    Raises:
        ValueError: unknown split, ``retain_limit`` not a positive integer or not below
            the retain split's size, or no ``retain_perturbed`` question left (the value
            to raise is named).
    """
    _check_split(forget_split)
    require_int("retain_limit", retain_limit)
    out_dir = Path(out_dir)
    paths = tofu_files(out_dir, forget_split)
    retain = load_records(paths["retain"])
    if retain_limit >= len(retain):
        raise ValueError(
            f"retain_limit {retain_limit} keeps all of {paths['retain'].name} "
            f"({len(retain)} records): drop it, or choose a smaller value"
        )
    kept = retain[:retain_limit]
    kept_q = {r["question"] for r in kept}
    perturbed = [r for r in load_records(paths["retain_perturbed"]) if r["question"] in kept_q]
    if not perturbed:
        raise ValueError(
            f"retain_limit {retain_limit}: none of {paths['retain_perturbed'].name}'s questions "
            f"is among the first {retain_limit} records of {paths['retain'].name}; raise it"
        )
    forget = load_records(paths["forget"])
    new = {"retain": kept, "full": kept + forget, "retain_perturbed": perturbed}
    for key, records in new.items():
        dest = paths[key]
        dest.unlink()  # a symlink into the source copy: never write through it
        write_jsonl(dest, records)
    for split, other in TOFU_SPLITS.items():
        if split != forget_split:
            for name in (f"{split}.json", f"{split}_perturbed.json", f"{other}.json"):
                if (out_dir / name).is_symlink() or (out_dir / name).exists():
                    (out_dir / name).unlink()
    counts = {key: len(records) for key, records in new.items()}
    (out_dir / "subset.json").write_text(
        json.dumps({"forget_split": forget_split, "retain_limit": retain_limit, **counts}, indent=2)
        + "\n"
    )
    return counts


def _default_cache_dir(hub_id: str) -> Path:
    base = os.environ.get("BLUR_CACHE") or Path.home() / ".cache" / "blur"
    return Path(base) / "benchmarks" / hub_id.replace("/", "__")


def resolve_benchmark_root(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A directory in the TOFU layout for ``source``.

    * an existing local directory is returned as is;
    * a hub id (``owner/name``, e.g. ``"locuslab/TOFU"``) whose dataset repo is in the Hugging
      Face hub cache with the layout's JSON files at its root (what ``hf download
      locuslab/TOFU --repo-type dataset`` gives; :mod:`blur_core.hub`) is read from that
      snapshot directory, online or offline;
    * otherwise a hub id is materialised into
      ``cache_dir`` (default ``$BLUR_CACHE/benchmarks/<owner>__<name>``, ``$BLUR_CACHE``
      defaulting to ``~/.cache/blur``) with ``datasets.load_dataset(id, <file stem>,
      split="train")`` for every file of the layout, written as JSON Lines ``.json``
      files; a complete earlier copy there is reused.

    Raises:
        FileNotFoundError: ``source`` looks like a path but does not exist.
        BenchmarkUnavailableError: the hub id could not be loaded (e.g. offline); the
            message names the id and suggests passing a local directory.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(
            f"benchmark source {text!r} is a file; expected a directory or a hub id"
        )
    if not is_hub_id(text):
        raise FileNotFoundError(
            f"benchmark directory not found: {text!r} (and it is not a hub id like 'locuslab/TOFU')"
        )
    snapshot = cached_snapshot(text, "dataset")
    if snapshot is not None and all((snapshot / n).is_file() for n in TOFU_ALL_FILES):
        return snapshot
    dest = Path(cache_dir) if cache_dir is not None else _default_cache_dir(text)
    if (dest / ".complete").is_file() and all((dest / n).is_file() for n in TOFU_ALL_FILES):
        return dest
    if is_offline():
        # datasets' own cache may still hold it (an earlier online load_dataset); the error
        # below names the command that fills the hub cache
        hint = f"`{fill_command(text, 'dataset')}` where there is internet (same HF_HOME)"
        try:
            return _materialise_hub(text, dest)
        except BenchmarkUnavailableError as exc:
            raise BenchmarkUnavailableError(
                f"{exc}; or fill the Hugging Face cache ({hub_cache_dir()}): {hint}"
            ) from None
    return _materialise_hub(text, dest)


def _materialise_hub(hub_id: str, dest: Path) -> Path:
    """Download every file of the layout from ``hub_id`` into ``dest`` (atomically)."""
    hint = (
        f"pass a local directory in the TOFU layout instead (e.g. a copy such as "
        f"../shared/data/tofu), or run once with network access to cache it under {str(dest)!r}"
    )
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a pinned dependency
        raise BenchmarkUnavailableError(
            f"cannot load {hub_id!r} from the hub: the 'datasets' package is not installed; {hint}"
        ) from err
    with atomic_dir(dest) as tmp:
        for name in TOFU_ALL_FILES:
            config = Path(name).stem
            try:
                ds = datasets.load_dataset(hub_id, config, split="train")
            except Exception as err:  # offline, unknown id, hub errors: one clear message
                raise BenchmarkUnavailableError(
                    f"cannot load benchmark {hub_id!r} (config {config!r}) from the Hugging Face hub "
                    f"({type(err).__name__}: {err}); {hint}"
                ) from err
            write_jsonl(tmp / name, ds.to_list())
        (tmp / ".complete").write_text(f"{hub_id}\n")
    return dest
