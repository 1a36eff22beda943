"""TOFU evaluation (Maini et al. 2024), as TOFU's own code (docs/architecture.md section 8).

Four sets are evaluated: ``forget`` (``forgetXX_perturbed.json``), ``retain``
(``retain_perturbed.json``), ``real_authors`` and ``world_facts``
(``*_perturbed.json``). Per question the model is scored on

* ``answer_nll``: mean NLL of the answer tokens (answer + EOS, as in training), so
  the answer probability is ``P = exp(-answer_nll)``;
* ``paraphrased_nll``: the same for ``paraphrased_answer`` (on real_authors and
  world_facts, which have none, the answer itself plays that role);
* ``perturbed_nll``: the same for each of the ``K`` wrong ``perturbed_answer``;
* ``rouge_l_recall``: ROUGE-L recall (stemmed) of the greedy answer vs the answer;
* ``truth_ratio``: ``R = exp(paraphrased_nll - mean_j perturbed_nll_j)``.

Aggregates per set: ``probability`` (plain mean ``P`` on forget/retain, the
option-normalised probability on real_authors/world_facts), ``rouge`` (mean recall)
and ``truth_ratio`` (``mean(min(R, 1/R))`` on forget, ``mean(max(0, 1 - R))``
elsewhere). Model utility is the harmonic mean of the nine retain / real_authors /
world_facts aggregates; forget quality is the KS-test p-value between the forget-set
truth ratios of the evaluated model and of the retain-only model. Every aggregate is
recomputable from the per-example values alone (:func:`recompute_aggregates`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from blur_core.data import QAFormat, load_records
from blur_core.eval.generation import greedy_generate
from blur_core.eval.likelihood import answer_nll

__all__ = [
    "METRICS",
    "SETS",
    "SET_FILES",
    "UTILITY_KEYS",
    "UTILITY_SETS",
    "add_forget_quality",
    "evaluate_tofu",
    "forget_quality",
    "load_tofu_eval_sets",
    "model_utility",
    "normalised_probability",
    "probability",
    "recompute_aggregates",
    "rouge_l_recall",
    "truth_ratio",
    "truth_ratio_forget_score",
    "truth_ratio_retain_score",
    "utility_values",
]

SETS: tuple[str, ...] = ("forget", "retain", "real_authors", "world_facts")
"""The four evaluation sets, in report order."""
UTILITY_SETS: tuple[str, ...] = ("retain", "real_authors", "world_facts")
"""Sets whose aggregates enter model utility."""
NORMALISED_PROBABILITY_SETS: tuple[str, ...] = ("real_authors", "world_facts")
"""Sets whose probability is normalised over the answer options (as TOFU's own code)."""
METRICS: tuple[str, ...] = ("probability", "rouge", "truth_ratio")
"""Aggregate metrics per set."""
UTILITY_KEYS: tuple[str, ...] = tuple(f"{s}_{m}" for s in UTILITY_SETS for m in METRICS)
"""The nine ``<set>_<metric>`` names whose harmonic mean is model utility."""

SET_FILES: dict[str, str] = {
    "forget": "{forget_split}_perturbed.json",
    "retain": "retain_perturbed.json",
    "real_authors": "real_authors_perturbed.json",
    "world_facts": "world_facts_perturbed.json",
}
"""File name of each set inside a TOFU benchmark directory (hub layout)."""

_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "forget": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
    "retain": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
    "real_authors": ("question", "answer", "perturbed_answer"),
    "world_facts": ("question", "answer", "perturbed_answer"),
}


# ---------------------------------------------------------------------------
# pure metric functions
# ---------------------------------------------------------------------------


