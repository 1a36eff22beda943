"""One source of pins: requirements/lock.txt. pyproject.toml's ranges admit the locked versions,
every requirement is locked, and envs/*.yaml pins exactly what the lock pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    pins = {}
    for n, line in enumerate((REPO / "requirements" / "lock.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"requirements/lock.txt:{n}: not NAME==VERSION: {line!r}"
        assert canonical(m.group(1)) not in pins, f"requirements/lock.txt:{n}: {m.group(1)} twice"
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def requirements(extras: tuple[str, ...] | None = None) -> list[Requirement]:
    """pyproject's own requirements (base + the named extras, all extras if None), the
    self-references of the `test` extra left out."""
    project = PYPROJECT["project"]
    groups = project["optional-dependencies"]
    names = list(groups) if extras is None else list(extras)
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for g in names for r in groups[g]]
    return [r for r in reqs if canonical(r.name) != canonical(project["name"])]


def test_every_requirement_is_locked_at_a_version_its_range_admits():
    pins = lock()
    for req in requirements():
        name = canonical(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not pinned in requirements/lock.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/lock.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
        )


def test_the_test_extra_is_composed_of_the_other_extras():
    test = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]]
    (me,) = [r for r in test if canonical(r.name) == "blur-pipeline"]
    assert me.extras == set(PYPROJECT["project"]["optional-dependencies"]) - {"test"}


@pytest.mark.parametrize("env", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_env_pins_what_the_lock_pins(env):
    pins = lock()
    doc = yaml.safe_load(env.read_text())
    pip = next(d["pip"] for d in doc["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {}
    for line in pip:
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert m, f"{env.name}: {line!r} is not pinned as NAME==VERSION"
        listed[canonical(m.group(1))] = m.group(2)
    for name, version in listed.items():
        assert pins.get(name) == version, (
            f"{env.name} pins {name}=={version}, requirements/lock.txt {pins.get(name)}"
        )
    # what the pipeline's jobs import: the library and its deepspeed / pipeline extras
    needed = {canonical(r.name) for r in requirements(("deepspeed", "pipeline"))}
    needed -= {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}
    missing = sorted(needed - set(listed))
    assert not missing, f"{env.name} lacks {missing}"


def test_the_lock_parser_rejects_a_range(tmp_path, monkeypatch):
    bad = tmp_path / "requirements"
    bad.mkdir()
    (bad / "lock.txt").write_text("torch>=2.0\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    with pytest.raises(AssertionError, match="not NAME==VERSION"):
        lock()
