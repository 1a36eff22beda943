"""Report tables and plots from the pipeline's evaluation JSON files.

Each ``eval.json`` sits in a model's directory, whose path says what it is:
    <results>/<bench>/<model>/finetune/{target,retain}/eval.json
    <results>/<bench>/<model>/runs/<entry>/<tag>/eval.json
    <results>/<bench>/<model>/runs/<entry>/<tag>/relearn/k<K>/eval.json   (relearning attack)
Beside it: ``summary.json`` (training wall time, the adapter and trainable-parameter
count of a LoRA run), ``run_config.yaml`` (resolved method
and hyperparameters) and ``suites/<name>.json`` (extra evaluation suites: WMDP, MMLU,
MUSE-News, ...; their ``metrics`` become columns ``<name>.<metric>``). ``build_rows``
turns them into one row per model; ``write_report`` writes summary.csv, summary.md (a
TOFU table, one table per suite, a relearning table), the trade-off plot and
per-benchmark plots under ``plots/``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from blur_core.pipeline.tags import parse_tag
from blur_core.selection import METRICS, PROTOCOL_COLUMNS, SETS, metric_values

__all__ = [
    "SETS",
    "build_rows",
    "checkpoint_series",
    "forgetting_value",
    "plot_checkpoints",
    "plot_suites",
    "plot_tradeoff",
    "tradeoff_series",
    "write_csv",
    "write_markdown",
    "write_report",
]

PROTOCOL_NOTES = {
    "muse": "MUSE's metrics on the corpus's own sets, MUSE's scale: verbmem_f / knowmem_f = ROUGE-L "
    "F1 x 100 on the forget set (lower = more forgotten), knowmem_r on the retain set (higher = "
    "more kept); privleak = (AUC - AUC_retain) / AUC_retain x 100 of Min-40% scores, forget vs "
    "holdout (near 0 = like the retain model)",
    "wmdp": "zero-shot multiple-choice accuracy: forget_mc = the hazardous knowledge (WMDP, or the "
    "embedded corpus's forget questions; lower = more removed, chance 0.25), utility_mc = "
    "general knowledge (MMLU, or the corpus's retain questions; higher = more kept)",
}
BASE_COLUMNS = [
    "benchmark",
    "model",
    "role",
    "entry",
    "method",
    "hparams",
    "seed",
    "forget_quality",
    "model_utility",
]


def _row_from_eval(path: Path) -> dict[str, Any]:
    parts = path.parent.parts
    relearn_steps = None
    if (
        len(parts) >= 7
        and parts[-2] == "relearn"
        and parts[-5] == "runs"
        and parts[-1].startswith("k")
    ):
        bench, model, _, entry, tag = parts[-7:-2]
        role, relearn_steps = "relearned", int(parts[-1][1:])
    elif len(parts) >= 4 and parts[-2] in ("finetune", "published"):
        bench, model, _, role = parts[-4:]
        entry, tag = role, ""
    elif len(parts) >= 5 and parts[-3] == "runs":
        bench, model, _, entry, tag = parts[-5:]
        role = "unlearned"
    else:
        raise ValueError(
            f"{path}: not under <results>/<bench>/<model>/"
            "((finetune|published)/<kind>|runs/<entry>/<tag>)"
        )
    result = json.loads(path.read_text())
    run_dir = path.parent
    cfg_path = run_dir / "run_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    method = cfg.get("method", {})
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    hparams = ""
    if role in ("unlearned", "relearned"):
        grid, _ = parse_tag(tag)
        hparams = " ".join(f"{k}={v}" for k, v in grid.items())
    row: dict[str, Any] = {
        "benchmark": bench,
        "model": model,
        "role": role,
        "entry": entry,
        "method": method.get("name", role),
        "hparams": hparams,
        "seed": cfg.get("train", {}).get("seed", ""),
        "forget_quality": result.get("forget_quality"),
        "model_utility": result.get("model_utility"),
    }
    for s in SETS:
        for m in METRICS:
            row[f"{s}_{m}"] = result.get("aggregates", {}).get(s, {}).get(m)
    row["origin"] = parts[-2] if role in ("target", "retain") else ""
    row["protocol"] = result.get("protocol", "qa")
    # metrics that could not be measured, with the reason (e.g. no retain model)
    unavailable = {}
    for key, reason in result.get("unavailable", {}).items():
        unavailable[PROTOCOL_COLUMNS.get(row["protocol"], {}).get(key, key)] = reason
    for key, col in PROTOCOL_COLUMNS.get(row["protocol"], {}).items():
        row[col] = result.get("metrics", {}).get(key)
    row["relearn_steps"] = relearn_steps
    if relearn_steps is not None:  # the unlearning run's seed, not the relearning's data seed
        unlearn_cfg = run_dir.parents[1] / "run_config.yaml"
        if unlearn_cfg.exists():
            row["seed"] = (
                (yaml.safe_load(unlearn_cfg.read_text()) or {}).get("train", {}).get("seed", "")
            )
    for suite_file in sorted((run_dir / "suites").glob("*.json")):
        suite = json.loads(suite_file.read_text())
        for key, value in suite.get("metrics", {}).items():
            row[f"{suite_file.stem}.{key}"] = value
        for key, reason in suite.get("unavailable", {}).items():
            row[f"{suite_file.stem}.{key}"] = None
            unavailable[f"{suite_file.stem}.{key}"] = reason
        row.setdefault("_suite_kinds", {})[suite_file.stem] = suite.get("kind", "")
    row["_unavailable"] = unavailable
    prov = result.get("provenance") or {}
    train_prov = summary.get("provenance") or {}
    row["eval_code"] = prov.get("code")
    row["train_code"] = train_prov.get("code")
    row["_packages"] = {
        **{f"train {k}": v for k, v in (train_prov.get("packages") or {}).items()},
        **{f"eval {k}": v for k, v in (prov.get("packages") or {}).items()},
    }
    row["_git"] = (prov.get("git") or {}).get("commit")
    row["train_wall_s"] = summary.get("wall_time_s")
    row["steps"] = summary.get("steps")
    row["adapter"] = adapter_label(summary.get("adapter")) if summary else None
    row["trainable_params"] = summary.get("trainable_parameters")
    row["path"] = str(run_dir)
    return row


def adapter_label(adapter: dict | None) -> str:
    """``lora r=8 a=16`` for a LoRA run's ``summary.json["adapter"]``, ``full`` without one."""
    if not adapter:
        return "full"
    return f"{adapter.get('method', 'lora')} r={adapter.get('rank')} a={_fmt_num(adapter.get('alpha'))}"


