"""benchmarks/study_report.py: grouping over seeds, the Pareto front, and how one-seed
points and tiny KS p-values are printed (from a hand-made summary.csv)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "study_report", REPO / "benchmarks" / "study_report.py"
)
study_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study_report)

FIELDS = [
    "benchmark",
    "model",
    "role",
    "entry",
    "method",
    "hparams",
    "seed",
    "forget_quality",
    "model_utility",
    "forget_probability",
]


def _summary(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for role, entry, hparams, seed, fq, mu, fp in rows:
            writer.writerow(["tofu", "m", role, entry, "x", hparams, seed, fq, mu, fp])
    return path


def test_groups_seeds_and_finds_the_pareto_front(tmp_path):
    src = _summary(
        tmp_path / "summary.csv",
        [
            ("target", "target", "", 0, 1e-6, 0.5, 0.9),
            ("retain", "retain", "", 0, 1.0, 0.5, 0.1),
            ("unlearned", "blur_npo", "gamma=0.1,seed=0", 0, 0.2, 0.40, 0.1),
            ("unlearned", "blur_npo", "gamma=0.1,seed=1", 1, 0.4, 0.50, 0.3),
            (
                "unlearned",
                "graddiff",
                "retain_weight=1.0,seed=0",
                0,
                0.1,
                0.30,
                0.2,
            ),  # dominated by blur_npo
            (
                "unlearned",
                "npo",
                "retain_weight=1.0,seed=0",
                0,
                2.5e-5,
                0.60,
                0.5,
            ),  # best utility: on the front
        ],
    )
    groups, refs = study_report.load(src)
    by = {g["entry"]: g for g in groups}
    assert by["blur_npo"]["n"] == 2
    assert (
        abs(by["blur_npo"]["fq"][0] - 0.30) < 1e-12 and abs(by["blur_npo"]["fq"][1] - 0.1414) < 1e-3
    )
    assert [g["entry"] for g in groups if g["pareto"]] == ["blur_npo", "npo"]
    text = study_report.table(groups, refs, src)
    assert "| BLUR-NPO | gamma=0.1 | 2 | 0.300 ± 0.141 | 0.450 ± 0.071 |" in text
    # one seed: the value alone (no invented "± 0"); a tiny p-value in scientific notation
    assert "| NPO+GD | retain_weight=1.0 | 1 | 2.50e-05 | 0.600 | 0.5000 | **yes** |" in text
    assert "| GradDiff | retain_weight=1.0 | 1 | 0.100 | 0.300 | 0.2000 |  |" in text
    assert "| target model | - | - | 1.00e-06 | 0.500 |" in text
    assert "Pareto-optimal (by the means): BLUR-NPO: gamma=0.1; NPO+GD: retain_weight=1.0" in text
