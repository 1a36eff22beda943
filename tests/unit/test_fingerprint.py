"""blur_core.fingerprint: which modules a command runs, and what changes its fingerprint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from blur_core.fingerprint import COMMANDS, code_fingerprint, command_modules, import_graph
from tests.unit.test_imports import import_graph as ast_import_graph

REPO = Path(__file__).resolve().parents[2]


def test_the_regex_import_graph_equals_the_ast_one():
    ours, ast_graph = import_graph(), ast_import_graph()
    assert set(ours) == set(ast_graph)
    for module, deps in ast_graph.items():
        parents = {p for p in ours[module] if module.startswith(p + ".")}
        assert set(deps) <= set(ours[module]), module
        assert set(ours[module]) - set(deps) <= parents, module  # plus the parent packages


def test_each_command_runs_its_own_code():
    unlearn, evaluate, convert = (command_modules(c) for c in ("unlearn", "evaluate", "convert"))
    assert {"blur_core.losses", "blur_core.bilevel", "blur_core.train.loop"} <= unlearn
    assert not any(m.startswith("blur_core.eval") for m in unlearn)  # training runs no metric
    assert {"blur_core.eval.tofu", "blur_core.eval.likelihood"} <= evaluate
    assert "blur_core.train.loop" not in evaluate
    assert "blur_core.losses" not in convert and "blur_core.train.zero" in convert
    assert "blur_core.losses" not in command_modules("prepare-data")
    assert all(len(code_fingerprint(c)) == 16 for c in COMMANDS)


def _fingerprints(package_root: Path) -> dict[str, str]:
    code = (
        "import blur_core.fingerprint as f; print({c: f.code_fingerprint(c) for c in f.COMMANDS})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=package_root,
        env={"PYTHONPATH": str(package_root)},
    )
    return eval(out.stdout)  # a dict literal printed above


def test_only_code_changes_the_fingerprint(tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(
        REPO / "blur_core", root / "blur_core", ignore=shutil.ignore_patterns("__pycache__")
    )
    before = _fingerprints(root)
    assert before == {c: code_fingerprint(c) for c in COMMANDS}  # the path does not count
    losses = root / "blur_core/losses.py"
    losses.write_text(losses.read_text() + "\n# a comment line\n\n   \n")
    assert _fingerprints(root) == before
    losses.write_text(losses.read_text() + "\n_EDIT = 1\n")
    after = _fingerprints(root)
    changed = {c for c in COMMANDS if after[c] != before[c]}
    assert "unlearn" in changed and "evaluate" in changed  # both score with the losses module
    assert {"prepare-data", "convert", "import-model"}.isdisjoint(changed)
