"""Reading and writing small record files (JSON, JSON Lines, plain text).

Every error names the offending file, and where it applies the line number,
record index or field, so that a bad input can be fixed without a debugger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

ACCEPTED_EXTENSIONS = (".json", ".jsonl", ".txt")


def load_records(path: str | Path) -> list[dict]:
    """Load a list of records from ``path``.

    * ``.json``: a list of objects, or an object with exactly one list value
      (e.g. ``{"data": [...]}``); a ``.json`` file that is not a single JSON document
      is read as JSON Lines (the TOFU files on the hub are JSON Lines named ``.json``);
    * ``.jsonl``: one object per non-blank line;
    * ``.txt``: the whole file as one record ``{"text": <contents>}``.

    Raises:
        FileNotFoundError: the file does not exist (the message names the path).
        ValueError: malformed JSON (names the file and line), a record that is not
            an object, or an unknown extension (names the accepted ones). For a
            ``.json`` file that is neither one document nor valid JSON Lines, the
            message names the line of the JSON Lines error when the file looks like
            JSON Lines (several lines, the first a complete object), else the JSON
            document error.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS:
        raise ValueError(
            f"cannot read records from {str(path)!r}: unknown extension {path.suffix!r}; "
            f"accepted extensions are {', '.join(ACCEPTED_EXTENSIONS)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"record file not found: {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    if suffix == ".txt":
        return [{"text": text}]
    if suffix == ".jsonl":
        return _parse_jsonl(text, path)
    return _parse_json(text, path)


def _parse_jsonl(text: str, path: Path) -> list[dict]:
    """Parse JSON Lines text; blank lines are skipped."""
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {line_no}: invalid JSON: {err.msg}") from err
        if not isinstance(obj, dict):
            raise ValueError(
                f"{path}: line {line_no}: expected a JSON object, got {type(obj).__name__}"
            )
        records.append(obj)
    return records


def _looks_like_jsonl(text: str) -> bool:
    """Whether ``text`` starts with a line that is a complete JSON object on its own
    and has more non-blank lines after it (the shape of a JSON Lines file)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return isinstance(json.loads(lines[0]), dict)
    except json.JSONDecodeError:
        return False


def _parse_json(text: str, path: Path) -> list[dict]:
    """Parse a JSON document holding a list of objects (possibly wrapped in one key);
    fall back to JSON Lines when the text is not one document but looks like JSON Lines.

    A single object on a single line that holds no list of objects (so it cannot be a
    wrapper like ``{"data": [...]}``) is a one-record JSON Lines file.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" or _looks_like_jsonl(text):
            # several top-level values: JSON Lines in a .json file (errors name the line)
            return _parse_jsonl(text, path)
        raise ValueError(
            f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"
        ) from err
    if isinstance(obj, dict):
        list_values = [v for v in obj.values() if isinstance(v, list)]
        record_lists = [v for v in list_values if all(isinstance(x, dict) for x in v)]
        if not record_lists and "\n" not in text.strip():
            # one object on one line: a JSON Lines file holding a single record
            # (e.g. {"question": ..., "perturbed_answer": ["...", ...]})
            return [obj]
        if len(list_values) != 1 or len(obj) != 1:
            raise ValueError(
                f"{path}: expected a JSON list of objects or an object with a single "
                f"list value; got an object with keys {sorted(obj)}"
            )
        obj = list_values[0]
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(obj).__name__}")
    for index, record in enumerate(obj):
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: record {index}: expected a JSON object, got {type(record).__name__}"
            )
    return obj


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write ``records`` to ``path`` as JSON Lines (UTF-8, one object per line).

    Parent directories are created. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=False))
            handle.write("\n")
    return path


def require_fields(records: Sequence[dict], fields: Iterable[str], path: str | Path) -> None:
    """Check that every record has every field in ``fields``.

    Raises:
        ValueError: naming ``path``, the first offending record index and the
            missing field.
    """
    fields = list(fields)
    for index, record in enumerate(records):
        for field in fields:
            if field not in record:
                raise ValueError(
                    f"{path}: record {index} is missing field {field!r} (has {sorted(record)})"
                )
