"""Checkpoint selection: one step per unlearning run, chosen by a criterion on its evaluations.

The pipeline's ``unlearn.select`` (validated when Snakemake starts, :func:`parse_selection`)::

    select:
      maximize: forget_quality                      # or minimize: <metric>
      subject_to: "model_utility >= 0.95 * target"  # or a list of such (all must hold)

A constraint is ``METRIC OP RHS`` with ``OP`` one of ``>= <= > <`` and ``RHS`` a number, or
``[NUMBER *] REF`` / ``REF [* NUMBER]`` where ``REF`` is ``target`` or ``retain``: that
model's value of the same metric (read from its ``eval.json``). It is parsed by one regular
expression, never evaluated as code. Metrics are the names of :func:`metric_values` (the
report's column names): ``forget_quality``, ``model_utility``, ``<set>_<probability|rouge|
truth_ratio>`` on TOFU-style benchmarks, the protocol's columns on text corpora.

:func:`select_checkpoint` is the whole policy, a pure function of the candidates' values:

* a candidate is feasible when every constraint holds and its objective was measured;
* the feasible candidate with the best objective wins; ties go to the earliest step
  (less unlearning for the same result);
* with no feasible candidate the one closest to feasibility wins: the smallest sum over the
  constraints of the relative shortfall ``max(0, threshold - value) / |threshold|`` (for
  ``>=``; mirrored for ``<=``), ties broken by the objective, then the step. The record says
  ``satisfied: false`` and ``no checkpoint satisfies ...`` so it cannot be mistaken for a
  feasible choice.

The candidates are every evaluated checkpoint of the run and its final model.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blur_core.config import ConfigError

__all__ = [
    "METRICS",
    "PROTOCOL_COLUMNS",
    "QA_METRICS",
    "SETS",
    "Constraint",
    "Selection",
    "metric_names",
    "metric_values",
    "parse_constraint",
    "parse_selection",
    "select_checkpoint",
]

SETS = ("forget", "retain", "real_authors", "world_facts")
METRICS = ("probability", "rouge", "truth_ratio")
QA_METRICS = ("forget_quality", "model_utility", *(f"{s}_{m}" for s in SETS for m in METRICS))
# eval.json metric of a corpus protocol (blur_core/eval/corpus.py) -> report column
PROTOCOL_COLUMNS: dict[str, dict[str, str]] = {
    "muse": {
        "muse.verbmem_f": "verbmem_f",
        "muse.knowmem_f": "knowmem_f",
        "muse.knowmem_r": "knowmem_r",
        "muse.privleak": "privleak",
        "muse.privleak_auc": "privleak_auc",
        "muse.mia_minkpp_auc": "mia_minkpp_auc",
    },
    "wmdp": {
        "forget_mc.accuracy": "forget_mc_accuracy",
        "utility_mc.accuracy": "utility_mc_accuracy",
    },
}
# metrics that compare against the retain model (unavailable without one)
NEEDS_RETAIN = ("forget_quality", "privleak")
REFERENCES = ("target", "retain")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CONSTRAINT = re.compile(
    rf"\s*(?P<metric>{_NAME})\s*(?P<op>>=|<=|>|<)\s*"
    rf"(?:(?P<num>{_NUM})(?:\s*\*\s*(?P<ref1>{_NAME}))?|(?P<ref2>{_NAME})(?:\s*\*\s*(?P<num2>{_NUM}))?)"
    r"\s*"
)


def metric_names(protocol: str = "qa") -> tuple[str, ...]:
    """The metrics a criterion may name on a benchmark of ``protocol`` (qa, muse, wmdp)."""
    if protocol == "qa":
        return QA_METRICS
    return tuple(PROTOCOL_COLUMNS.get(protocol, {}).values())


def metric_values(result: Mapping[str, Any]) -> dict[str, float | None]:
    """An ``eval.json`` as ``metric -> value`` (None: not measured), the names of
    :func:`metric_names`."""
    protocol = result.get("protocol", "qa")
    if protocol == "qa":
        out: dict[str, float | None] = {
            "forget_quality": result.get("forget_quality"),
            "model_utility": result.get("model_utility"),
        }
        for s in SETS:
            for m in METRICS:
                out[f"{s}_{m}"] = result.get("aggregates", {}).get(s, {}).get(m)
        return out
    metrics = result.get("metrics", {})
    return {col: metrics.get(key) for key, col in PROTOCOL_COLUMNS.get(protocol, {}).items()}


@dataclass(frozen=True)
class Constraint:
    """``metric op factor * ref`` (``ref`` target / retain) or ``metric op value``."""

    text: str
    metric: str
    op: str
    value: float | None = None  # a plain number
    ref: str | None = None  # target | retain
    factor: float = 1.0

    def threshold(self, refs: Mapping[str, Mapping[str, float | None] | None]) -> float:
        if self.ref is None:
            return float(self.value)
        values = refs.get(self.ref)
        ref_value = None if values is None else values.get(self.metric)
        if ref_value is None:
            raise ValueError(
                f"{self.text!r}: the {self.ref} model's {self.metric} is not available"
            )
        return self.factor * float(ref_value)

    def holds(self, value: float | None, threshold: float) -> bool:
        return value is not None and _OPS[self.op](value, threshold)

    def shortfall(self, value: float | None, threshold: float) -> float:
        """How far ``value`` is from satisfying the constraint, relative to the threshold
        (0 when it holds; inf when the value was not measured)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.inf
        gap = threshold - value if self.op in (">=", ">") else value - threshold
        if self.holds(value, threshold):
            return 0.0
        return max(gap, 0.0) / max(abs(threshold), 1e-12) + (0.0 if gap > 0 else 1e-12)


