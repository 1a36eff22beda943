"""Evaluation: batched answer likelihoods, batched greedy generation, the TOFU metrics,
multiple choice in lm-evaluation-harness format (WMDP, MMLU), MUSE-News, membership
inference and memorisation, and the named suites that combine them.

Prompts are built with the training code (:mod:`blur_core.data.qa`), so a model is
evaluated on exactly the prompts it was trained on. Importing this package has no side
effects; ``rouge_score`` and ``scipy`` are imported only when their metrics are used.
"""

from blur_core.eval.generation import greedy_generate, left_pad
from blur_core.eval.likelihood import answer_nll, length_sorted_batches
from blur_core.eval.mc import evaluate_mc, mc_context
from blur_core.eval.mia import auc as mia_auc
from blur_core.eval.mia import mia_suite, qa_memorisation, token_statistics
from blur_core.eval.muse import add_privleak_reference, evaluate_muse
from blur_core.eval.tofu import (
    METRICS,
    SETS,
    UTILITY_KEYS,
    UTILITY_SETS,
    add_forget_quality,
    evaluate_tofu,
    forget_quality,
    load_tofu_eval_sets,
    model_utility,
    normalised_probability,
    probability,
    recompute_aggregates,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_retain_score,
    utility_values,
)

__all__ = [
    "METRICS",
    "SETS",
    "UTILITY_KEYS",
    "UTILITY_SETS",
    "add_forget_quality",
    "add_privleak_reference",
    "answer_nll",
    "evaluate_mc",
    "evaluate_muse",
    "evaluate_tofu",
    "forget_quality",
    "greedy_generate",
    "left_pad",
    "length_sorted_batches",
    "load_tofu_eval_sets",
    "mc_context",
    "mia_auc",
    "mia_suite",
    "model_utility",
    "normalised_probability",
    "probability",
    "qa_memorisation",
    "recompute_aggregates",
    "rouge_l_recall",
    "token_statistics",
    "truth_ratio",
    "truth_ratio_forget_score",
    "truth_ratio_retain_score",
    "utility_values",
]