def _fmt_num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def build_rows(eval_files: list[str | Path]) -> list[dict[str, Any]]:
    """One row per evaluated model, target and retain first, then runs sorted by name."""
    rows = [_row_from_eval(Path(p)) for p in eval_files]
    order = {"target": 0, "retain": 1, "unlearned": 2, "relearned": 3}
    return sorted(
        rows,
        key=lambda r: (
            r["benchmark"],
            r["model"],
            order[r["role"]],
            r["entry"],
            _sort_value(r),
            r["path"],
        ),
    )


def suite_columns(rows: list[dict]) -> list[str]:
    """``<suite>.<metric>`` columns present in any row, in first-seen order."""
    cols: dict[str, None] = {}
    for r in rows:
        for key in r:
            if "." in key and not key.startswith("_"):
                cols[key] = None
    return list(cols)


def columns(rows: list[dict]) -> list[str]:
    return (
        BASE_COLUMNS
        + [f"{s}_{m}" for s in SETS for m in METRICS]
        + suite_columns(rows)
        + [c for p in PROTOCOL_COLUMNS.values() for c in p.values() if any(c in r for r in rows)]
        + ["relearn_steps", "adapter", "trainable_params", "train_wall_s", "steps", "origin"]
        + ["protocol", "train_code", "eval_code", "path"]
    )


