"""MUSE-News evaluation (Shi et al. 2024), matching MUSE's official ``eval_model``
(``swj0419/muse_bench``); definitions in docs/architecture.md section 8.

Prompts are raw text (no chat template) tokenised with ``add_special_tokens=True``;
decoding is greedy (``do_sample=False``) and outputs are decoded with
``skip_special_tokens=True, clean_up_tokenization_spaces=True`` (transformers 5 ignores
the clean-up, with a one-time warning, for BPE tokenizers such as SmolLM2's; it applies
to SentencePiece/WordPiece ones such as Llama-2's, as in MUSE). ROUGE-L is
``rouge_score``'s ``RougeScorer(["rougeL"], use_stemmer=False).score(target=gt,
prediction=output)``; its F1 (``fmeasure``) is the metric, the recall is kept too.

* ``verbmem_f``: per ``{prompt, gt}`` of ``verbmem/forget.json``: greedy continuation of
  ``max_new_tokens`` (128) tokens after the prompt; the reference is the first
  ``max_new_tokens`` tokens of ``gt`` (tokenised with special tokens, decoded without them,
  as MUSE does); score = ROUGE-L F1(gt_truncated, output). Reported ``100 * mean``.
* ``knowmem_f`` / ``knowmem_r``: prompt = ``sum_j "Question: {q_j}\\nAnswer: {a_j}\\n\\n"``
  over the ICL pairs + ``"Question: {question}\\nAnswer: "``; greedy ``max_new_tokens`` (32)
  tokens; the output is cut at ``"\\n\\n"``, then ``"\\nQuestion"``, then ``"Question:"``
  (:func:`cut_answer`); score = ROUGE-L F1(answer, output). Reported ``100 * mean``.
* ``privleak``: Min-40% score of each forget and holdout text (MUSE orientation:
  ``s = -mean of the int(0.4 n) lowest token log-probs``, higher = less likely);
  ``AUC = roc_auc(y=[0]*forget + [1]*holdout, -s)`` = P(a holdout text looks more likely
  than a forget text) (:func:`muse_privleak_auc`): ~0 when the forget set is memorised,
  ~0.5 for a model that never saw it. ``privleak = (AUC - AUC_ref) / AUC_ref * 100`` with
  ``AUC_ref`` the retain(ed) model's AUC (:func:`add_privleak_reference`), or MUSE's
  published News constant 0.4772 (Llama-2-7B retrained, ``forget_holdout_Min-40%``).
  Note the orientation is the opposite of :func:`blur_core.eval.mia.auc` (members
  positive): on the same scores ``muse_privleak_auc = 1 - mia.auc(forget, holdout)``.
  MUSE scores every news passage whole (~2k Llama-2 tokens, inside Llama-2's 4096
  context; it does not truncate); here texts are cut to ``privleak_max_length`` tokens
  (default 2048: the MUSE-News privleak passages are 1757-1924 SmolLM2 tokens, so none is
  cut at the default) and the number of cut texts is recorded.

Per-example values are kept (:func:`recompute_aggregates` rebuilds every metric from them).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence

import torch

from blur_core.config import require_int
from blur_core.eval.generation import generate_from_ids
from blur_core.eval.mia import _finite_score_arrays, min_k, token_statistics

__all__ = [
    "KNOWMEM_STOP_WORDS",
    "MUSE_METRICS",
    "MUSE_NEWS_AUC_RETRAIN",
    "add_privleak_reference",
    "cut_answer",
    "evaluate_muse",
    "generate_raw",
    "knowmem_prompt",
    "muse_min_k_score",
    "muse_privleak_auc",
    "privleak_value",
    "recompute_aggregates",
    "rouge_l",
    "truncate_to_tokens",
]

MUSE_METRICS: tuple[str, ...] = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
"""MUSE's ``eval_model`` output keys (all in MUSE's x100 / % scale)."""
MUSE_NEWS_AUC_RETRAIN: float = 0.4772
"""MUSE's ``AUC_RETRAIN['news']['forget_holdout_Min-40%']`` (0.47719999999999996; Llama-2-7B retrained)."""
KNOWMEM_STOP_WORDS: tuple[str, ...] = ("\n\n", "\nQuestion", "Question:")
"""KnowMem outputs are cut at the first occurrence of each, in this order."""
PRIVLEAK_K: float = 0.4


