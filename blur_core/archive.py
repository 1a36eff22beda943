"""Share a study: one tarball a collaborator unpacks and reruns (``make archive``).

``make_archive(out, config)`` packs every file git tracks in this checkout and every new file
it does not ignore (as they are in the working tree, so uncommitted edits travel and the
manifest's git state says so), the study's config file
and a ``MANIFEST.json``: the git state, the code fingerprint of every command, the config's
and each file's sha256, and how to rerun. Results, models and benchmark data are not packed:
the receiver reruns the pipeline (``snakemake --configfile <config>``), with the data at the
paths the config names (``../shared/data/...`` beside the unpacked dir, or hub ids), and on a
CPU gets a bit-identical ``summary.csv`` (training and evaluation are deterministic there).
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from blur_core.provenance import file_sha256, git_state, now

__all__ = ["make_archive"]

REPO = Path(__file__).resolve().parents[1]


def _tracked_files(repo: Path) -> list[str]:
    try:
        out = subprocess.run(
            # tracked files and new ones git does not ignore (the working tree, not results/)
            [
                "git",
                "-C",
                str(repo),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{repo} is not a git checkout: make_archive packs git's files") from exc
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def make_archive(out: str | Path, config: str | Path | None = None, repo: Path = REPO) -> Path:
    """Write the study tarball ``out`` (``.tar.gz``): the tracked files under a top folder
    ``blur-study/``, ``config`` (copied to ``blur-study/<its path>`` if it is not tracked) and
    ``MANIFEST.json``. Returns ``out``."""
    repo, out = Path(repo), Path(out)
    files = _tracked_files(repo)
    extra = []
    if config is not None:
        config = Path(config).resolve()
        if not config.is_file():
            raise FileNotFoundError(f"study config not found: {config}")
        rel = config.relative_to(repo) if config.is_relative_to(repo) else Path(config.name)
        if str(rel) not in files:
            extra.append((config, str(rel)))
        config_rel = str(rel)
    else:
        config_rel = "config.yaml"
    from blur_core.fingerprint import COMMANDS, code_fingerprint

    manifest = {
        "created": now(),
        "git": git_state(),
        "config": config_rel,
        "code": {cmd: code_fingerprint(cmd) for cmd in COMMANDS},
        "files": {f: file_sha256(repo / f) for f in files},
        "rerun": (
            f"tar xzf {out.name} && cd blur-study && make venv && "
            f".venv/bin/snakemake --configfile {config_rel}  "
            "(data at the paths the config names; on a CPU, results/report/summary.csv is "
            "bit-identical to the sender's)"
        ),
    }
    if config is not None:
        manifest["config_sha256"] = file_sha256(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for f in files:
            tar.add(repo / f, arcname=f"blur-study/{f}", recursive=False)
        for path, rel in extra:
            tar.add(path, arcname=f"blur-study/{rel}", recursive=False)
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo("blur-study/MANIFEST.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out