def _as_1d(name: str, values) -> np.ndarray:
    """``values`` as a float64 vector; ValueError naming ``name`` if not 1-D or not finite."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{bad}] is not finite: {arr[bad]}")
    return arr


def _rows(name: str, rows, n: int) -> list[np.ndarray]:
    """``rows`` (``[N, K]`` array or N sequences, possibly of different lengths) as N
    non-empty finite float64 vectors; ValueError naming the bad row otherwise."""
    if isinstance(rows, np.ndarray) and rows.ndim != 2:
        raise ValueError(f"{name} must be [N, K], got shape {rows.shape}")
    if len(rows) != n:
        raise ValueError(f"{name} has {len(rows)} rows but {n} were expected")
    out = []
    for i, row in enumerate(rows):
        arr = np.asarray(row, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name}[{i}] must be a non-empty list of numbers, got {row!r}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}[{i}] holds a non-finite value: {row!r}")
        out.append(arr)
    return out


def _nonempty(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        raise ValueError(f"{name} is empty; an aggregate needs at least one example")
    return arr


def truth_ratio(paraphrased_nll, perturbed_nll) -> np.ndarray:
    """Per-example truth ratio ``R_i = exp(l_para_i - (1/K) sum_j l_pert_ij)``.

    ``l`` are mean answer NLLs, so ``R_i = (prod_j P_pert_ij)^(1/K) / P_para_i``: the
    geometric-mean probability of the wrong answers over that of the paraphrased
    correct one. ``R < 1`` means the model prefers the truth.

    Args:
        paraphrased_nll: ``[N]``.
        perturbed_nll: ``[N, K]`` (rows may differ in length ``K_i >= 1``).

    Returns:
        float64 ``[N]``.
    """
    para = _as_1d("paraphrased_nll", paraphrased_nll)
    pert_mean = np.array([row.mean() for row in _rows("perturbed_nll", perturbed_nll, len(para))])
    return np.exp(para - pert_mean)


def truth_ratio_forget_score(ratios) -> float:
    """Forget-set truth-ratio aggregate ``mean_i min(R_i, 1/R_i)`` (1 = no preference).

    Raises:
        ValueError: empty, non-finite or non-positive ``R``.
    """
    r = _nonempty("truth ratios", _as_1d("truth ratios", ratios))
    if np.any(r <= 0):
        raise ValueError(f"truth ratios must be > 0, got {r[r <= 0][0]}")
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_retain_score(ratios) -> float:
    """Truth-ratio aggregate of retain / real_authors / world_facts ``mean_i max(0, 1 - R_i)``.

    Raises:
        ValueError: empty or non-finite ``R``.
    """
    r = _nonempty("truth ratios", _as_1d("truth ratios", ratios))
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def probability(nll) -> float:
    """Mean answer probability ``mean_i exp(-nll_i)`` over ``nll`` ``[N]``."""
    return float(np.mean(np.exp(-_nonempty("nll", _as_1d("nll", nll)))))


def normalised_probability(correct_nll, perturbed_nll) -> float:
    """Option-normalised probability ``mean_i P_c,i / (P_c,i + sum_j P_ij)``.

    ``P = exp(-nll)``; ``correct_nll`` ``[N]`` are the correct answers' mean NLLs and
    ``perturbed_nll`` ``[N, K]`` the wrong options' (rows may differ in length).
    """
    correct = _nonempty("correct_nll", _as_1d("correct_nll", correct_nll))
    rows = _rows("perturbed_nll", perturbed_nll, len(correct))
    p_correct = np.exp(-correct)
    p_wrong = np.array([np.exp(-row).sum() for row in rows])
    return float(np.mean(p_correct / (p_correct + p_wrong)))


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L recall of each prediction against its reference.

    ``recall_i = LCS(pred_i, ref_i) / len(ref_i)`` in tokens, from ``rouge_score``'s
    ``RougeScorer(["rougeL"], use_stemmer=True)`` (lower-cased, alphanumeric tokens,
    Porter-stemmed); an empty reference scores 0.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [
        float(scorer.score(ref, pred)["rougeL"].recall)
        for pred, ref in zip(predictions, references)
    ]


def forget_quality(ratios_unlearned, ratios_retain_model) -> float:
    """Forget quality: two-sided two-sample Kolmogorov-Smirnov p-value.

    ``scipy.stats.ks_2samp(R_unlearned, R_retain_model).pvalue`` on the forget-set
    truth ratios of the evaluated model and of the model trained on the retain set
    only (exact distribution for small samples). 1 = indistinguishable. The KS
    statistic depends only on the ranks, so TOFU's ``1/R`` convention gives the same
    p-value.
    """
    from scipy.stats import ks_2samp

    a = _nonempty("ratios_unlearned", _as_1d("ratios_unlearned", ratios_unlearned))
    b = _nonempty("ratios_retain_model", _as_1d("ratios_retain_model", ratios_retain_model))
    return float(ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float]) -> float:
    """Harmonic mean ``9 / sum_k (1/v_k)`` of the nine :data:`UTILITY_KEYS` values.

    Returns 0 if any value is 0. Keys beyond the nine are ignored.

    Raises:
        ValueError: a missing key (all missing ones are named), or a negative or
            non-finite value.
    """
    missing = [k for k in UTILITY_KEYS if k not in values]
    if missing:
        raise ValueError(f"model_utility is missing {missing} (needs {list(UTILITY_KEYS)})")
    nums = []
    for key in UTILITY_KEYS:
        v = float(values[key])
        if not math.isfinite(v) or v < 0:
            raise ValueError(
                f"model_utility: {key} must be a finite number >= 0, got {values[key]!r}"
            )
        nums.append(v)
    if any(v == 0.0 for v in nums):
        return 0.0
    return len(nums) / sum(1.0 / v for v in nums)


def utility_values(aggregates: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Flatten ``aggregates[set][metric]`` into ``{"<set>_<metric>": value}`` for
    :func:`model_utility` (only the three utility sets)."""
    missing = [s for s in UTILITY_SETS if s not in aggregates]
    if missing:
        raise ValueError(f"aggregates lack the set(s) {missing} needed for model utility")
    return {f"{s}_{m}": float(aggregates[s][m]) for s in UTILITY_SETS for m in METRICS}