def knowmem_prompt(question: str, icl_questions: Sequence[str], icl_answers: Sequence[str]) -> str:
    """MUSE's KnowMem prompt: ``sum_j f"Question: {q_j}\\nAnswer: {a_j}\\n\\n"``
    + ``f"Question: {question}\\nAnswer: "``.

    Raises:
        ValueError: different numbers of ICL questions and answers.
    """
    if len(icl_questions) != len(icl_answers):
        raise ValueError(
            f"got {len(icl_questions)} ICL questions but {len(icl_answers)} ICL answers"
        )
    prefix = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in zip(icl_questions, icl_answers))
    return prefix + f"Question: {question}\nAnswer: "


def cut_answer(text: str, words: Sequence[str] = KNOWMEM_STOP_WORDS) -> str:
    """``for w in words: text = text.split(w)[0]`` (MUSE's KnowMem stop rule)."""
    for w in words:
        text = text.split(w)[0]
    return text


def rouge_l(references: Sequence[str], outputs: Sequence[str]) -> list[dict[str, float]]:
    """ROUGE-L of each output against its reference, as MUSE computes it.

    ``RougeScorer(["rougeL"], use_stemmer=False).score(target=ref, prediction=out)``:
    ``recall = LCS / len(ref)``, ``precision = LCS / len(out)``, ``f1 = 2PR / (P + R)`` over
    lower-cased alphanumeric tokens. Example: ref "the cat sat on the mat", out "the cat on
    mat": LCS 4, P = 1, R = 4/6, F1 = 0.8.

    Returns:
        ``[{"f1", "recall"}]`` per pair.
    """
    from rouge_score import rouge_scorer

    if len(references) != len(outputs):
        raise ValueError(f"got {len(references)} references but {len(outputs)} outputs")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    out = []
    for ref, pred in zip(references, outputs):
        s = scorer.score(target=ref, prediction=pred)["rougeL"]
        out.append({"f1": float(s.fmeasure), "recall": float(s.recall)})
    return out


def truncate_to_tokens(tokenizer, text: str, n_tokens: int) -> str:
    """``text`` cut to its first ``n_tokens`` tokens (tokenised with special tokens, decoded
    without them, ``clean_up_tokenization_spaces=True``): MUSE's VerbMem reference."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:n_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


@torch.no_grad()
def generate_raw(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of raw-text prompts (no chat template), in left-padded batches.

    Each prompt is tokenised with ``add_special_tokens=True``; prompts are length-sorted
    and left-padded (:func:`blur_core.eval.generation.left_pad`) so all rows end at the
    last column; ``model.generate(do_sample=False, num_beams=1)`` with the attention mask
    (position ids follow the mask) stops a row at EOS or after ``max_new_tokens``. Only
    the new tokens are decoded (``skip_special_tokens=True, clean_up_tokenization_spaces=True``),
    not stripped (MUSE does not strip).

    Returns:
        ``N`` strings in the order of ``prompts``.

    Raises:
        ValueError: a non-string prompt, a bad ``batch_size``/``max_new_tokens``, or a
            tokenizer without ``pad_token_id``.
    """
    bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
    if bad is not None:
        raise ValueError(f"prompt {bad} must be a string, got {type(prompts[bad]).__name__}")
    require_int("max_new_tokens", max_new_tokens)
    require_int("batch_size", batch_size)
    if tokenizer.pad_token_id is None:
        raise ValueError("generate_raw needs tokenizer.pad_token_id (see models.load_tokenizer)")
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    return generate_from_ids(
        model, tokenizer, encoded, batch_size, max_new_tokens, clean_up_tokenization_spaces=True
    )


