"""Evaluation suites beyond the TOFU metrics, one validated config per suite.

A suite is a named evaluation of one model with one JSON result::

    {"suite": NAME, "kind": KIND, "metrics": {flat name -> float}, "per_example": ...,
     "settings": {...}, "wall_s": seconds}

``metrics`` is what reports read (one column per key); ``per_example`` keeps what the
aggregates are computed from. Kinds:

- ``wmdp``  (``source``: dir with ``wmdp-{bio,chem,cyber}.json`` or hub id ``cais/wmdp``;
  ``subset``): zero-shot multiple-choice accuracy in lm-evaluation-harness's format.
- ``mmlu``  (``source``: dir with ``{dev,test}/<subject>_<split>.csv`` or ``cais/mmlu``;
  ``split``, ``subjects``): the same scorer.
- ``tofu_mc`` (the benchmark's own TOFU-layout dir): each QA of ``set`` (forget split or a
  utility set) as a 4-way question in *cloze* form: the QA prompt exactly as in training,
  each option scored as the answer (mean answer NLL, :func:`answer_nll`), accuracy = the
  true option has the lowest. The true option is the paraphrased answer where the set has
  one (same wording as the perturbed ones, so only the fact differs), else the answer.
  Letter-format prompts would test whether a model reads "A. .. B. .." (a tiny model
  trained only on QA does not); cloze tests the knowledge itself. On the embedded
  benchmark it stands in for WMDP (forget set: knowledge that should go) and MMLU (world
  facts: knowledge that should stay).
- ``corpus_mc`` (a prepared corpus dir with ``mc/{forget,retain}.json``, ``set``): the
  corpus's 4-way questions in cloze form, as ``tofu_mc``; on the embedded corpus it stands
  in for WMDP (``set: forget``) and MMLU (``set: retain``).
- ``muse``  (``source``: MUSE-News dir or ``muse-bench/MUSE-News``): VerbMem, KnowMem
  (forget/retain), PrivLeak (relative to the retain model's AUC when the pipeline passes
  it, else MUSE's published News constant; the result says which) and the MIA suite
  (LOSS, ZLib, Min-K, Min-K++ AUCs) on PrivLeak's forget vs holdout passages.
- ``memorisation`` (TOFU-layout dir): exact memorisation and extraction strength of the
  forget answers (teacher-forced, answer tokens only).
- ``tofu`` (TOFU-layout dir, ``forget_split``): the TOFU metrics (for the stand-alone
  ``evaluate-suites`` command; the pipeline has its own TOFU rule).

``limit`` keeps a seeded random subset of N items (MC suites; spread over subjects) or
the first N items of each set (MUSE, TOFU, memorisation).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blur_core.atomic import atomic_write_text
from blur_core.config import ConfigError, at_least, checked, one_of, parse, to_dict

__all__ = [
    "SUITE_KINDS",
    "SuiteConfig",
    "cloze_mc",
    "parse_suite",
    "run_suite",
    "tofu_mc_items",
    "write_result",
]

NO_RETAIN_MODEL_PRIVLEAK = (
    "no retain model in this experiment: PrivLeak is relative to a retain model's AUC "
    "(MUSE's published constant holds for MUSE's own Llama-2 models only)"
)
SUITE_KINDS = ("wmdp", "mmlu", "tofu_mc", "corpus_mc", "muse", "memorisation", "tofu")
MUSE_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")


@dataclass
class SuiteConfig:
    """One evaluation suite (see the module docstring for the kinds)."""

    kind: str = checked(check=one_of(*SUITE_KINDS), doc="what to evaluate")
    source: str | None = checked(
        None, doc="data dir or hub id (the benchmark dir for tofu_mc/memorisation)"
    )
    subset: str = checked("bio", check=one_of("bio", "chem", "cyber"), doc="wmdp subset")
    split: str = checked("test", check=one_of("test", "dev"), doc="mmlu split")
    subjects: list[str] | None = checked(None, doc="mmlu subjects (null: all)")
    set: str = checked(
        "forget",
        check=one_of("forget", "retain", "real_authors", "world_facts"),
        doc="tofu_mc / memorisation: which set of the benchmark",
    )
    forget_split: str = checked("forget10", check=one_of("forget01", "forget05", "forget10"))
    limit: int | None = checked(None, check=at_least(1), doc="evaluate N items (null: all)")
    seed: int = 0
    metrics: list[str] = checked(default_factory=lambda: list(MUSE_METRICS), doc="muse metrics")
    mia: bool = checked(True, doc="muse: also the MIA suite on privleak forget vs holdout")
    batch_size: int = checked(16, check=at_least(1))
    max_length: int | None = checked(
        None,
        check=lambda v: None if v is None or v >= 8 else "must be >= 8",
        doc="token limit per scored sequence; null: 512, for wmdp/mmlu the "
        "model's context length (as lm-eval)",
    )
    max_new_tokens: int = checked(32, check=at_least(1), doc="tofu: answer length; muse: knowmem")
    verbmem_max_new_tokens: int = checked(128, check=at_least(1))
    privleak_max_length: int = checked(2048, check=at_least(8))
    privleak_batch_size: int = checked(
        2,
        check=at_least(1),
        doc="texts per forward pass on PrivLeak / MIA "
        "passages (~2k tokens: logits are batch x length x vocab floats)",
    )

    @property
    def qa_max_length(self) -> int:
        """The token limit of the QA-style suites (tofu, tofu_mc, memorisation): max_length or 512."""
        return self.max_length or 512

    def validate(self, where: str = "") -> None:
        prefix = f"{where}." if where else ""
        if not self.source:
            raise ConfigError(
                f"{prefix}source is required for a {self.kind} suite (a local dir or hub id)"
            )
        bad = [m for m in self.metrics if m not in MUSE_METRICS]
        if bad:
            raise ConfigError(
                f"{prefix}metrics: unknown MUSE metric(s) {bad}; valid: {list(MUSE_METRICS)}"
            )


def parse_suite(data: Mapping[str, Any], where: str = "suite") -> SuiteConfig:
    """A validated :class:`SuiteConfig` from a mapping; ``ConfigError`` names ``where.key``."""
    return parse(SuiteConfig, data, where)


# ----------------------------------------------------------------------------- tofu_mc


def tofu_mc_items(records, name: str, seed: int = 0):
    """TOFU-style records -> 4-way :class:`~blur_core.data.mc.MCItem` s.

    Choices are the true answer and the first three perturbed (wrong) answers, in an
    order drawn from ``random.Random(f"{seed}:{i}")`` for record ``i`` (so the true
    position is uniform and independent of the other records). The true answer is the
    record's ``paraphrased_answer`` when it has one (TOFU builds the perturbed answers
    from the paraphrase, so the options differ only in the fact), else its ``answer``.

    Raises:
        ValueError: a record without ``question``/``answer`` or with fewer than three
            perturbed answers (names the set and index).
    """
    from blur_core.data.mc import MCItem

    items = []
    for i, rec in enumerate(records):
        wrong = rec.get("perturbed_answer")
        if not isinstance(rec.get("question"), str) or not isinstance(rec.get("answer"), str):
            raise ValueError(f"{name}[{i}]: needs string fields 'question' and 'answer'")
        if not isinstance(wrong, list) or len(wrong) < 3:
            raise ValueError(
                f"{name}[{i}]: needs >= 3 'perturbed_answer' strings for a 4-way question, "
                f"got {wrong!r}"
            )
        right = rec.get("paraphrased_answer") or rec["answer"]
        choices = [right, *wrong[:3]]
        order = list(range(4))
        random.Random(f"{seed}:{i}").shuffle(order)
        items.append(
            MCItem(
                question=rec["question"],
                choices=tuple(choices[j] for j in order),
                answer=order.index(0),
                subject=name,
                source=f"{name}:{i}",
            )
        )
    return items


# ----------------------------------------------------------------------------- runners


def _mc_result(result: Mapping) -> dict:
    by_subject: dict[str, list[bool]] = {}
    for row in result["per_example"]:
        by_subject.setdefault(row["subject"], []).append(bool(row["correct"]))
    metrics = {"accuracy": result["accuracy"], "n": result["n"]}
    return {
        "metrics": metrics,
        "per_example": result["per_example"],
        "per_subject": {s: sum(v) / len(v) for s, v in sorted(by_subject.items())},
    }


def cloze_mc(model, tokenizer, items, fmt, batch_size: int = 32, max_length: int = 256) -> dict:
    """Cloze multiple choice: every (question, option) pair scored as a QA answer in one
    batched :func:`~blur_core.eval.likelihood.answer_nll` call (``N x C`` pairs); the
    prediction is the option with the lowest mean answer NLL.

    Returns the :func:`blur_core.eval.mc.evaluate_mc` layout: ``{"accuracy", "n",
    "per_example": [{"source", "subject", "answer", "pred", "correct", "loglik"}]}``
    where ``loglik`` holds the options' ``-mean NLL``.
    """
    from blur_core.eval.likelihood import answer_nll

    if not items:
        raise ValueError("cloze_mc got no items")
    questions = [it.question for it in items for _ in it.choices]
    options = [c for it in items for c in it.choices]
    nll = answer_nll(
        model, tokenizer, questions, options, fmt, batch_size=batch_size, max_length=max_length
    ).tolist()
    rows, pos = [], 0
    for it in items:
        scores = [-v for v in nll[pos : pos + len(it.choices)]]
        pos += len(it.choices)
        pred = max(range(len(scores)), key=lambda j: (scores[j], -j))  # ties: first option
        rows.append(
            {
                "source": it.source,
                "subject": it.subject,
                "answer": it.answer,
                "pred": pred,
                "correct": pred == it.answer,
                "loglik": scores,
            }
        )
    return {
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "n": len(rows),
        "per_example": rows,
    }


def _run_mc(cfg: SuiteConfig, model, tokenizer, fmt) -> dict:
    from blur_core.data import mc as mcdata

    if cfg.kind == "corpus_mc":
        from blur_core.data.corpus import load_corpus_mc

        items = mcdata.select_items(load_corpus_mc(cfg.source, cfg.set), cfg.limit, seed=cfg.seed)
        return _mc_result(cloze_mc(model, tokenizer, items, fmt, cfg.batch_size, cfg.qa_max_length))
    if cfg.kind == "tofu_mc":
        from blur_core.eval.tofu import load_tofu_eval_sets

        sets = load_tofu_eval_sets(cfg.source, cfg.forget_split)
        items = tofu_mc_items(sets[_tofu_set_key(cfg.set, sets)], cfg.set, cfg.seed)
        items = mcdata.select_items(items, cfg.limit, seed=cfg.seed)
        return _mc_result(cloze_mc(model, tokenizer, items, fmt, cfg.batch_size, cfg.qa_max_length))
    from blur_core.eval.mc import evaluate_mc

    if cfg.kind == "wmdp":
        items = mcdata.load_wmdp(cfg.source, cfg.subset)
    else:
        items = mcdata.load_mmlu(cfg.source, split=cfg.split, subjects=cfg.subjects)
    items = mcdata.select_items(items, cfg.limit, seed=cfg.seed)
    result = evaluate_mc(
        model, tokenizer, items, batch_size=cfg.batch_size, max_length=cfg.max_length
    )
    # (max_length None: evaluate_mc resolves the model's context length, as lm-eval does)
    return _mc_result(result)


def _tofu_set_key(name: str, sets: Mapping) -> str:
    # load_tofu_eval_sets names the forget set "forget" and the retain set "retain"
    if name not in sets:
        raise ValueError(f"set {name!r} not in the benchmark's evaluation sets {sorted(sets)}")
    return name


def _run_muse(
    cfg: SuiteConfig,
    model,
    tokenizer,
    reference: Mapping | None,
    self_reference: bool,
    no_reference: bool = False,
) -> dict:
    """MUSE metrics; with ``mia`` the PrivLeak texts are scored once: the MIA suite's
    Min-40% scores (forget = member) give MUSE's PrivLeak AUC as well (MUSE's Min-K score
    is the negated one, and its AUC has holdout as the positive class)."""
    from blur_core.data.muse import load_muse
    from blur_core.eval.muse import add_privleak_reference, evaluate_muse, muse_privleak_auc

    data = load_muse(cfg.source)
    with_privleak = "privleak" in cfg.metrics
    shared = with_privleak and cfg.mia
    metrics = [m for m in cfg.metrics if not (shared and m == "privleak")]
    kwargs = dict(
        batch_size=cfg.batch_size,
        limit=cfg.limit,
        verbmem_max_new_tokens=cfg.verbmem_max_new_tokens,
        knowmem_max_new_tokens=cfg.max_new_tokens,
        privleak_max_length=cfg.privleak_max_length,
        privleak_batch_size=cfg.privleak_batch_size,
    )
    if metrics:
        result = evaluate_muse(model, tokenizer, data, metrics=tuple(metrics), **kwargs)
    else:
        result = {"benchmark": "muse_news", "metrics": {}, "per_example": {}, "settings": kwargs}
    out: dict[str, Any] = {}
    if shared:
        from blur_core.eval.mia import mia_suite

        n = cfg.limit
        forget = data.privleak_forget[:n] if n else data.privleak_forget
        holdout = data.privleak_holdout[:n] if n else data.privleak_holdout
        mia = mia_suite(
            model,
            tokenizer,
            forget,
            holdout,
            k=0.4,
            batch_size=cfg.privleak_batch_size,
            max_length=cfg.privleak_max_length,
        )
        out["mia"] = mia
        result["privleak_auc"] = muse_privleak_auc(
            [-r["mink"] for r in mia["per_example"]["member"]],
            [-r["mink"] for r in mia["per_example"]["nonmember"]],
        )
        result["metrics"]["privleak"] = None
    if with_privleak and no_reference:
        result["metrics"]["privleak"] = None
        out["unavailable"] = {"privleak": NO_RETAIN_MODEL_PRIVLEAK}
        result["privleak_reference"] = "none"
    elif with_privleak:
        add_privleak_reference(result, result if self_reference else (reference or {}).get("muse"))
    out["metrics"] = {k: v for k, v in result["metrics"].items() if v is not None}
    out["privleak_reference"] = result.get("privleak_reference")
    out["muse"] = result
    for key in ("privleak_auc", "privleak_auc_ref"):
        if result.get(key) is not None:
            out["metrics"][key] = result[key]
    for attack, value in out.get("mia", {}).get("auc", {}).items():
        out["metrics"][f"mia_{attack}_auc"] = value
    return out


def _run_memorisation(cfg: SuiteConfig, model, tokenizer, fmt) -> dict:
    """EM / ES of the chosen set's answers; for the forget set, when the benchmark has the
    matching ``holdoutNN.json`` (people in no training file), also the MIA AUCs of the
    forget QA (members) vs the holdout QA (non-members), each scored as the text
    ``prompt_template(question) + " " + answer``."""
    from blur_core.data.io import load_records
    from blur_core.eval.mia import mia_suite, qa_memorisation
    from blur_core.eval.tofu import load_tofu_eval_sets

    sets = load_tofu_eval_sets(cfg.source, cfg.forget_split)
    records = sets[_tofu_set_key(cfg.set, sets)][: cfg.limit]
    mem = qa_memorisation(
        model,
        tokenizer,
        [r["question"] for r in records],
        [r["answer"] for r in records],
        fmt=fmt,
        batch_size=cfg.batch_size,
        max_length=cfg.qa_max_length,
    )
    em, es = list(mem["em"]), list(mem["es"])
    out = {
        "metrics": {
            f"{cfg.set}_exact_memorisation": sum(em) / len(em),
            f"{cfg.set}_extraction_strength": sum(es) / len(es),
            "n": len(em),
        },
        "per_example": [{"index": i, "em": a, "es": b} for i, (a, b) in enumerate(zip(em, es))],
    }
    holdout_path = Path(cfg.source) / (cfg.forget_split.replace("forget", "holdout") + ".json")
    if cfg.set == "forget" and holdout_path.is_file():
        holdout = load_records(holdout_path)[: cfg.limit]

        def text(r):
            return f"{fmt.prompt_template.format(question=r['question'])} {r['answer']}"

        mia = mia_suite(
            model,
            tokenizer,
            [text(r) for r in records],
            [text(r) for r in holdout],
            batch_size=cfg.batch_size,
            max_length=cfg.qa_max_length,
        )
        out["mia"] = mia
        out["metrics"].update({f"mia_{attack}_auc": value for attack, value in mia["auc"].items()})
    return out


def _run_tofu(cfg: SuiteConfig, model, tokenizer, fmt) -> dict:
    from blur_core.eval.tofu import evaluate_tofu, load_tofu_eval_sets

    sets = load_tofu_eval_sets(cfg.source, cfg.forget_split)
    if cfg.limit:
        sets = {k: v[: cfg.limit] for k, v in sets.items()}
    result = evaluate_tofu(
        model,
        tokenizer,
        sets,
        fmt,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        max_length=cfg.qa_max_length,
    )
    metrics = {"model_utility": result["model_utility"]}
    for s, aggs in result["aggregates"].items():
        for m, v in aggs.items():
            metrics[f"{s}_{m}"] = v
    return {"metrics": metrics, "tofu": result}


def run_suite(
    name: str,
    cfg: SuiteConfig,
    model,
    tokenizer,
    *,
    fmt=None,
    reference: Mapping | None = None,
    self_reference: bool = False,
    no_reference: bool = False,
) -> dict:
    """Evaluate ``model`` on one suite; the result dict described in the module docstring.

    ``reference`` is the retain model's result of the same suite (PrivLeak's AUC
    reference); ``self_reference`` marks the retain model itself (PrivLeak 0 by definition);
    ``no_reference``: there is no retain model, so PrivLeak is reported as unavailable (with
    the reason in ``unavailable``) instead of against MUSE's published constant.
    ``fmt`` is the QA prompt format (TOFU-style suites), default :class:`QAFormat()`.
    """
    from blur_core.data import QAFormat

    fmt = fmt or QAFormat()
    start = time.perf_counter()
    if cfg.kind in ("wmdp", "mmlu", "tofu_mc", "corpus_mc"):
        body = _run_mc(cfg, model, tokenizer, fmt)
    elif cfg.kind == "muse":
        body = _run_muse(cfg, model, tokenizer, reference, self_reference, no_reference)
    elif cfg.kind == "memorisation":
        body = _run_memorisation(cfg, model, tokenizer, fmt)
    else:
        body = _run_tofu(cfg, model, tokenizer, fmt)
    for key, value in body["metrics"].items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"suite {name}: metric {key} is {value}")
    return {
        "suite": name,
        "kind": cfg.kind,
        **body,
        "settings": to_dict(cfg),
        "wall_s": round(time.perf_counter() - start, 3),
    }


def write_result(result: Mapping, out: str | Path) -> Path:
    """Write ``result`` as JSON atomically (a temp file renamed into place)."""
    return atomic_write_text(out, json.dumps(result, indent=1))
