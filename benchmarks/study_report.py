"""Mean +- std over seeds of a pipeline study, the Pareto front, and a frontier plot.

    python benchmarks/study_report.py [results/study-embedded/report/summary.csv] [--name study-embedded]

Reads the pipeline's report/summary.csv (one row per model), groups the unlearned runs
by (sweep entry, hyperparameters) and prints, per group, the mean and the sample standard
deviation over seeds of forget quality (KS p-value vs the retain model; higher = closer to
never having seen the forget set) and model utility (harmonic mean of 9 numbers; higher
is better), plus the forget-set probability. A point is Pareto-optimal when no other
group's mean is at least as good on both axes and better on one. Writes
benchmarks/results/{name}.md and {name}.png (error bars = std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LABELS = {"blur_npo": "BLUR-NPO", "blur_ga": "BLUR-GA", "graddiff": "GradDiff", "npo": "NPO+GD"}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _hp_value(hparams: str) -> float:
    try:
        return float(re.split(r"[,@]", hparams.split("=", 1)[1])[0])
    except (IndexError, ValueError):
        return math.nan


def load(path: Path):
    rows = list(csv.DictReader(path.open()))
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    refs = {}
    for r in rows:
        if r["role"] == "unlearned":
            parts = re.split(
                r"[,@]", r["hparams"]
            )  # run tags: key=value,...,seed=N (or @-separated)
            hp = ",".join(p for p in parts if p and not p.startswith("seed="))  # pool seeds
            groups[r["entry"], hp].append(r)
        else:
            refs[r["role"]] = r
    out = []
    for (entry, hp), rs in groups.items():
        fq = _mean_std([float(r["forget_quality"]) for r in rs])
        mu = _mean_std([float(r["model_utility"]) for r in rs])
        fp = _mean_std([float(r["forget_probability"]) for r in rs])
        out.append(
            {
                "entry": entry,
                "label": LABELS.get(entry, entry),
                "hparams": hp,
                "hp": _hp_value(hp),
                "n": len(rs),
                "fq": fq,
                "mu": mu,
                "fp": fp,
            }
        )
    out.sort(key=lambda g: (g["entry"], g["hp"]))
    for g in out:
        g["pareto"] = not any(
            o is not g
            and o["fq"][0] >= g["fq"][0]
            and o["mu"][0] >= g["mu"][0]
            and (o["fq"][0] > g["fq"][0] or o["mu"][0] > g["mu"][0])
            for o in out
        )
    return out, refs


def _num(value: float, digits: int) -> str:
    """Fixed point, or scientific where fixed point would print 0 for a small value (KS
    p-values on real TOFU reach 1e-5 and below)."""
    return f"{value:.2e}" if 0 < abs(value) < 10**-digits else f"{value:.{digits}f}"


def _ms(pair: tuple[float, float], n: int, digits: int) -> str:
    """mean ± std, or the one value where one seed gives no spread (never a made-up ± 0)."""
    return f"{_num(pair[0], digits)} ± {_num(pair[1], digits)}" if n > 1 else _num(pair[0], digits)


def table(groups, refs, source: Path) -> str:
    lines = [
        f"Source: `{source}` ({sum(g['n'] for g in groups)} unlearned runs, "
        f"{len(groups)} (method, hyperparameter) points). Mean ± std over seeds "
        "(a point run with one seed shows its value: no spread to report).",
        "",
        "| method | hyperparameter | seeds | forget quality | model utility | forget probability | Pareto |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        lines.append(
            f"| {g['label']} | {g['hparams']} | {g['n']} | {_ms(g['fq'], g['n'], 3)} | "
            f"{_ms(g['mu'], g['n'], 3)} | {_ms(g['fp'], g['n'], 4)} | "
            f"{'**yes**' if g['pareto'] else ''} |"
        )
    for role in ("target", "retain"):
        if role in refs:
            r = refs[role]
            lines.append(
                f"| {role} model | - | - | {_num(float(r['forget_quality']), 3)} | "
                f"{_num(float(r['model_utility']), 3)} | {_num(float(r['forget_probability']), 4)} | |"
            )
    front = [g for g in groups if g["pareto"]]
    by_method = defaultdict(list)
    for g in front:
        by_method[g["label"]].append(g["hparams"])
    lines += [
        "",
        "Pareto-optimal (by the means): "
        + "; ".join(f"{m}: {', '.join(h)}" for m, h in by_method.items()),
    ]
    # best utility per method among points that reach a forgetting level (matched forgetting)
    lines += [
        "",
        "Best mean model utility at matched forgetting (points whose mean forget quality reaches the level):",
        "",
        "| forget quality >= | " + " | ".join(sorted({g["label"] for g in groups})) + " |",
        "|---|" + "---|" * len({g["label"] for g in groups}),
    ]
    for level in (0.1, 0.3, 0.5, 0.8):
        cells = []
        for label in sorted({g["label"] for g in groups}):
            ok = [g for g in groups if g["label"] == label and g["fq"][0] >= level]
            best = max(ok, key=lambda g: g["mu"][0]) if ok else None
            cells.append(f"{best['mu'][0]:.3f} ({best['hparams']})" if best else "-")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(groups, refs, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=100)
    markers = dict(zip(LABELS.values(), "osD^v<>"))
    for label in sorted({g["label"] for g in groups}):
        gs = sorted((g for g in groups if g["label"] == label), key=lambda g: g["hp"])
        xs, ys = [g["fq"][0] for g in gs], [g["mu"][0] for g in gs]
        ax.errorbar(
            xs,
            ys,
            xerr=[g["fq"][1] for g in gs],
            yerr=[g["mu"][1] for g in gs],
            marker=markers.get(label, "o"),
            capsize=3,
            linewidth=1,
            label=label,
            alpha=0.85,
        )
        for g in gs:
            ax.annotate(
                g["hparams"].split("=")[-1],
                (g["fq"][0], g["mu"][0]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for role, m in (("target", "*"), ("retain", "X")):
        if role in refs:
            ax.scatter(
                [float(refs[role]["forget_quality"])],
                [float(refs[role]["model_utility"])],
                marker=m,
                s=120,
                color="k",
                zorder=5,
                label=f"{role} model",
            )
    front = sorted((g for g in groups if g["pareto"]), key=lambda g: g["fq"][0])
    ax.plot(
        [g["fq"][0] for g in front],
        [g["mu"][0] for g in front],
        "k:",
        linewidth=1,
        label="Pareto front (means)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("forget quality (KS p-value vs retain model, log scale; higher = better)")
    ax.set_ylabel("model utility (higher = better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("summary", nargs="?", default="results/study-embedded/report/summary.csv")
    ap.add_argument("--name", default="study-embedded")
    ap.add_argument("--out-dir", default=str(RESULTS))
    args = ap.parse_args()
    src = Path(args.summary)
    if not src.is_file():
        sys.exit(f"{src}: not found; run `snakemake --configfile configs/{args.name}.yaml` first")
    groups, refs = load(src)
    if not groups:
        sys.exit(f"{src}: no unlearned runs")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        [
            f"# Quality study: {args.name}",
            "",
            f"`python benchmarks/study_report.py {src}` (plot: `{args.name}.png`)",
            "",
            table(groups, refs, src),
            "",
        ]
    )
    (out / f"{args.name}.md").write_text(text)
    seeds = (
        "one seed per point (no error bars)"
        if all(g["n"] == 1 for g in groups)
        else "mean ± std over seeds"
    )
    plot(groups, refs, out / f"{args.name}.png", f"{args.name}: {seeds}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