def muse_min_k_score(logprob, k: float = PRIVLEAK_K) -> float:
    """MUSE's Min-K% score: ``-mean`` of the ``int(k n)`` lowest token log-probs (at least 1);
    higher = less likely. Equals ``-blur_core.eval.mia.min_k(logprob, k)``."""
    return -min_k(logprob, k)


def muse_privleak_auc(forget_scores, holdout_scores) -> float:
    """MUSE's PrivLeak AUC from Min-K scores (MUSE orientation, higher score = less likely).

    ``y = [0]*len(forget) + [1]*len(holdout)``, ``fpr, tpr = roc_curve(y, -scores)``,
    ``AUC = auc(fpr, tpr)`` = P(holdout text more likely than forget text) + 0.5 P(tie).

    Raises:
        ValueError: an empty set or a non-finite score.
    """
    import numpy as np
    from sklearn.metrics import auc as sk_auc
    from sklearn.metrics import roc_curve

    f, h = _finite_score_arrays(
        "muse_privleak_auc", ("forget", forget_scores), ("holdout", holdout_scores)
    )
    y = np.array([0] * f.size + [1] * h.size)
    fpr, tpr, _ = roc_curve(y, -np.concatenate([f, h]))
    return float(sk_auc(fpr, tpr))


def privleak_value(auc_value: float, auc_ref: float) -> float:
    """``(AUC - AUC_ref) / AUC_ref * 100`` (MUSE's PrivLeak, in %).

    Raises:
        ValueError: ``auc_ref`` is not a positive finite number.
    """
    if not isinstance(auc_ref, (int, float)) or not math.isfinite(auc_ref) or auc_ref <= 0:
        raise ValueError(f"auc_ref must be a positive number, got {auc_ref!r}")
    return (float(auc_value) - auc_ref) / auc_ref * 100.0


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[muse] {msg}", file=sys.stderr, flush=True)


def _verbmem(model, tokenizer, records, max_new_tokens, batch_size) -> list[dict]:
    prompts = [r["prompt"] for r in records]
    outputs = generate_raw(model, tokenizer, prompts, max_new_tokens, batch_size)
    gts = [truncate_to_tokens(tokenizer, r["gt"], max_new_tokens) for r in records]
    scores = rouge_l(gts, outputs)
    return [
        {"gt": gt, "output": out, "rougeL_f1": s["f1"], "rougeL_recall": s["recall"]}
        for gt, out, s in zip(gts, outputs, scores)
    ]


def _knowmem(model, tokenizer, qa, icl, max_new_tokens, batch_size) -> list[dict]:
    icl_q, icl_a = [r["question"] for r in icl], [r["answer"] for r in icl]
    prompts = [knowmem_prompt(r["question"], icl_q, icl_a) for r in qa]
    raw = generate_raw(model, tokenizer, prompts, max_new_tokens, batch_size)
    outputs = [cut_answer(o) for o in raw]
    scores = rouge_l([r["answer"] for r in qa], outputs)
    return [
        {
            "question": r["question"],
            "answer": r["answer"],
            "output": out,
            "raw_output": full,
            "rougeL_f1": s["f1"],
            "rougeL_recall": s["recall"],
        }
        for r, out, full, s in zip(qa, outputs, raw, scores)
    ]


