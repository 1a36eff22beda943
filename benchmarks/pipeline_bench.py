"""Pipeline overhead: Snakemake planning time for a 1,000-run sweep, no-op rerun, end to end.

    python benchmarks/pipeline_bench.py dry-run        # `snakemake -n` on a 1,000-run sweep (fresh dir)
    python benchmarks/pipeline_bench.py noop           # `snakemake` again on the repo's completed results/
    python benchmarks/pipeline_bench.py e2e            # the default experiment end to end in a temp dir,
                                                       # then a no-op rerun there (minutes)
    python benchmarks/pipeline_bench.py table          # rebuild the markdown from stored measurements

Each part stores its measurement in benchmarks/results/pipeline.json (with the load
average before and after, since the machine is shared) and rewrites
benchmarks/results/pipeline.md from everything stored so far.

The 1,000-run sweep is the default experiment (embedded benchmark, tiny model) with
10 method entries x 10 grid values x 10 seeds = 1,000 unlearning runs, i.e. ~3,000 jobs
(unlearn, convert, evaluate per run) that Snakemake must plan, with no result on disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STORE = RESULTS / "pipeline.json"
LAST_CPU = [0.0]

GRID10 = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0]
WEIGHTS10 = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]


def sweep_config(core: bool = False) -> dict:
    """config.yaml with 10 entries x 10 grid values x 10 seeds = 1,000 unlearning runs;
    ``core``: without the evaluation suites and the relearning attack (unlearn, convert,
    evaluate per run: the sweep's shape before those stages existed)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if core:
        cfg["evaluations"] = {}
        cfg["relearn"] = {"steps": []}

    def blur(**fixed):
        return {"method": "blur", "fixed": fixed, "grid": {"gamma": GRID10}}

    def weighted(method, **fixed):
        return {"method": method, "fixed": fixed, "grid": {"retain_weight": WEIGHTS10}}

    cfg["methods"] = {
        "blur_npo": blur(forget_loss="npo", retain_loss="nll"),
        "blur_ga": blur(forget_loss="ga", retain_loss="nll"),
        "blur_simnpo": blur(forget_loss="simnpo", retain_loss="nll"),
        "blur_idk": blur(forget_loss="idk", retain_loss="nll"),
        "blur_npo_kl": blur(forget_loss="npo", retain_loss="kl"),
        "blur_npo_rp": blur(forget_loss="npo", retain_loss="nll", variant="retain_priority"),
        "graddiff": weighted("graddiff"),
        "npo": weighted("npo", beta=0.1),
        "simnpo": weighted("simnpo"),
        "idk": weighted("idk"),
    }
    cfg["unlearn"]["seeds"] = list(range(10))
    return cfg


def _env() -> dict:
    bindir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _cpu_children() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _snakemake(
    workdir: Path, configfile: Path, *args: str, timeout: int = 3600
) -> tuple[float, subprocess.CompletedProcess]:
    """Run snakemake; returns (wall seconds, process). CPU seconds of it (and its children) go to LAST_CPU."""
    exe = Path(sys.executable).parent / "snakemake"
    cmd = [
        str(exe if exe.exists() else "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--workflow-profile",
        str(REPO / "workflow/profiles/default"),
        *args,
    ]
    t0, c0 = time.perf_counter(), _cpu_children()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=str(workdir)
    )
    wall = time.perf_counter() - t0
    LAST_CPU[0] = _cpu_children() - c0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"snakemake failed ({' '.join(args)})")
    return wall, proc