# ---------------------------------------------------------------------------
# aggregation from per-example values
# ---------------------------------------------------------------------------


def _set_aggregates(name: str, rows: Sequence[Mapping]) -> dict[str, float]:
    """``{"probability", "rouge", "truth_ratio"}`` of set ``name`` from its per-example rows."""
    if not rows:
        raise ValueError(f"set {name!r} has no examples")
    answer = [r["answer_nll"] for r in rows]
    perturbed = [r["perturbed_nll"] for r in rows]
    ratios = truth_ratio([r["paraphrased_nll"] for r in rows], perturbed)
    if name in NORMALISED_PROBABILITY_SETS:
        prob = normalised_probability(answer, perturbed)
    else:
        prob = probability(answer)
    tr = truth_ratio_forget_score(ratios) if name == "forget" else truth_ratio_retain_score(ratios)
    return {
        "probability": prob,
        "rouge": float(np.mean([r["rouge_l_recall"] for r in rows])),
        "truth_ratio": tr,
    }


def recompute_aggregates(
    per_example: Mapping[str, Sequence[Mapping]],
) -> dict[str, dict[str, float]]:
    """Aggregates of every set in ``per_example`` from the stored per-example values alone.

    Uses ``answer_nll``, ``paraphrased_nll``, ``perturbed_nll`` and ``rouge_l_recall``
    of each row (not the stored ``truth_ratio``), with the per-set rules of the module
    docstring. Returns ``{set: {"probability", "rouge", "truth_ratio"}}``.

    Raises:
        ValueError: an unknown set name or an empty set.
    """
    unknown = [s for s in per_example if s not in SETS]
    if unknown:
        raise ValueError(f"unknown TOFU set(s) {unknown}; expected some of {list(SETS)}")
    return {name: _set_aggregates(name, per_example[name]) for name in SETS if name in per_example}


# ---------------------------------------------------------------------------
# model evaluation
# ---------------------------------------------------------------------------


def _paraphrased_answers(name: str, records: Sequence[Mapping]) -> list[str] | None:
    """The paraphrased answers of ``name``, or None where the answer plays that role."""
    if name in NORMALISED_PROBABILITY_SETS:
        return None
    return [str(r["paraphrased_answer"]) for r in records]


def _check_set_records(name: str, records: Sequence[Mapping], source: str) -> None:
    """Raise ValueError naming ``source``, the record index and the field for a record
    of set ``name`` that lacks a required field or has one of the wrong type."""
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"{source}: record {index} is not an object: {record!r}")
        for field in _REQUIRED_FIELDS[name]:
            if field not in record:
                raise ValueError(
                    f"{source}: record {index} is missing field {field!r} (has {sorted(record)})"
                )
            value = record[field]
            if field == "perturbed_answer":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(v, str) for v in value)
                ):
                    raise ValueError(
                        f"{source}: record {index} field 'perturbed_answer' must be a "
                        f"non-empty list of strings, got {value!r}"
                    )
            elif not isinstance(value, str):
                raise ValueError(
                    f"{source}: record {index} field {field!r} must be a string, "
                    f"got {type(value).__name__}: {value!r}"
                )