def _privleak_rows(model, tokenizer, texts, batch_size, max_length) -> list[dict]:
    stats = token_statistics(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return [
        {
            "min_k_score": muse_min_k_score(s.logprob, PRIVLEAK_K),
            "n_tokens": s.n_tokens,
            "truncated": bool(s.truncated),
        }
        for s in stats
    ]


def recompute_aggregates(per_example: Mapping) -> dict:
    """MUSE aggregates from per-example values alone.

    Returns ``{"verbmem_f", "knowmem_f", "knowmem_r"}`` (``100 * mean rougeL_f1``, for the
    sets present) and ``"privleak_auc"`` (:func:`muse_privleak_auc` of the forget vs holdout
    ``min_k_score``) when privleak rows are present.
    """
    out: dict = {}
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        rows = per_example.get(name)
        if rows:
            out[name] = 100.0 * sum(r["rougeL_f1"] for r in rows) / len(rows)
    pl = per_example.get("privleak")
    if pl:
        out["privleak_auc"] = muse_privleak_auc(
            [r["min_k_score"] for r in pl["forget"]], [r["min_k_score"] for r in pl["holdout"]]
        )
    return out


def evaluate_muse(
    model,
    tokenizer,
    data,
    *,
    metrics: Sequence[str] = MUSE_METRICS,
    batch_size: int = 8,
    limit: int | None = None,
    verbmem_max_new_tokens: int = 128,
    knowmem_max_new_tokens: int = 32,
    privleak_max_length: int = 2048,
    privleak_batch_size: int = 2,
    progress: bool = False,
) -> dict:
    """MUSE-News metrics of ``model`` (see the module docstring for the definitions).

    Args:
        model, tokenizer: a causal LM (eval mode is set) and its tokenizer (``pad_token_id`` set).
        data: a :class:`blur_core.data.muse.MuseData`.
        metrics: a subset of :data:`MUSE_METRICS`.
        batch_size: prompts per ``generate`` call.
        limit: evaluate only the first ``limit`` items of each set (quick checks); None = all.
        verbmem_max_new_tokens / knowmem_max_new_tokens: generation lengths (MUSE: 128 / 32);
            the VerbMem reference is cut to ``verbmem_max_new_tokens`` tokens as well.
        privleak_max_length: token cap per PrivLeak text (MUSE does not cut; see module doc).
        privleak_batch_size: texts per PrivLeak forward pass; each keeps ``[B, T, V]`` float32
            logits alive (B=2, T=2048, V=49152: ~0.8 GB), and on CPU a larger batch is no faster.
        progress: log each stage to stderr.

    Returns:
        ``{"benchmark": "muse_news", "metrics": {verbmem_f, knowmem_f, knowmem_r, privleak}
        (x100; privleak None until :func:`add_privleak_reference`), "privleak_auc": float | None,
        "privleak": None, "privleak_reference": None, "privleak_auc_ref": None,
        "per_example": {"verbmem_f": [{gt, output, rougeL_f1, rougeL_recall}],
        "knowmem_f"/"knowmem_r": [{question, answer, output (cut), raw_output, rougeL_f1, rougeL_recall}],
        "privleak": {"forget": [{min_k_score, n_tokens, truncated}], "holdout": [...]}},
        "settings": {...}, "timings_s": {...}}``.

    Raises:
        ValueError: an unknown metric, a bad ``limit``/``batch_size``.
    """
    unknown = [m for m in metrics if m not in MUSE_METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"unknown MUSE metric(s) {unknown or list(metrics)!r}; expected a non-empty "
            f"subset of {list(MUSE_METRICS)}"
        )
    if limit is not None:
        require_int("limit", limit)
    require_int("batch_size", batch_size)
    require_int("privleak_batch_size", privleak_batch_size)
    pl_batch = privleak_batch_size

    def first(rows):
        return list(rows) if limit is None else list(rows)[:limit]

    per_example: dict = {}
    timings: dict[str, float] = {}
    if "verbmem_f" in metrics:
        _log(progress, f"verbmem_f: {len(first(data.verbmem_forget))} prompts")
        t0 = time.perf_counter()
        per_example["verbmem_f"] = _verbmem(
            model, tokenizer, first(data.verbmem_forget), verbmem_max_new_tokens, batch_size
        )
        timings["verbmem_f"] = time.perf_counter() - t0
    for name, qa, icl in (
        ("knowmem_f", data.knowmem_forget, data.knowmem_forget_icl),
        ("knowmem_r", data.knowmem_retain, data.knowmem_retain_icl),
    ):
        if name in metrics:
            _log(progress, f"{name}: {len(first(qa))} questions, {len(icl)} ICL pairs")
            t0 = time.perf_counter()
            per_example[name] = _knowmem(
                model, tokenizer, first(qa), icl, knowmem_max_new_tokens, batch_size
            )
            timings[name] = time.perf_counter() - t0
    if "privleak" in metrics:
        forget, holdout = first(data.privleak_forget), first(data.privleak_holdout)
        _log(progress, f"privleak: {len(forget)} forget + {len(holdout)} holdout texts")
        t0 = time.perf_counter()
        per_example["privleak"] = {
            "forget": _privleak_rows(model, tokenizer, forget, pl_batch, privleak_max_length),
            "holdout": _privleak_rows(model, tokenizer, holdout, pl_batch, privleak_max_length),
        }
        timings["privleak"] = time.perf_counter() - t0
    agg = recompute_aggregates(per_example)
    result_metrics = {m: agg.get(m) for m in metrics if m != "privleak"}
    if "privleak" in metrics:
        result_metrics["privleak"] = None
    pl = per_example.get("privleak")
    return {
        "benchmark": "muse_news",
        "metrics": result_metrics,
        "privleak_auc": agg.get("privleak_auc"),
        "privleak": None,
        "privleak_reference": None,
        "privleak_auc_ref": None,
        "per_example": per_example,
        "settings": {
            "metrics": list(metrics),
            "limit": limit,
            "batch_size": batch_size,
            "privleak_batch_size": privleak_batch_size,
            "verbmem_max_new_tokens": verbmem_max_new_tokens,
            "knowmem_max_new_tokens": knowmem_max_new_tokens,
            "privleak_max_length": privleak_max_length,
            "privleak_k": PRIVLEAK_K,
            "privleak_truncated": (
                sum(r["truncated"] for s in pl.values() for r in s) if pl else 0
            ),
            "source": getattr(data, "source", ""),
        },
        "timings_s": timings,
    }


def add_privleak_reference(result: dict, retain_result: Mapping | None = None) -> dict:
    """Fill ``privleak`` of an :func:`evaluate_muse` result (in place; also returned).

    ``privleak = (AUC - AUC_ref) / AUC_ref * 100`` with ``AUC_ref`` the ``privleak_auc`` of
    ``retain_result`` (the retain model evaluated the same way; ``privleak_reference =
    "retain_model"``), or, when ``retain_result`` is None, MUSE's News constant 0.4772
    (``"muse_news_constant"``, Llama-2-7B retrained: only comparable for that model).
    Sets ``result["privleak"]``, ``result["metrics"]["privleak"]``, ``privleak_reference``
    and ``privleak_auc_ref``.

    Raises:
        ValueError: a result without ``privleak_auc``, or a retain result without one / with 0.
    """
    auc_value = result.get("privleak_auc")
    if auc_value is None:
        raise ValueError("result has no privleak_auc (evaluate_muse was run without 'privleak')")
    if retain_result is None:
        ref, kind = MUSE_NEWS_AUC_RETRAIN, "muse_news_constant"
    else:
        ref = retain_result.get("privleak_auc")
        if ref is None:
            raise ValueError("retain_result has no privleak_auc (evaluate it with 'privleak')")
        kind = "retain_model"
        if float(ref) <= 0:
            raise ValueError(
                f"retain model privleak_auc is {ref}; PrivLeak is undefined for AUC_ref = 0"
            )
    value = privleak_value(auc_value, float(ref))
    result["privleak"] = value
    result.setdefault("metrics", {})["privleak"] = value
    result["privleak_reference"] = kind
    result["privleak_auc_ref"] = float(ref)
    return result