@dataclass(frozen=True)
class Selection:
    goal: str  # maximize | minimize
    metric: str
    constraints: tuple[Constraint, ...] = ()

    def criterion(self) -> dict[str, Any]:
        return {self.goal: self.metric, "subject_to": [c.text for c in self.constraints]}

    def metrics(self) -> list[str]:
        return list(dict.fromkeys([self.metric, *(c.metric for c in self.constraints)]))


def parse_constraint(text: str, where: str, metrics: Sequence[str] = QA_METRICS) -> Constraint:
    """``"model_utility >= 0.95 * target"`` -> :class:`Constraint`; ``ConfigError`` naming
    ``where`` and the text otherwise."""
    if not isinstance(text, str):
        raise ConfigError(
            f'{where} = {text!r}: a constraint is a string such as "model_utility >= 0.95 * target"'
        )
    m = _CONSTRAINT.fullmatch(text)
    if m is None:
        raise ConfigError(
            f"{where} = {text!r}: expected METRIC OP RHS with OP one of >= <= > < and RHS a "
            "number, REF, NUMBER * REF or REF * NUMBER (REF: target or retain), e.g. "
            '"model_utility >= 0.95 * target"'
        )
    metric, op = m["metric"], m["op"]
    if metric not in metrics:
        raise ConfigError(f"{where} = {text!r}: unknown metric {metric!r} (known: {list(metrics)})")
    ref = m["ref1"] or m["ref2"]
    number = m["num"] if m["num"] is not None else m["num2"]
    if ref is None:
        return Constraint(text, metric, op, value=float(number))
    if ref not in REFERENCES:
        raise ConfigError(
            f"{where} = {text!r}: {ref!r} is neither a number nor a reference model "
            f"({' / '.join(REFERENCES)}: that model's {metric})"
        )
    return Constraint(text, metric, op, ref=ref, factor=1.0 if number is None else float(number))