def _evaluate_set(
    model,
    tokenizer,
    name: str,
    records: Sequence[Mapping],
    fmt: QAFormat,
    batch_size: int,
    max_new_tokens: int,
    max_length: int,
    scoring: str = "auto",
) -> list[dict]:
    """Per-example TOFU values of one set: one NLL call over every (question, candidate)
    pair (answer, paraphrase, perturbed answers; on the packed path each question's
    prompt runs once for all its candidates) and one batched generation."""
    questions = [str(r["question"]) for r in records]
    answers = [str(r["answer"]) for r in records]
    paraphrased = _paraphrased_answers(name, records)
    counts = [len(r["perturbed_answer"]) for r in records]
    candidates = [
        [
            answers[i],
            *([] if paraphrased is None else [paraphrased[i]]),
            *map(str, r["perturbed_answer"]),
        ]
        for i, r in enumerate(records)
    ]
    flat_q = [q for q, cands in zip(questions, candidates) for _ in cands]
    flat_a = [a for cands in candidates for a in cands]
    flat_nll = answer_nll(
        model, tokenizer, flat_q, flat_a, fmt, batch_size, max_length, scoring=scoring
    ).tolist()
    starts = np.cumsum([0, *(len(c) for c in candidates)])
    rows = [flat_nll[starts[i] : starts[i + 1]] for i in range(len(records))]
    answer_nlls = [row[0] for row in rows]
    para_nlls = answer_nlls if paraphrased is None else [row[1] for row in rows]
    pert_nlls = [row[len(row) - k :] for row, k in zip(rows, counts)]
    generated = greedy_generate(model, tokenizer, questions, fmt, batch_size, max_new_tokens)
    rouge = rouge_l_recall(generated, answers)
    ratios = truth_ratio(para_nlls, pert_nlls)
    return [
        {
            "question": questions[i],
            "answer": answers[i],
            "generated": generated[i],
            "answer_nll": answer_nlls[i],
            "paraphrased_nll": para_nlls[i],
            "perturbed_nll": pert_nlls[i],
            "rouge_l_recall": rouge[i],
            "truth_ratio": float(ratios[i]),
        }
        for i in range(len(records))
    ]


def evaluate_tofu(
    model,
    tokenizer,
    sets: Mapping[str, Sequence[Mapping]],
    fmt: QAFormat = QAFormat(),
    batch_size: int = 32,
    max_new_tokens: int = 32,
    max_length: int = 256,
    scoring: str = "auto",
) -> dict:
    """Evaluate ``model`` on the four TOFU sets.

    Args:
        model, tokenizer: a causal LM and its tokenizer (``pad_token_id`` set).
        sets: ``{"forget", "retain", "real_authors", "world_facts"}`` -> records with
            ``question``, ``answer``, ``perturbed_answer`` (list of strings) and, on
            forget and retain, ``paraphrased_answer`` (see :func:`load_tofu_eval_sets`).
            These TOFU field names are fixed; ``fmt`` only shapes the prompt.
        fmt: prompt format, the same as used in training.
        batch_size: examples per forward pass / ``generate`` call.
        max_new_tokens: greedy answer length cap.
        max_length: token limit per scored example (prompt + answer + EOS).
        scoring: answer-NLL path, one of
            :data:`blur_core.eval.likelihood.SCORING_PATHS` (``"padded"`` = one padded
            row per pair, the reference the packed default is tested against).

    Returns:
        JSON-serialisable ``{"per_example": {set: [{question, answer, generated,
        answer_nll, paraphrased_nll, perturbed_nll: [K], rouge_l_recall, truth_ratio}]},
        "aggregates": {set: {probability, rouge, truth_ratio}}, "model_utility": float}``.

    Raises:
        ValueError: a missing or unknown set, an empty set, or a record lacking a
            required field (named with the set, record index and field).
    """
    missing = [s for s in SETS if s not in sets]
    unknown = [s for s in sets if s not in SETS]
    if missing or unknown:
        raise ValueError(
            f"evaluate_tofu needs exactly the sets {list(SETS)}; "
            f"missing {missing}, unknown {unknown}"
        )
    for name in SETS:
        if not sets[name]:
            raise ValueError(f"set {name!r} has no records")
        _check_set_records(name, sets[name], f"set {name!r}")
    per_example = {
        name: _evaluate_set(
            model, tokenizer, name, sets[name], fmt, batch_size, max_new_tokens, max_length, scoring
        )
        for name in SETS
    }
    aggregates = recompute_aggregates(per_example)
    return {
        "per_example": per_example,
        "aggregates": aggregates,
        "model_utility": model_utility(utility_values(aggregates)),
    }


