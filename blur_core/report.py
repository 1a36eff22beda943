"""Report tables and plots from the pipeline's evaluation JSON files.

Each ``eval.json`` sits in a model's directory, whose path says what it is:
    <results>/<bench>/<model>/finetune/{target,retain}/eval.json
    <results>/<bench>/<model>/runs/<entry>/<tag>/eval.json
Beside it: ``summary.json`` (training wall time) and ``run_config.yaml`` (resolved method
and hyperparameters). ``build_rows`` turns them into one row per model; ``write_report``
writes summary.csv, summary.md and the trade-off plot.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SETS", "build_rows", "write_csv", "write_markdown", "plot_tradeoff", "write_report"]

SETS = ("forget", "retain", "real_authors", "world_facts")
METRICS = ("probability", "rouge", "truth_ratio")
BASE_COLUMNS = ["benchmark", "model", "role", "entry", "method", "hparams", "seed",
                "forget_quality", "model_utility"]


def _row_from_eval(path: Path) -> dict[str, Any]:
    parts = path.parent.parts
    if len(parts) >= 4 and parts[-2] == "finetune":
        bench, model, _, role = parts[-4:]
        entry, tag = role, ""
    elif len(parts) >= 5 and parts[-3] == "runs":
        bench, model, _, entry, tag = parts[-5:]
        role = "unlearned"
    else:
        raise ValueError(f"{path}: not under <results>/<bench>/<model>/(finetune/<kind>|runs/<entry>/<tag>)")
    result = json.loads(path.read_text())
    run_dir = path.parent
    cfg_path = run_dir / "run_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    method = cfg.get("method", {})
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    hparams = ""
    if role == "unlearned":
        # the run tag is "key=value@...@seed=N" (workflow/rules/common.smk)
        grid = dict(p.split("=", 1) for p in tag.split("@") if "=" in p and not p.startswith("seed="))
        hparams = " ".join(f"{k}={v}" for k, v in grid.items())
    row: dict[str, Any] = {
        "benchmark": bench, "model": model, "role": role, "entry": entry,
        "method": method.get("name", role), "hparams": hparams,
        "seed": cfg.get("train", {}).get("seed", ""),
        "forget_quality": result.get("forget_quality"),
        "model_utility": result.get("model_utility"),
    }
    for s in SETS:
        for m in METRICS:
            row[f"{s}_{m}"] = result.get("aggregates", {}).get(s, {}).get(m)
    row["train_wall_s"] = summary.get("wall_time_s")
    row["steps"] = summary.get("steps")
    row["path"] = str(run_dir)
    return row


def build_rows(eval_files: list[str | Path]) -> list[dict[str, Any]]:
    """One row per evaluated model, target and retain first, then runs sorted by name."""
    rows = [_row_from_eval(Path(p)) for p in eval_files]
    order = {"target": 0, "retain": 1, "unlearned": 2}
    return sorted(rows, key=lambda r: (r["benchmark"], r["model"], order[r["role"]], r["entry"],
                                       _sort_value(r), r["path"]))


def columns(rows: list[dict]) -> list[str]:
    return BASE_COLUMNS + [f"{s}_{m}" for s in SETS for m in METRICS] + ["train_wall_s", "steps", "path"]


def write_csv(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns(rows))
        writer.writeheader()
        writer.writerows(rows)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


def write_markdown(rows: list[dict], path: str | Path) -> None:
    cols = ["benchmark", "model", "entry", "hparams", "seed", "forget_quality", "model_utility",
            "forget_probability", "forget_rouge", "retain_probability", "retain_rouge", "train_wall_s"]
    lines = ["# blur-pipeline summary", "",
             "forget_quality: KS p-value vs the retain model (higher = closer to never trained on the forget set); "
             "model_utility: harmonic mean of 9 utility numbers (higher = more kept).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    Path(path).write_text("\n".join(lines) + "\n")


def _grid_value(row: dict) -> float:
    try:
        return float(row["hparams"].split()[0].split("=", 1)[1])
    except (IndexError, ValueError):
        return math.nan


def _sort_value(row: dict) -> float:
    value = _grid_value(row)
    return -math.inf if math.isnan(value) else value


def plot_tradeoff(rows: list[dict], path: str | Path) -> None:
    """Forget quality (log y) vs model utility (x): one series per sweep entry, grid order joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["model"]), []).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 5.5), squeeze=False)
    for ax, ((bench, model), grp) in zip(axes[0], groups.items()):
        floor = 1e-12
        entries = sorted({r["entry"] for r in grp if r["role"] == "unlearned"})
        cmap = plt.get_cmap("tab10")
        for i, entry in enumerate(entries):
            pts = sorted((r for r in grp if r["entry"] == entry), key=_grid_value)
            xs = [r["model_utility"] for r in pts]
            ys = [max(r["forget_quality"], floor) for r in pts]
            keys = sorted({kv.split("=", 1)[0] for r in pts for kv in r["hparams"].split()})
            label = f"{entry} ({pts[0]['method']}" + (f"; {', '.join(keys)}" if keys else "") + ")"
            ax.plot(xs, ys, "-o", color=cmap(i % 10), label=label, alpha=0.85)
            for r, x, y in zip(pts, xs, ys):
                value = " ".join(kv.split("=", 1)[1] for kv in r["hparams"].split())
                ax.annotate(value, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8,
                            color=cmap(i % 10))
        for role, marker, color in (("target", "*", "black"), ("retain", "D", "tab:green")):
            for r in (r for r in grp if r["role"] == role):
                ax.scatter([r["model_utility"]], [max(r["forget_quality"], floor)], marker=marker, s=160,
                           color=color, zorder=5, label=f"{role} model", edgecolors="white")
        ax.set_yscale("log")
        ax.set_xlabel("model utility (higher = more kept)")
        ax.set_ylabel("forget quality (KS p-value vs retain model, log)")
        ax.set_title(f"{bench} / {model}: forgetting vs utility")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(eval_files: list[str | Path], out_dir: str | Path) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(eval_files)
    write_csv(rows, out_dir / "summary.csv")
    write_markdown(rows, out_dir / "summary.md")
    plot_tradeoff(rows, out_dir / "tradeoff.png")
    return rows