def parse_selection(
    spec: Mapping[str, Any], where: str, metrics: Sequence[str] = QA_METRICS
) -> Selection:
    """``{maximize|minimize: METRIC, subject_to: CONSTRAINT | [CONSTRAINT, ...]}``."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} = {spec!r}: expected {{maximize: METRIC, subject_to: ...}}")
    unknown = sorted(set(spec) - {"maximize", "minimize", "subject_to"})
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]} (known: maximize, minimize, subject_to)"
        )
    goals = [g for g in ("maximize", "minimize") if g in spec]
    if len(goals) != 1:
        raise ConfigError(f"{where}: give exactly one of maximize and minimize (got {goals})")
    goal, metric = goals[0], spec[goals[0]]
    if metric not in metrics:
        raise ConfigError(f"{where}.{goal} = {metric!r}: unknown metric (known: {list(metrics)})")
    raw = spec.get("subject_to") or []
    raw = [raw] if isinstance(raw, str) else list(raw)
    constraints = tuple(
        parse_constraint(text, f"{where}.subject_to" + (f"[{i}]" if len(raw) > 1 else ""), metrics)
        for i, text in enumerate(raw)
    )
    return Selection(goal, metric, constraints)


def select_checkpoint(
    selection: Selection,
    candidates: Sequence[Mapping[str, Any]],
    refs: Mapping[str, Mapping[str, float | None] | None],
) -> dict[str, Any]:
    """Choose one of ``candidates`` (each ``{"step": N, "values": metric_values(...),
    ...}``; extra keys such as ``final`` / ``eval`` are kept) by ``selection`` (module
    docstring), with ``refs`` the target's / retain model's values. Returns the record that
    ``selection.json`` holds: the chosen step, the criterion, the thresholds, each
    candidate's values and why it was or was not chosen."""
    if not candidates:
        raise ValueError("no candidates to select from")
    thresholds = {c.text: c.threshold(refs) for c in selection.constraints}
    sign = 1.0 if selection.goal == "maximize" else -1.0
    rows = []
    for cand in sorted(candidates, key=lambda c: c["step"]):
        values = cand["values"]
        objective = values.get(selection.metric)
        checks = {
            c.text: c.holds(values.get(c.metric), thresholds[c.text]) for c in selection.constraints
        }
        shortfall = sum(
            c.shortfall(values.get(c.metric), thresholds[c.text]) for c in selection.constraints
        )
        measured = objective is not None and not math.isnan(objective)
        rows.append(
            {
                **{k: v for k, v in cand.items() if k != "values"},
                "values": {m: values.get(m) for m in selection.metrics()},
                "constraints": checks,
                "feasible": measured and all(checks.values()),
                "_objective": objective if measured else None,
                "_shortfall": shortfall,
            }
        )
    feasible = [r for r in rows if r["feasible"]]
    if feasible:
        best = min(feasible, key=lambda r: (-sign * r["_objective"], r["step"]))
        satisfied = True
        reason = (
            f"step {best['step']}: the {'highest' if sign > 0 else 'lowest'} {selection.metric} "
            f"({best['_objective']:.6g})"
            + (
                f" of the {len(feasible)} of {len(rows)} checkpoints that satisfy "
                + " and ".join(f"{t!r} (threshold {thresholds[t]:.6g})" for t in thresholds)
                if thresholds
                else f" of {len(rows)} checkpoints"
            )
        )
    else:
        measured = [r for r in rows if r["_objective"] is not None] or rows
        best = min(
            measured,
            key=lambda r: (
                r["_shortfall"],
                -sign * r["_objective"] if r["_objective"] is not None else math.inf,
                r["step"],
            ),
        )
        satisfied = False
        reason = (
            "no checkpoint satisfies "
            + " and ".join(f"{t!r} (threshold {thresholds[t]:.6g})" for t in thresholds)
            + f": chose step {best['step']}, the closest to satisfying it (relative shortfall "
            f"{best['_shortfall']:.4g}; ties broken by {selection.metric}, then the earlier step)"
        )
    for r in rows:
        if r is best:
            r["status"] = "selected"
            r["why"] = reason
        elif r["_objective"] is None:
            r["status"], r["why"] = "rejected", f"{selection.metric} not measured"
        elif not r["feasible"]:
            failed = [t for t, ok in r["constraints"].items() if not ok]
            r["status"] = "rejected"
            r["why"] = "violates " + "; ".join(
                f"{t} ({_show(r['values'].get(_metric_of(selection, t)))} vs {thresholds[t]:.6g})"
                for t in failed
            )
        else:
            r["status"] = "rejected"
            r["why"] = (
                f"{selection.metric} {r['_objective']:.6g} "
                + ("is not above" if sign > 0 else "is not below")
                + f" the selected {best['_objective']:.6g}"
                + (" (tie: the earlier step wins)" if r["_objective"] == best["_objective"] else "")
            )
    for r in rows:
        r.pop("_objective")
        r.pop("_shortfall")
    return {
        "selected_step": best["step"],
        "selected": {k: v for k, v in best.items() if k not in ("status", "why")},
        "criterion": selection.criterion(),
        "thresholds": thresholds,
        "references": {
            name: None if values is None else {m: values.get(m) for m in selection.metrics()}
            for name, values in refs.items()
        },
        "satisfied": satisfied,
        "reason": reason,
        "candidates": rows,
    }


def _metric_of(selection: Selection, text: str) -> str:
    return next(c.metric for c in selection.constraints if c.text == text)


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def select_from_files(
    spec: Mapping[str, Any],
    step_evals: Mapping[int, str],
    final_eval: str,
    final_step: int,
    target_eval: str,
    retain_eval: str | None = None,
) -> dict[str, Any]:
    """:func:`select_checkpoint` on evaluation JSON files: ``step_evals`` (step -> eval.json
    of that checkpoint), the final model's (after ``final_step`` steps), the target's and
    the retain model's (for ``retain`` references)."""
    import json
    from pathlib import Path

    def load(path: str) -> dict:
        return json.loads(Path(path).read_text())

    final = load(final_eval)
    selection = parse_selection(spec, "criterion", metric_names(final.get("protocol", "qa")))
    candidates = [
        {"step": int(step), "final": False, "eval": str(path), "values": metric_values(load(path))}
        for step, path in sorted(step_evals.items())
    ]
    candidates.append(
        {
            "step": int(final_step),
            "final": True,
            "eval": str(final_eval),
            "values": metric_values(final),
        }
    )
    refs = {
        "target": metric_values(load(target_eval)),
        "retain": metric_values(load(retain_eval)) if retain_eval else None,
    }
    return select_checkpoint(selection, candidates, refs)