def _forget_rows(result: Mapping, label: str) -> list[Mapping]:
    """The forget-set per-example rows of an :func:`evaluate_tofu` result."""
    try:
        rows = result["per_example"]["forget"]
    except (KeyError, TypeError):
        raise ValueError(
            f"{label} has no per_example.forget (not an evaluate_tofu result?)"
        ) from None
    if not rows:
        raise ValueError(f"{label} has an empty forget set")
    return rows


NO_RETAIN_MODEL = (
    "no retain model in this experiment: forget quality compares the forget-set truth ratios "
    "with those of a model never trained on the forget set (set experiments[i].retain, or "
    "let the pipeline fine-tune one)"
)


def mark_unavailable(result: dict, metric: str, reason: str) -> dict:
    """Record that ``metric`` of ``result`` is not available and why (in place; returned):
    ``result[metric] = None`` and ``result["unavailable"][metric] = reason``, so a report
    prints the reason instead of a number nobody measured."""
    result[metric] = None
    result.setdefault("unavailable", {})[metric] = reason
    return result


def add_forget_quality(result: dict, retain_model_result: Mapping) -> dict:
    """Set ``result["forget_quality"]`` and return ``result`` (modified in place).

    ``forget_quality = ks_2samp(R_result, R_retain_model).pvalue`` over the
    per-example forget-set ``truth_ratio`` of both results (see :func:`forget_quality`).
    Passing the retain model's own result gives 1.0.

    Raises:
        ValueError: either result lacks forget rows, or the two forget sets are not the
            same questions in the same order (e.g. forget10 against forget01).
    """
    ours = _forget_rows(result, "result")
    theirs = _forget_rows(retain_model_result, "retain_model_result")
    q_ours = [r["question"] for r in ours]
    q_theirs = [r["question"] for r in theirs]
    if q_ours != q_theirs:
        first = next(
            (i for i, (a, b) in enumerate(zip(q_ours, q_theirs)) if a != b),
            min(len(q_ours), len(q_theirs)),
        )
        raise ValueError(
            f"the forget sets differ ({len(q_ours)} vs {len(q_theirs)} questions, first "
            f"difference at index {first}); evaluate both models on the same forget split"
        )
    result["forget_quality"] = forget_quality(
        [r["truth_ratio"] for r in ours], [r["truth_ratio"] for r in theirs]
    )
    return result


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def load_tofu_eval_sets(
    bench_dir: str | Path, forget_split: str = "forget10"
) -> dict[str, list[dict]]:
    """The four evaluation sets of a TOFU benchmark directory (hub layout).

    Reads ``<forget_split>_perturbed.json``, ``retain_perturbed.json``,
    ``real_authors_perturbed.json`` and ``world_facts_perturbed.json`` with
    :func:`blur_core.data.load_records` and checks the fields each set needs
    (``question``, ``answer``, ``perturbed_answer``; plus ``paraphrased_answer`` on
    forget and retain).

    Returns:
        ``{"forget", "retain", "real_authors", "world_facts"}`` -> records.

    Raises:
        ValueError: a bad ``forget_split``, an empty file, or a record lacking a field
            (naming the file, record index and field).
        FileNotFoundError: a missing file (named).
    """
    if (
        not isinstance(forget_split, str)
        or not forget_split
        or "/" in forget_split
        or "\\" in forget_split
    ):
        raise ValueError(
            f"forget_split must be a split name such as 'forget10', got {forget_split!r}"
        )
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"TOFU benchmark directory not found: {str(bench_dir)!r}")
    sets = {}
    for name in SETS:
        path = bench_dir / SET_FILES[name].format(forget_split=forget_split)
        records = load_records(path)
        if not records:
            raise ValueError(f"{path}: holds no records")
        _check_set_records(name, records, str(path))
        sets[name] = records
    return sets
