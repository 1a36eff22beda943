"""Evaluation of a model unlearned on a text corpus: the protocol's suites in one result.

Two protocols, as the BLUR paper's corpus experiments:

* ``muse`` (MUSE-News, or the embedded corpus): the ``muse`` suite on the prepared corpus dir
  (its ``knowmem/``, ``verbmem/``, ``privleak/`` sets): VerbMem, KnowMem on forget and retain
  QA, PrivLeak against the retain model's AUC, and the MIA AUCs.
* ``wmdp``: multiple-choice accuracy on the hazardous knowledge (``forget_mc``: WMDP's
  questions for the ``wmdp`` kind, the corpus's own 4-way forget questions for the embedded
  corpus) and on general knowledge (``utility_mc``: MMLU, or the corpus's retain questions).
  There is no retain model in this protocol (unlearning starts from the base model).

The result (``eval.json`` of the pipeline's ``evaluate`` rule for corpus benchmarks)::

    {"protocol": "muse" | "wmdp", "metrics": {"<suite>.<metric>": float},
     "suites": {name: the suite result}, "unavailable": {"<suite>.<metric>": reason}}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blur_core.config import ConfigError

__all__ = ["PROTOCOLS", "evaluate_corpus", "protocol_suites"]

PROTOCOLS = ("muse", "wmdp")


def protocol_suites(
    bench_dir: str | Path,
    protocol: str,
    *,
    corpus_kind: str,
    wmdp_source: str | None = None,
    wmdp_subset: str = "bio",
    mmlu_source: str | None = None,
    limit: int | None = None,
    mc_limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    verbmem_max_new_tokens: int = 128,
    privleak_max_length: int = 2048,
    seed: int = 0,
) -> dict[str, dict]:
    """The suite specs (``blur_core.eval.suites`` keys) of ``protocol`` on a prepared corpus.

    Raises:
        ConfigError: an unknown protocol, or a ``wmdp`` protocol on the ``wmdp`` kind without
            ``wmdp_source`` (the multiple-choice questions are not part of the corpora).
    """
    bench_dir = str(bench_dir)
    if protocol == "muse":
        return {
            "muse": {
                "kind": "muse",
                "source": bench_dir,
                "limit": limit,
                "batch_size": batch_size,
                "max_new_tokens": max_new_tokens,
                "verbmem_max_new_tokens": verbmem_max_new_tokens,
                "privleak_max_length": privleak_max_length,
            }
        }
    if protocol != "wmdp":
        raise ConfigError(f"unknown corpus protocol {protocol!r}; expected one of {PROTOCOLS}")
    mc = {"limit": mc_limit, "batch_size": batch_size, "seed": seed}
    if corpus_kind == "corpus-embedded":
        return {
            "forget_mc": {"kind": "corpus_mc", "source": bench_dir, "set": "forget", **mc},
            "utility_mc": {"kind": "corpus_mc", "source": bench_dir, "set": "retain", **mc},
        }
    if not wmdp_source:
        raise ConfigError(
            "the wmdp protocol scores WMDP's multiple-choice questions: give their source "
            "(a dir with wmdp-{bio,chem,cyber}.json such as ../shared/data/wmdp, or cais/wmdp)"
        )
    suites = {"forget_mc": {"kind": "wmdp", "source": wmdp_source, "subset": wmdp_subset, **mc}}
    if mmlu_source:
        suites["utility_mc"] = {"kind": "mmlu", "source": mmlu_source, **mc}
    return suites


def evaluate_corpus(
    protocol: str,
    suites: Mapping[str, dict],
    model,
    tokenizer,
    *,
    fmt=None,
    reference: Mapping | None = None,
    self_reference: bool = False,
    no_reference: bool = False,
) -> dict[str, Any]:
    """Run ``suites`` (from :func:`protocol_suites`) on ``model``; one merged result.

    ``reference`` is the retain model's result of this function (PrivLeak's AUC reference);
    ``self_reference`` marks the retain model itself; ``no_reference``: there is none, so
    reference-relative metrics are recorded as unavailable with the reason.
    """
    from blur_core.eval.suites import parse_suite, run_suite

    out: dict[str, Any] = {"protocol": protocol, "metrics": {}, "suites": {}, "unavailable": {}}
    for name, spec in suites.items():
        cfg = parse_suite(spec, f"{protocol}.{name}")
        ref = None if reference is None else reference.get("suites", {}).get(name)
        result = run_suite(
            name,
            cfg,
            model,
            tokenizer,
            fmt=fmt,
            reference=ref,
            self_reference=self_reference,
            no_reference=no_reference,
        )
        out["suites"][name] = result
        for key, value in result["metrics"].items():
            out["metrics"][f"{name}.{key}"] = value
        for key, reason in result.get("unavailable", {}).items():
            out["unavailable"][f"{name}.{key}"] = reason
    return out