def write_csv(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns(rows), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


def _table(rows: list[dict], cols: list[str], names: dict[str, str] | None = None) -> list[str]:
    names = names or {}
    lines = ["| " + " | ".join(names.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in rows]
    reasons = {
        (names.get(c, c), r["_unavailable"][c])
        for r in rows
        for c in cols
        if c in r.get("_unavailable", {})
    }
    lines += [f"\nn/a, {col}: {reason}" for col, reason in sorted(reasons)]
    return lines


def _cell(row: dict, col: str) -> str:
    """A table cell: the value, or "n/a" for a metric that could not be measured (the reason
    goes under the table), never an invented number."""
    if row.get(col) is None and col in row.get("_unavailable", {}):
        return "n/a"
    return _fmt(row.get(col))


SUITE_NOTES = {
    "wmdp": "zero-shot accuracy, lm-evaluation-harness prompt format (chance 0.25; lower = more hazardous "
    "knowledge removed)",
    "mmlu": "zero-shot accuracy, lm-evaluation-harness prompt format (chance 0.25; higher = more general "
    "knowledge kept)",
    "tofu_mc": "the benchmark's QA as 4-way questions (correct answer among three perturbed ones), "
    "lm-evaluation-harness format, chance 0.25",
    "muse": "MUSE-News, MUSE's scale: verbmem_f / knowmem_f / knowmem_r = mean ROUGE-L F1 x 100 (forget: "
    "lower is better; retain: higher); privleak = (AUC - AUC_ref) / AUC_ref x 100 with Min-40% "
    "scores, forget vs holdout (near 0 = like the reference); mia_*_auc: member = forget, 0.5 = "
    "indistinguishable from holdout",
    "memorisation": "teacher-forced on the forget answers: exact memorisation = share of answer tokens "
    "predicted exactly; extraction strength = 1 - (shortest prefix after which every "
    "token is predicted) / length",
}


def provenance_lines(rows: list[dict]) -> list[str]:
    """The report's provenance section: the code fingerprints and package versions behind the
    rows, with a warning when one table mixes results of different code or packages."""
    lines = ["", "## Provenance", ""]
    for key, what in (("train_code", "training code"), ("eval_code", "evaluation code")):
        values: dict[Any, list[str]] = {}
        for r in rows:
            if r.get(key) is not None:
                values.setdefault(r[key], []).append(_label(r))
        if len(values) > 1:
            parts = "; ".join(f"{v}: {', '.join(labels)}" for v, labels in sorted(values.items()))
            lines.append(
                f"**Warning: results of different {what} in one table** ({parts}). "
                "Rerun the stale ones (code_rerun: true does) before comparing them."
            )
        elif values:
            lines.append(f"{what}: fingerprint {next(iter(values))} (every row)")
    packages: dict[str, set] = {}
    for r in rows:
        for name, version in r.get("_packages", {}).items():
            packages.setdefault(name, set()).add(version)
    mixed = {k: sorted(map(str, v)) for k, v in packages.items() if len(v) > 1}
    if mixed:
        lines.append(
            "**Warning: different package versions in one table**: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(mixed.items()))
        )
    elif packages:
        lines.append(
            "packages: "
            + ", ".join(
                f"{k.split(' ', 1)[1]} {next(iter(v))}"
                for k, v in sorted(packages.items())
                if k.startswith("eval ")
            )
        )
    commits = {r.get("_git") for r in rows if r.get("_git")}
    if commits:
        lines.append(f"git commit(s): {', '.join(sorted(c[:12] for c in commits))}")
    return lines


def write_markdown(rows: list[dict], path: str | Path, extra: list[str] = ()) -> None:
    ident = ["benchmark", "model", "entry", "hparams", "seed"]
    cols = [
        *ident,
        "forget_quality",
        "model_utility",
        "forget_probability",
        "forget_rouge",
        "retain_probability",
        "retain_rouge",
        "adapter",
        "trainable_params",
        "train_wall_s",
    ]
    main_rows = [r for r in rows if r["role"] != "relearned"]
    lines = [
        "# blur-pipeline summary",
        "",
        "## TOFU metrics",
        "",
        "forget_quality: KS p-value vs the retain model (higher = closer to never trained on the "
        "forget set); "
        "model_utility: harmonic mean of 9 utility numbers (higher = more kept); "
        "adapter: full-parameter training or the LoRA adapter a run trained "
        "(trainable_params: the parameters it updated).",
        "",
    ]
    qa_rows = [r for r in main_rows if r.get("protocol", "qa") == "qa"]
    if qa_rows:
        lines += _table(qa_rows, cols)
    else:
        lines += ["(no TOFU-style benchmark in this study)"]
    for protocol, title in (("muse", "MUSE protocol (text corpora)"), ("wmdp", "WMDP protocol")):
        prows = [r for r in main_rows if r.get("protocol") == protocol]
        if prows:
            pcols = [c for c in PROTOCOL_COLUMNS[protocol].values() if any(c in r for r in prows)]
            lines += ["", f"## {title}", "", PROTOCOL_NOTES[protocol], ""]
            lines += _table(prows, [*ident, *pcols, "train_wall_s"])
    published = sorted(
        f"{r['benchmark']}/{r['model']} {r['role']}"
        for r in main_rows
        if r.get("origin") == "published"
    )
    if published:
        lines += [
            "",
            "Published checkpoints (imported, not fine-tuned here): " + ", ".join(published),
        ]
    kinds: dict[str, str] = {}
    for r in main_rows:
        kinds.update(r.get("_suite_kinds", {}))
    for suite, kind in kinds.items():
        metric_cols = [c for c in suite_columns(main_rows) if c.split(".", 1)[0] == suite]
        lines += ["", f"## {suite} ({kind})", "", SUITE_NOTES.get(kind, ""), ""]
        lines += _table(
            main_rows, ident + metric_cols, {c: c.split(".", 1)[1] for c in metric_cols}
        )
    relearned = [r for r in rows if r["role"] == "relearned"]
    if relearned:
        before = {
            (r["benchmark"], r["model"], r["entry"], r["hparams"], r["seed"]): r
            for r in main_rows
            if r["role"] == "unlearned"
        }
        # what forgetting means per protocol: TOFU's forget metrics, MUSE's memorisation of
        # the forget corpus, WMDP's forget accuracy
        keys_of = {
            "qa": ("forget_probability", "forget_rouge", "forget_quality"),
            "muse": ("verbmem_f", "knowmem_f"),
            "wmdp": ("forget_mc_accuracy",),
        }
        relearn_keys = [
            k
            for p in dict.fromkeys(r.get("protocol", "qa") for r in relearned)
            for k in keys_of.get(p, ())
        ]
        references = {
            (r["benchmark"], r["model"], r["role"]): r
            for r in main_rows
            if r["role"] in ("target", "retain")
        }
        table = []
        for r in relearned:
            b = before.get((r["benchmark"], r["model"], r["entry"], r["hparams"], r["seed"]), {})
            target = references.get((r["benchmark"], r["model"], "target"), {})
            retain = references.get((r["benchmark"], r["model"], "retain"), {})
            table.append(
                {
                    **r,
                    **{f"before_{k}": b.get(k) for k in relearn_keys},
                    "recovery": relearn_recovery(
                        r.get("forget_probability"),
                        retain.get("forget_probability"),
                        target.get("forget_probability"),
                    ),
                }
            )
        recovery_cols = ["recovery"] if any(t["recovery"] is not None for t in table) else []
        lines += [
            "",
            "## Relearning attack",
            "",
            "each unlearned model fine-tuned K steps on part of the forget set; before -> after. "
            "A robust model looks like the retain model (never trained on the forget set) after "
            "the attack: its forget probability stays near the retain model's and its forget "
            "quality stays high; a model that only hid the answers gets them back. "
            "recovery = (forget probability after - retain model's) / (target's - retain "
            "model's): 0 = at the retain model's level, 1 = back at the target's.",
            "",
        ]
        lines += relearn_reference_lines(references, relearned)
        lines += _table(
            table,
            [
                *ident,
                "relearn_steps",
                *(c for k in relearn_keys for c in (f"before_{k}", k)),
                *recovery_cols,
            ],
            {k: f"after_{k}" for k in relearn_keys},
        )
    lines += list(extra)
    lines += provenance_lines(rows)
    Path(path).write_text("\n".join(lines) + "\n")


def relearn_recovery(
    after: float | None, retain: float | None, target: float | None
) -> float | None:
    """Where a relearned model's forget probability lies between the retain model's (0) and
    the target's (1): ``(after - retain) / (target - retain)``; None without both references
    or when they coincide (no scale). Negative: below the retain model; above 1: past the
    target."""
    if after is None or retain is None or target is None or abs(target - retain) < 1e-12:
        return None
    return (after - retain) / (target - retain)


def relearn_reference_lines(references: dict, relearned: list[dict]) -> list[str]:
    """The retain and target models' forget probability for each benchmark/model that the
    relearning table covers: the levels a relearned model is read against."""
    lines = []
    for bench, model in dict.fromkeys((r["benchmark"], r["model"]) for r in relearned):
        values = {
            role: references.get((bench, model, role), {}).get("forget_probability")
            for role in ("retain", "target")
        }
        if all(v is not None for v in values.values()):
            lines.append(
                f"{bench}/{model}: forget probability of the retain model {_fmt(values['retain'])} "
                f"(robust), of the target {_fmt(values['target'])} (fully relearned)"
            )
    return [*lines, ""] if lines else []


def _grid_value(row: dict) -> float:
    try:
        return float(row["hparams"].split()[0].split("=", 1)[1])
    except (IndexError, ValueError):
        return math.nan


def _sort_value(row: dict) -> float:
    value = _grid_value(row)
    return -math.inf if math.isnan(value) else value


def forgetting_value(row: dict, with_fq: bool, floor: float = 1e-12) -> float:
    """The trade-off plot's y value of ``row``: forget quality (floored at ``floor`` for the
    log axis), or the forget probability where the experiment has no forget quality."""
    return max(row["forget_quality"], floor) if with_fq else row["forget_probability"]


def _floored_note(row: dict, plotted: float, with_fq: bool) -> str:
    """`` (forget quality 1.5e-18, drawn at 1e-12)`` where the log axis' floor moved the
    point, else ``""``: a floored point must not pass for its plotted value."""
    if not with_fq or row["forget_quality"] >= plotted:
        return ""
    return f" (forget quality {row['forget_quality']:.2g}, drawn at {plotted:.0e})"


def _scatter_reference_models(ax, rows: list[dict], point, note=lambda r: "") -> None:
    """The target (star) and retain (diamond) models among ``rows`` at ``point(r) = (x,
    y)``, labelled ``"<role> model" + note(r)``; in black, as the method lines take
    tab10's colours."""
    for role, marker in (("target", "*"), ("retain", "D")):
        for r in (r for r in rows if r["role"] == role):
            x, y = point(r)
            ax.scatter(
                [x],
                [y],
                marker=marker,
                s=160,
                color="black",
                zorder=5,
                label=f"{role} model" + note(r),
                edgecolors="white",
            )


def tradeoff_series(rows: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """What the trade-off plot joins: ``{(benchmark, model): {entry: [rows]}}``, each entry's
    unlearned runs in order of the plotted forgetting measure (forget quality ascending, or,
    without a retain model, forget probability descending: from least to most forgotten),
    ties broken by the forget probability (higher first), then the grid value.

    Joining the points in grid order instead draws lines that cross themselves wherever a
    hyperparameter does not move forgetting monotonically (noise, or a non-monotone method);
    in this order each line is a curve along the forgetting axis."""
    out: dict[tuple, dict[str, list[dict]]] = {}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["model"]), []).append(r)
    for key, grp in groups.items():
        with_fq = all(r.get("forget_quality") is not None for r in grp)
        sign = 1.0 if with_fq else -1.0

        def order(r, with_fq=with_fq, sign=sign):
            prob = r.get("forget_probability")
            return (
                sign * forgetting_value(r, with_fq),
                -prob if prob is not None else math.inf,
                _sort_value(r),
            )

        entries = sorted({r["entry"] for r in grp if r["role"] == "unlearned"})
        out[key] = {
            e: sorted((r for r in grp if r["role"] == "unlearned" and r["entry"] == e), key=order)
            for e in entries
        }
    return out


def plot_tradeoff(rows: list[dict], path: str | Path) -> None:
    """Forget quality (log y) vs model utility (x): one series per sweep entry, its points
    joined in order of forgetting (:func:`tradeoff_series`), each labelled with its grid value.

    An experiment without a retain model has no forget quality; its panel plots the forget
    probability (linear, lower = more forgotten) instead and says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["model"]), []).append(r)
    if not groups:  # a study of text corpora only: their trade-offs are in plots/
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "no TOFU-style benchmark in this study:\nthe corpus protocols' "
            "trade-offs are in plots/muse_*.png and plots/wmdp_*.png",
            ha="center",
            va="center",
        )
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    series = tradeoff_series(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 5.5), squeeze=False)
    for ax, ((bench, model), grp) in zip(axes[0], groups.items()):
        with_fq = all(r.get("forget_quality") is not None for r in grp)

        def y_of(r, with_fq=with_fq):
            return forgetting_value(r, with_fq)

        cmap = plt.get_cmap("tab10")
        for i, (entry, pts) in enumerate(series[(bench, model)].items()):
            xs = [r["model_utility"] for r in pts]
            ys = [y_of(r) for r in pts]
            keys = sorted({kv.split("=", 1)[0] for r in pts for kv in r["hparams"].split()})
            label = f"{entry} ({pts[0]['method']}" + (f"; {', '.join(keys)}" if keys else "") + ")"
            ax.plot(xs, ys, "-o", color=cmap(i % 10), label=label, alpha=0.85)
            for r, x, y in zip(pts, xs, ys):
                value = " ".join(kv.split("=", 1)[1] for kv in r["hparams"].split())
                ax.annotate(
                    value + _floored_note(r, y, with_fq),
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, 3),
                    fontsize=8,
                    color=cmap(i % 10),
                )
        _scatter_reference_models(
            ax,
            grp,
            lambda r: (r["model_utility"], y_of(r)),
            lambda r, with_fq=with_fq: _floored_note(r, y_of(r), with_fq),
        )
        ax.set_xlabel("model utility (higher = more kept)")
        if with_fq:
            ax.set_yscale("log")
            ax.set_ylabel("forget quality (KS p-value vs retain model, log)")
        else:
            ax.set_ylabel(
                "forget probability (lower = more forgotten; forget quality n/a: no retain model)"
            )
        ax.set_title(f"{bench} / {model}: forgetting vs utility")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label(r: dict) -> str:
    if r["role"] in ("target", "retain"):
        return f"{r['role']} model"
    return f"{r['entry']} {r['hparams']}".strip() + (
        f" s{r['seed']}" if r.get("seed") not in ("", None) else ""
    )


def plot_suites(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per suite (MC / memorisation: bars per model; MUSE: KnowMem forget vs retain)
    and ``relearn.png`` (forget probability before and after relearning), per benchmark/model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    main_rows = [r for r in rows if r["role"] != "relearned"]
    kinds: dict[str, str] = {}
    for r in main_rows:
        kinds.update(r.get("_suite_kinds", {}))
    for suite, kind in kinds.items():
        have = [r for r in main_rows if any(k.startswith(f"{suite}.") for k in r)]
        if kind == "muse" and all(
            r.get(f"{suite}.knowmem_f") is not None and r.get(f"{suite}.knowmem_r") is not None
            for r in have
        ):
            fig, ax = plt.subplots(figsize=(7, 5.5))
            for r in have:
                ax.scatter(
                    r[f"{suite}.knowmem_r"],
                    r[f"{suite}.knowmem_f"],
                    marker={"target": "*", "retain": "D"}.get(r["role"], "o"),
                    s=90,
                )
                ax.annotate(
                    _label(r),
                    (r[f"{suite}.knowmem_r"], r[f"{suite}.knowmem_f"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, 3),
                )
            ax.set_xlabel("KnowMem retain (ROUGE-L F1 x100, higher = kept)")
            ax.set_ylabel("KnowMem forget (ROUGE-L F1 x100, lower = forgotten)")
            ax.set_title(f"{suite}: knowledge forgotten vs kept")
        else:
            metric = {"memorisation": None}.get(kind, "accuracy")
            keys = [
                k
                for k in suite_columns(have)
                if k.startswith(f"{suite}.")
                and (metric is None or k == f"{suite}.{metric}")
                and not k.endswith(".n")
            ]
            if not keys:
                continue
            fig, ax = plt.subplots(figsize=(8, 0.35 * len(have) * len(keys) + 1.8))
            labels = [_label(r) for r in have]
            height = 0.8 / len(keys)
            for j, key in enumerate(keys):
                ax.barh(
                    [i + j * height for i in range(len(have))],
                    [r.get(key) or 0.0 for r in have],
                    height=height,
                    label=key.split(".", 1)[1],
                )
            ax.set_yticks([i + 0.4 - height / 2 for i in range(len(have))], labels, fontsize=7)
            ax.invert_yaxis()
            if kind in ("wmdp", "mmlu", "tofu_mc"):
                ax.axvline(0.25, color="grey", ls="--", lw=1, label="chance")
                ax.set_xlabel("accuracy")
            ax.legend(fontsize=7)
            ax.set_title(f"{suite} ({kind})")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{suite}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    relearned = [r for r in rows if r["role"] == "relearned"]
    if relearned:
        before = {
            (r["benchmark"], r["model"], r["entry"], r["hparams"], r["seed"]): r
            for r in main_rows
            if r["role"] == "unlearned"
        }
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(relearned) + 1.8))
        for i, r in enumerate(relearned):
            b = before.get((r["benchmark"], r["model"], r["entry"], r["hparams"], r["seed"]), {})
            x0, x1 = b.get("forget_probability"), r.get("forget_probability")
            if x0 is not None and x1 is not None:
                ax.annotate(
                    "", (x1, i), (x0, i), arrowprops={"arrowstyle": "->", "color": "tab:red"}
                )
                ax.scatter(
                    [x0], [i], color="tab:blue", zorder=3, label="unlearned" if i == 0 else None
                )
                ax.scatter(
                    [x1],
                    [i],
                    color="tab:red",
                    zorder=3,
                    label="after relearning" if i == 0 else None,
                )
        for r in main_rows:
            if r["role"] in ("target", "retain") and r.get("forget_probability") is not None:
                ax.axvline(
                    r["forget_probability"],
                    ls="--",
                    lw=1,
                    color="black" if r["role"] == "target" else "tab:green",
                    label=f"{r['role']} model",
                )
        ax.set_yticks(
            range(len(relearned)),
            [f"{_label(r)} k={r['relearn_steps']}" for r in relearned],
            fontsize=7,
        )
        ax.invert_yaxis()
        ax.set_xlabel("forget-set answer probability")
        ax.set_title("relearning attack: forget probability before -> after")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = out_dir / "relearn.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# the metrics plotted over checkpoints, per protocol
CHECKPOINT_METRICS = {
    "qa": ("forget_quality", "model_utility"),
    "muse": ("knowmem_f", "knowmem_r", "verbmem_f"),
    "wmdp": ("forget_mc_accuracy", "utility_mc_accuracy"),
}


def checkpoint_series(
    rows: list[dict], checkpoint_evals: list[str | Path], selections: list[str | Path] = ()
) -> list[dict]:
    """One entry per run with evaluated checkpoints: its report row, ``points`` (step ->
    metric values, the final model included at its step count) and its ``selection``
    (``selection.json``, or None)."""
    by_dir = {Path(r["path"]): r for r in rows if r["role"] == "unlearned"}
    series: dict[Path, dict] = {}
    for path in map(Path, checkpoint_evals):
        run_dir = path.parents[2]  # runs/E/T/steps/N/eval.json
        if path.parent.parent.name != "steps" or run_dir not in by_dir:
            raise ValueError(f"{path}: not <run>/steps/<N>/eval.json of an evaluated run")
        entry = series.setdefault(
            run_dir, {"row": by_dir[run_dir], "points": {}, "selection": None}
        )
        entry["points"][int(path.parent.name)] = metric_values(json.loads(path.read_text()))
    for run_dir, entry in series.items():
        final = json.loads((run_dir / "eval.json").read_text())
        entry["final_step"] = entry["row"].get("steps")
        if entry["final_step"] is not None:
            entry["points"][int(entry["final_step"])] = metric_values(final)
    for path in map(Path, selections):
        run_dir = path.parents[1]  # runs/E/T/selected/selection.json
        if run_dir in series:
            series[run_dir]["selection"] = json.loads(path.read_text())
    return [series[k] for k in sorted(series, key=lambda d: _row_key(series[d]["row"]))]


def _row_key(r: dict) -> tuple:
    return (r["benchmark"], r["model"], r["entry"], _sort_value(r), r["path"])


def checkpoint_lines(series: list[dict], references: list[dict]) -> list[str]:
    """The report's per-checkpoint table and, with unlearn.select, each run's choice."""
    if not series:
        return []
    lines = [
        "",
        "## Per-checkpoint evaluation",
        "",
        "each run's metrics after the listed optimizer steps (the last step is the final "
        "model); `*` marks the checkpoint unlearn.select chose. Plots: plots/checkpoints_*.png.",
        "",
    ]
    protocols = {s["row"].get("protocol", "qa") for s in series}
    metrics = [m for p in sorted(protocols) for m in CHECKPOINT_METRICS.get(p, ())]
    table = []
    for s in series:
        chosen = (s["selection"] or {}).get("selected_step")
        for step, values in sorted(s["points"].items()):
            table.append(
                {
                    **s["row"],
                    "step": f"{step}{' (final)' if step == s['final_step'] else ''}"
                    + (" *" if step == chosen else ""),
                    **{m: values.get(m) for m in metrics},
                }
            )
    lines += _table(table, ["benchmark", "model", "entry", "hparams", "seed", "step", *metrics])
    chosen = [s for s in series if s["selection"] is not None]
    if chosen:
        criterion = chosen[0]["selection"]["criterion"]
        goal = next(k for k in criterion if k != "subject_to")
        text = f"{goal} {criterion[goal]}"
        if criterion.get("subject_to"):
            text += " subject to " + " and ".join(f"`{c}`" for c in criterion["subject_to"])
        lines += ["", "## Checkpoint selection", "", f"criterion: {text}", ""]
        table = [
            {
                **s["row"],
                "selected_step": s["selection"]["selected_step"],
                "satisfied": "yes" if s["selection"]["satisfied"] else "NO",
                "reason": s["selection"]["reason"],
            }
            for s in chosen
        ]
        lines += _table(
            table,
            [
                "benchmark",
                "model",
                "entry",
                "hparams",
                "seed",
                "selected_step",
                "satisfied",
                "reason",
            ],
        )
    return lines


def plot_checkpoints(series: list[dict], rows: list[dict], out_dir: str | Path) -> list[Path]:
    """``checkpoints_<bench>_<model>.png``: one panel per metric, each run's value over its
    steps (the final model at its step count), the selected checkpoint circled, the target /
    retain model's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[dict]] = {}
    for s in series:
        groups.setdefault((s["row"]["benchmark"], s["row"]["model"]), []).append(s)
    written = []
    for (bench, model), grp in groups.items():
        metrics = CHECKPOINT_METRICS.get(grp[0]["row"].get("protocol", "qa"), ())
        refs = [
            r
            for r in rows
            if (r["benchmark"], r["model"]) == (bench, model) and r["role"] in ("target", "retain")
        ]
        fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.8), squeeze=False)
        cmap = plt.get_cmap("tab10")
        for ax, metric in zip(axes[0], metrics):
            log = metric == "forget_quality"
            for i, s in enumerate(grp):
                pts = [(k, v.get(metric)) for k, v in sorted(s["points"].items())]
                pts = [(k, max(v, 1e-12) if log else v) for k, v in pts if v is not None]
                if not pts:
                    continue
                ax.plot(*zip(*pts), "-o", color=cmap(i % 10), label=_label(s["row"]), alpha=0.85)
                chosen = (s["selection"] or {}).get("selected_step")
                for k, v in pts:
                    if k == chosen:
                        ax.scatter(
                            [k],
                            [v],
                            s=220,
                            facecolors="none",
                            edgecolors=cmap(i % 10),
                            lw=2,
                            zorder=5,
                        )
            for r in refs:
                if r.get(metric) is not None:
                    ax.axhline(
                        max(r[metric], 1e-12) if log else r[metric],
                        ls="--",
                        lw=1,
                        color="black" if r["role"] == "target" else "tab:green",
                        label=f"{r['role']} model",
                    )
            if log:
                ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(metric + (" (log)" if log else ""))
            ax.set_title(f"{bench} / {model}: {metric} over steps")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"checkpoints_{bench}_{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(
    eval_files: list[str | Path],
    out_dir: str | Path,
    checkpoint_evals: list[str | Path] = (),
    selections: list[str | Path] = (),
) -> list[dict]:
    """summary.csv / summary.md / tradeoff.png / plots/; with ``checkpoint_evals``
    (``<run>/steps/<N>/eval.json``) the per-checkpoint table and plots, with ``selections``
    (``<run>/selected/selection.json``) each run's chosen checkpoint."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(eval_files)
    series = checkpoint_series(rows, checkpoint_evals, selections)
    write_csv(rows, out_dir / "summary.csv")
    write_markdown(rows, out_dir / "summary.md", checkpoint_lines(series, rows))
    if series:
        plot_checkpoints(series, rows, out_dir / "plots")
    main_rows = [r for r in rows if r["role"] != "relearned"]
    plot_tradeoff(
        [r for r in main_rows if r.get("protocol", "qa") == "qa"], out_dir / "tradeoff.png"
    )
    plot_suites(rows, out_dir / "plots")
    plot_protocols(main_rows, out_dir / "plots")
    return rows


def plot_protocols(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """The corpus protocols' trade-offs, one PNG per benchmark/model: MUSE (KnowMem on the
    forget set vs KnowMem on the retain set) and WMDP (forget accuracy drop from the target
    vs utility accuracy), one series per sweep entry, target / retain marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_of = {
        "muse": (
            "knowmem_r",
            "knowmem_f",
            "KnowMem retain (ROUGE-L F1 x 100, higher = kept)",
            "KnowMem forget (lower = forgotten)",
        ),
        "wmdp": (
            "utility_mc_accuracy",
            "forget_mc_drop",
            "utility accuracy (MMLU or stand-in)",
            "forget accuracy drop from the target (higher = removed)",
        ),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("protocol") in axes_of:
            groups.setdefault((r["protocol"], r["benchmark"], r["model"]), []).append(r)
    for (protocol, bench, model), grp in groups.items():
        xkey, ykey, xlabel, ylabel = axes_of[protocol]
        if protocol == "wmdp":
            target = next((r for r in grp if r["role"] == "target"), None)
            base = None if target is None else target.get("forget_mc_accuracy")
            for r in grp:
                acc = r.get("forget_mc_accuracy")
                r["forget_mc_drop"] = None if base is None or acc is None else base - acc
        pts_all = [r for r in grp if r.get(xkey) is not None and r.get(ykey) is not None]
        if not pts_all:
            continue
        fig, ax = plt.subplots(figsize=(7, 5.5))
        cmap = plt.get_cmap("tab10")
        entries = sorted({r["entry"] for r in pts_all if r["role"] == "unlearned"})
        for i, entry in enumerate(entries):
            pts = sorted((r for r in pts_all if r["entry"] == entry), key=lambda r: r[ykey])
            ax.plot(
                [r[xkey] for r in pts],
                [r[ykey] for r in pts],
                "-o",
                color=cmap(i % 10),
                label=f"{entry} ({pts[0]['method']})",
                alpha=0.85,
            )
            for r in pts:
                value = " ".join(kv.split("=", 1)[1] for kv in r["hparams"].split())
                ax.annotate(
                    value,
                    (r[xkey], r[ykey]),
                    textcoords="offset points",
                    xytext=(5, 3),
                    fontsize=8,
                    color=cmap(i % 10),
                )
        _scatter_reference_models(ax, pts_all, lambda r, x=xkey, y=ykey: (r[x], r[y]))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{bench} / {model}: {protocol} protocol")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = out_dir / f"{protocol}_{bench}_{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for r in rows:
        r.pop("forget_mc_drop", None)
    return written
