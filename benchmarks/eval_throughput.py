"""Evaluation throughput: batched vs one-at-a-time, on a real model (SmolLM2-135M).

    python benchmarks/eval_throughput.py --model /tmp/smol/model
    python benchmarks/eval_throughput.py --model DIR --n 32 --batch-size 16 --threads 1 --reps 3

Workloads (same items for both modes; a warm-up call of each mode is not timed):

  (a) MC scoring: ``n`` WMDP-bio + ``n`` MMLU test items (``select_items``, seed 0).
      batched        ``evaluate_mc(batch_size=B)``: one forward per item (the four " A".." D"
                     scores read from the last position), items length-sorted into
                     right-padded batches of B.
      one-at-a-time  ``evaluate_mc(batch_size=1, single_forward=False)``: one forward per
                     (item, choice) pair, 4 per item -- what a naive per-example loop does.
  (b) TOFU answer NLL: the first ``n_tofu`` questions of ``<data>/tofu/forget01.json``,
      ``blur_core.eval.likelihood.answer_nll(batch_size=B)`` vs ``batch_size=1``.
  (c) greedy generation: ``n_gen`` questions, ``greedy_generate(batch_size=B)`` vs 1,
      ``max_new_tokens`` new tokens.

Each mode runs ``reps`` times, the two modes alternating; the table gives the median
examples/s by process CPU time (``time.process_time``: robust to other processes on a
shared machine, which only the wall clock sees) and by wall time, and the ratios.
Writes ``benchmarks/results/eval_throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def timed(fn) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of ``fn()``."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def compare(name: str, n: int, batched, single, reps: int) -> dict:
    """Warm up both, then time ``reps`` alternating rounds; median examples/s."""
    batched()
    single()
    times = {"batched": [], "single": []}
    for rep in range(reps):
        order = (("batched", batched), ("single", single))
        for key, fn in order if rep % 2 == 0 else order[::-1]:
            times[key].append(timed(fn))
        print(
            f"  {name} rep {rep}: {times['batched'][-1]} vs {times['single'][-1]}", file=sys.stderr
        )
    row = {"name": name, "n": n}
    for key in ("batched", "single"):
        row[f"{key}_cpu"] = n / statistics.median(t[0] for t in times[key])
        row[f"{key}_wall"] = n / statistics.median(t[1] for t in times[key])
    row["ratio_cpu"] = row["batched_cpu"] / row["single_cpu"]
    row["ratio_wall"] = row["batched_wall"] / row["single_wall"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF model dir (e.g. the imported SmolLM2)")
    parser.add_argument("--n", type=int, default=32, help="MC items per benchmark (WMDP-bio, MMLU)")
    parser.add_argument(
        "--n-tofu", type=int, default=40, help="TOFU forget01 questions (answer NLL)"
    )
    parser.add_argument(
        "--n-gen", type=int, default=8, help="questions for greedy generation (0 = skip)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_throughput.md"
    )
    args = parser.parse_args(argv)

    import torch

    from blur_core.data import load_records
    from blur_core.data.mc import load_mmlu, load_wmdp, select_items
    from blur_core.eval.generation import greedy_generate
    from blur_core.eval.likelihood import answer_nll
    from blur_core.eval.mc import evaluate_mc
    from blur_core.models import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    model.eval()
    B = args.batch_size
    rows = []

    items = select_items(load_wmdp(args.data / "wmdp", "bio"), args.n) + select_items(
        load_mmlu(args.data / "mmlu", "test"), args.n
    )
    rows.append(
        compare(
            f"MC scoring ({args.n} WMDP-bio + {args.n} MMLU)",
            len(items),
            lambda: evaluate_mc(model, tok, items, batch_size=B),
            lambda: evaluate_mc(model, tok, items, batch_size=1, single_forward=False),
            args.reps,
        )
    )

    tofu = load_records(args.data / "tofu" / "forget01.json")[: args.n_tofu]
    qs, ans = [r["question"] for r in tofu], [r["answer"] for r in tofu]
    rows.append(
        compare(
            f"TOFU answer NLL (forget01, {len(qs)})",
            len(qs),
            lambda: answer_nll(model, tok, qs, ans, batch_size=B),
            lambda: answer_nll(model, tok, qs, ans, batch_size=1),
            args.reps,
        )
    )

    if args.n_gen > 0:
        gq = qs[: args.n_gen]
        gen_b, new_tokens = min(B, len(gq)), args.max_new_tokens
        rows.append(
            compare(
                f"greedy generation ({len(gq)} x {args.max_new_tokens} new tokens, batch {gen_b})",
                len(gq),
                lambda: greedy_generate(
                    model, tok, gq, batch_size=gen_b, max_new_tokens=new_tokens
                ),
                lambda: greedy_generate(model, tok, gq, batch_size=1, max_new_tokens=new_tokens),
                max(1, args.reps - 1),
            )
        )

    lines = [
        "# Evaluation throughput: batched vs one-at-a-time",
        "",
        f"Model `{args.model}` (fp32, CPU), batch size {B}, torch threads {torch.get_num_threads()} "
        f"(machine: {os.cpu_count()} cores, shared with other jobs), median of {args.reps} alternating "
        "rounds after a warm-up. examples/s by process CPU time and by wall time; the CPU-time ratio "
        "is the one robust to load from other processes.",
        "",
        "| workload | n | batched ex/s (CPU) | one-at-a-time ex/s (CPU) | ratio (CPU) "
        "| batched ex/s (wall) | one-at-a-time ex/s (wall) | ratio (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['n']} | {r['batched_cpu']:.2f} | {r['single_cpu']:.2f} | "
            f"{r['ratio_cpu']:.2f}x | {r['batched_wall']:.2f} | {r['single_wall']:.2f} | "
            f"{r['ratio_wall']:.2f}x |"
        )
    lines += [
        "",
        "MC one-at-a-time = `evaluate_mc(batch_size=1, single_forward=False)` (4 forwards per item); "
        "batched = `evaluate_mc(batch_size=B)` (1 forward per item, padded batches).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