def _jobs(proc) -> int | None:
    m = re.search(r"^\s*total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    return int(m.group(1)) if m else None


def _record(part: str, data: dict) -> None:
    store = json.loads(STORE.read_text()) if STORE.exists() else {}
    store[part] = {**data, "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps(store, indent=2))
    write_table(store)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def dry_run(reps: int, core: bool = False) -> None:
    work = Path(tempfile.mkdtemp(prefix="pipeline_dry_"))
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(sweep_config(core), sort_keys=False))
    load0, walls, cpus, jobs = _load(), [], [], None
    for _ in range(reps):
        wall, proc = _snakemake(work, cfg_path, "-n")
        walls.append(round(wall, 2))
        cpus.append(round(LAST_CPU[0], 2))
        jobs = _jobs(proc) or jobs
    shutil.rmtree(work, ignore_errors=True)
    _record(
        "dry_run_core" if core else "dry_run",
        {"walls_s": walls, "cpu_s": cpus, "jobs": jobs, "runs": 1000, "load": [load0, _load()]},
    )


def noop(workdir: Path, configfile: Path, part: str = "noop", reps: int = 2) -> None:
    load0, walls, cpus = _load(), [], []
    for _ in range(reps):
        wall, proc = _snakemake(workdir, configfile)
        text = proc.stdout + proc.stderr
        if "Nothing to be done" not in text:
            raise SystemExit(
                f"{workdir}: the pipeline was not complete (snakemake ran jobs); run it first"
            )
        walls.append(round(wall, 2))
        cpus.append(round(LAST_CPU[0], 2))
    _record(
        part, {"walls_s": walls, "cpu_s": cpus, "load": [load0, _load()], "where": str(workdir)}
    )


def e2e() -> None:
    work = Path(tempfile.mkdtemp(prefix="pipeline_e2e_"))
    cfg_path = work / "config.yaml"
    shutil.copy(REPO / "config.yaml", cfg_path)
    load0 = _load()
    wall, proc = _snakemake(work, cfg_path)
    jobs = len(re.findall(r"^Finished job", proc.stdout + proc.stderr, re.M))
    _record(
        "e2e",
        {
            "wall_s": round(wall, 1),
            "cpu_s": round(LAST_CPU[0], 1),
            "jobs": jobs,
            "load": [load0, _load()],
            "cores": 2,
        },
    )
    noop(work, cfg_path, part="noop_after_e2e")
    shutil.rmtree(work, ignore_errors=True)


def _fmt_load(load) -> str:
    return f"{load[0][0]:.1f} -> {load[1][0]:.1f}"


def write_table(store: dict) -> None:
    rows = []
    for part, what, flag in (
        ("dry_run_core", "unlearn/convert/evaluate only", " --core"),
        ("dry_run", "with the default's evaluation suites and relearning", ""),
    ):
        if part not in store:
            continue
        d = store[part]
        rows.append(
            f"| `snakemake -n` on a 1,000-run sweep, {what} ({d['jobs']} jobs planned, nothing on disk) | "
            f"<= 15 s | {', '.join(f'{w:.1f}' for w in d['walls_s'])} s | "
            f"{', '.join(f'{c:.1f}' for c in d.get('cpu_s', []))} s | {_fmt_load(d['load'])} | "
            f"`python benchmarks/pipeline_bench.py dry-run{flag}` |"
        )
    for part, what in (
        ("noop", "no-op rerun of the default pipeline (repo `results/`, completed)"),
        ("noop_after_e2e", "no-op rerun right after the end-to-end run below"),
    ):
        if part in store:
            d = store[part]
            cmd = "noop" if part == "noop" else "e2e"
            rows.append(
                f"| {what} | ~4 s (README) | {', '.join(f'{w:.1f}' for w in d['walls_s'])} s | "
                f"{', '.join(f'{c:.1f}' for c in d.get('cpu_s', []))} s | "
                f"{_fmt_load(d['load'])} | `python benchmarks/pipeline_bench.py {cmd}` |"
            )
    if "e2e" in store:
        d = store["e2e"]
        m, s = divmod(d["wall_s"], 60)
        rows.append(
            f"| default experiment end to end (`config.yaml`, {d['jobs']} jobs, 2 cores) | minutes "
            f"(4 min 9 s, 65 jobs, idle, 2026-11-28 08:43) | {int(m)} min {s:.0f} s | "
            f"{d.get('cpu_s', float('nan')):.0f} s | "
            f"{_fmt_load(d['load'])} | "
            f"`python benchmarks/pipeline_bench.py e2e` |"
        )
    text = "\n".join(
        [
            "# Pipeline overhead",
            "",
            "Wall times of the `snakemake` command itself (Snakemake 9.27.1, 2 CPU cores, no GPU). "
            "The machine was "
            "shared with another developer's test runs: the 1-minute load average before -> after each "
            "measurement is given (2.0 = both cores busy). CPU = user + system seconds of snakemake and its "
            "jobs, which load inflates much less than wall time.",
            "",
            "| what | target / earlier | wall | CPU | load | reproduce |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Measured: " + ", ".join(f"{k} {v['when']}" for k, v in store.items()),
            "",
        ]
    )
    (RESULTS / "pipeline.md").write_text(text)
    print(text)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("part", choices=["dry-run", "noop", "e2e", "table"])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument(
        "--core", action="store_true", help="dry-run: without evaluation suites and relearning"
    )
    ap.add_argument(
        "--workdir", default=str(REPO), help="noop: a directory holding a completed results/"
    )
    ap.add_argument("--configfile", default=str(REPO / "config.yaml"))
    args = ap.parse_args()
    if args.part == "dry-run":
        dry_run(args.reps, core=args.core)
    elif args.part == "noop":
        noop(Path(args.workdir), Path(args.configfile), reps=args.reps)
    elif args.part == "e2e":
        e2e()
    else:
        write_table(json.loads(STORE.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
