"""Code-aware reruns: a fingerprint of exactly the ``blur_core`` code a CLI command runs.

Snakemake reruns a job when its params change. Each rule's params hold
``code_fingerprint(<the command its shell runs>)``, so an edit to evaluation code reruns the
evaluation jobs (and what depends on them), an edit to a loss reruns the training jobs and
everything downstream, and an edit elsewhere (a README, a comment line) reruns nothing.

What a command runs: its ``cmd_*`` function in ``blur_core/cli.py`` with the cli helpers it
calls, the ``blur_core`` modules those import (module-level or inside functions, as written:
the lazy imports are where the command's code comes from), and everything those modules
import, transitively (an over-approximation: a module imported anywhere counts, and a module
depends on its parent packages, whose ``__init__`` runs first). The fingerprint hashes each
module's text without comment lines, trailing spaces and blank lines, so those do not count;
any other edit does (docstrings included). Imports are read with regular expressions rather
than a parser, which keeps this at tens of milliseconds per Snakemake invocation;
``tests/unit/test_fingerprint.py`` checks the result against the ``ast`` import graph.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

__all__ = ["COMMANDS", "PACKAGE", "code_fingerprint", "command_modules", "import_graph"]

PACKAGE = Path(__file__).resolve().parent  # blur_core/
# the commands the pipeline's rules run (each rule's params hold its command's fingerprint)
COMMANDS = (
    "prepare-data",
    "prepare-model",
    "import-model",
    "unlearn",
    "convert",
    "evaluate",
    "evaluate-corpus",
    "evaluate-suites",
    "slice-data",
    "select-checkpoint",
    "report",
)

_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]*)", re.M)
_DEF = re.compile(r"^def[ \t]+(\w+)", re.M)
_NOISE = re.compile(r"^[ \t]*(#[^\n]*)?\n", re.M)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=1)
def _sources() -> dict[str, tuple[Path, str]]:
    """module name -> (file, source text) for every module of the package."""
    return {
        _module_name(p): (p, p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))
    }


def _imports_in(text: str, package: str, modules) -> set[str]:
    """The ``blur_core`` modules the import statements in ``text`` name: ``from X import Y``
    counts as X.Y when that is a module, else X (relative imports resolved from ``package``)."""
    found = set()
    for base, names in _FROM.findall(text):
        level = len(base) - len(base.lstrip("."))
        base = base.lstrip(".")
        if level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - level + 1] + ([base] if base else []))
        for alias in names.strip().strip("()").replace("\n", " ").split(","):
            alias = alias.split("#")[0].strip().split(" as ")[0].strip()
            if alias:
                target = f"{base}.{alias}"
                found.add(target if target in modules else base)
    for names in _IMPORT.findall(text):
        for alias in names.split("#")[0].split(","):
            found.add(alias.strip().split(" as ")[0].strip())
    return {m for m in found if m in modules}


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, frozenset[str]]:
    """module -> the ``blur_core`` modules it imports anywhere in its source (lazy imports
    inside functions included) and its parent packages."""
    sources = _sources()
    graph = {}
    for name, (path, text) in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = _imports_in(text, package, sources)
        parts = name.split(".")
        deps |= {".".join(parts[:i]) for i in range(1, len(parts))} & set(sources)
        graph[name] = frozenset(deps - {name})
    return graph


@functools.lru_cache(maxsize=1)
def _cli_functions() -> dict[str, str]:
    """name -> source text of each top-level function of cli.py (up to the next top-level
    statement)."""
    text = _sources()["blur_core.cli"][1]
    starts = [(m.group(1), m.start()) for m in _DEF.finditer(text)]
    out = {}
    for i, (name, at) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        out[name] = re.split(r"\n(?=[^\s#)\]}])", text[at:end], maxsplit=1)[0]
    return out


def _cli_module_level() -> str:
    """cli.py without its functions: its module-level statements."""
    text = _sources()["blur_core.cli"][1]
    for body in _cli_functions().values():
        text = text.replace(body, "")
    return text


@functools.cache
def _cli_used(command: str) -> frozenset[str]:
    """The cli.py functions ``command`` runs: its ``cmd_*`` entry point and the cli helpers
    it calls, transitively."""
    functions = _cli_functions()
    entry = "cmd_" + command.replace("-", "_")
    if entry not in functions:
        known = sorted(f[4:].replace("_", "-") for f in functions if f.startswith("cmd_"))
        raise ValueError(f"no command {command!r} in blur_core/cli.py; known: {known}")
    todo, used = [entry], set()
    while todo:
        fn = todo.pop()
        if fn in used:
            continue
        used.add(fn)
        todo += [n for n in re.findall(r"\b(\w+)\(", functions[fn]) if n in functions]
    return frozenset(used)


@functools.cache
def command_modules(command: str) -> frozenset[str]:
    """The ``blur_core`` modules ``python -m blur_core <command>`` runs (cli.py itself is
    hashed per function, see :func:`code_fingerprint`); ``ValueError`` for an unknown one."""
    sources, functions = _sources(), _cli_functions()
    roots = {"blur_core"} & set(sources)
    roots |= _imports_in(_cli_module_level(), "blur_core", sources)
    for fn in _cli_used(command):
        roots |= _imports_in(functions[fn], "blur_core", sources)
    # cli.py's graph node imports every command's modules somewhere: never followed
    graph, seen, stack = import_graph(), set(), list(roots - {"blur_core.cli"})
    while stack:
        m = stack.pop()
        if m not in seen:
            seen.add(m)
            stack.extend(graph[m] - seen - {"blur_core.cli"})
    return frozenset(seen)


def _normalised(text: str) -> str:
    """``text`` without comment lines, blank lines and trailing spaces."""
    return _NOISE.sub("", re.sub(r"[ \t]+\n", "\n", text + "\n"))


@functools.cache
def code_fingerprint(command: str) -> str:
    """16 hex digits over the code of every module ``command`` runs and of its functions in
    cli.py. Computed once per process (a Snakemake invocation)."""
    sources, functions = _sources(), _cli_functions()
    digest = hashlib.sha256()
    for name in sorted(command_modules(command)):
        digest.update(f"{name}\n{_normalised(sources[name][1])}\n".encode())
    for fn in sorted(_cli_used(command)):
        digest.update(f"blur_core.cli.{fn}\n{_normalised(functions[fn])}\n".encode())
    return digest.hexdigest()[:16]
