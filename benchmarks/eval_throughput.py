"""Evaluation throughput: one-at-a-time vs batched (padded) vs packed, on a real model (SmolLM2-135M).

    python benchmarks/eval_throughput.py --model /tmp/smol/model --part throughput
    python benchmarks/eval_throughput.py --model /tmp/smol/model --part eval
    python benchmarks/eval_throughput.py --model /tmp/smol/model --part unlearn
    python benchmarks/eval_throughput.py --model DIR --part report   # the md table from both JSONs

Part ``throughput`` (same items for every mode; a warm-up call of each mode on the
first two items is not timed):

  (a) MC scoring: ``n`` WMDP-bio + ``n`` MMLU test items (``select_items``, seed 0).
      one-at-a-time  ``evaluate_mc(batch_size=1, single_forward=False, scoring="padded")``:
                     one forward per (item, choice) pair.
      batched        ``evaluate_mc(batch_size=B, scoring="padded")``: one forward per item
                     (the four scores read at its last position), right-padded batches of B.
      packed         ``evaluate_mc(scoring="packed")``: items packed into rows of <= 512
                     tokens, batches of <= 4096 tokens, no padding inside a row.
  (b) TOFU scoring: the first ``n_tofu`` questions of ``<data>/tofu/forget01_perturbed.json``
      with what TOFU scores for each (answer, paraphrase, five perturbed answers: 7 pairs),
      ``answer_nll(batch_size=1 | B, scoring="padded")`` vs ``answer_nll(scoring="packed")``
      (each question's prompt once and its 7 answers as a prefix tree after it: a start
      that several answers share is computed once; tree mask); the max |delta NLL| of
      packed vs padded is reported.

Part ``generation``: ``n_gen`` forget01 questions, ``greedy_generate`` one at a time and
batched with ``model.generate`` (``decoder="generate"``: a finished row runs until the
batch's last one ends) and batched with our loop (``decoder="auto"``: rows that produced
EOS leave the batch); the texts of the three are compared.

Tokens processed are the model inputs including padding (``B x T`` per forward pass);
the padding share is ``1 - real / processed``.

Part ``eval``: the wall and process-CPU time of one TOFU evaluation of the study's size
(``configs/study-tofu-smollm2.yaml``: 40 items per set, 160 in all, batch 16, 32 new
tokens, max_length 128), on the packed and the padded path (``--eval-modes``); part
``unlearn``: the same of one unlearning run of the study's size (BLUR-NPO, gamma 1: 20 AdamW
steps of 4 forget + 4 retain examples of <= 128 tokens on forget01 and the first 160
retain QA, the NPO reference pass and the final save included) with
``blur_core.train.loop.run``.

Each part writes a JSON under ``--json-dir``; ``report`` (or the end of either part) writes
``benchmarks/results/eval_throughput.md`` from the JSONs there. Examples/s are medians by
process CPU time (``time.process_time``: robust to other processes on a shared machine,
which only the wall clock sees) and by wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODES = ("single", "batched", "packed")
MODE_NAMES = {"single": "one-at-a-time", "batched": "batched (padded)", "packed": "packed"}


def timed(fn) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of ``fn()``."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def compare(name: str, n: int, fns: dict, warmups: dict, tokens: dict, reps: int) -> dict:
    """Warm up every mode, then time ``reps`` rotating rounds; median examples/s per mode.

    ``tokens[mode] = (real, processed)`` input tokens of one call.
    """
    for mode in fns:
        warmups[mode]()
    times = {mode: [] for mode in fns}
    order = list(fns)
    for rep in range(reps):
        for mode in order[rep % len(order) :] + order[: rep % len(order)]:
            times[mode].append(timed(fns[mode]))
        print(f"  {name} rep {rep}: {[times[m][-1] for m in fns]}", file=sys.stderr, flush=True)
    row = {"name": name, "n": n, "modes": {}}
    for mode in fns:
        real, processed = tokens[mode]
        row["modes"][mode] = {
            "cpu_s": statistics.median(t[0] for t in times[mode]),
            "wall_s": statistics.median(t[1] for t in times[mode]),
            "ex_per_s_cpu": n / statistics.median(t[0] for t in times[mode]),
            "ex_per_s_wall": n / statistics.median(t[1] for t in times[mode]),
            "tokens_real": real,
            "tokens_processed": processed,
            "padding_share": 1.0 - real / processed if processed else 0.0,
        }
    return row


# --- tokens processed by each path (from the library's own batch plans) ---------------


def padded_tokens(lengths: list[int], batch_size: int) -> tuple[int, int]:
    """(real, processed) tokens of right-padded length-sorted batches."""
    from blur_core.eval.likelihood import length_sorted_batches

    batches = length_sorted_batches(lengths, batch_size)
    return sum(lengths), sum(len(b) * max(lengths[i] for i in b) for b in batches)


def packed_tokens(requests, row_tokens: int, batch_tokens: int) -> tuple[int, int]:
    """(real, processed) tokens of the packed plan."""
    from blur_core.eval.packing import plan_batches

    plans = plan_batches(requests, 0, row_tokens, batch_tokens)
    return sum(b.real_tokens for b in plans), sum(b.padded_tokens for b in plans)


def tofu_pair_tokens(tok, questions, answers, batch_size: int, max_length: int) -> dict:
    from blur_core.data import QAFormat
    from blur_core.eval.likelihood import PACKED_ROW_TOKENS, _encode_all, _split_prompt
    from blur_core.eval.packing import group_by_prefix

    encoded = _encode_all(tok, questions, answers, QAFormat(), max_length)
    lengths = [len(e["input_ids"]) for e in encoded]
    requests, _ = group_by_prefix([_split_prompt(e) for e in encoded])
    return {
        "single": padded_tokens(lengths, 1),
        "batched": padded_tokens(lengths, batch_size),
        "packed": packed_tokens(requests, PACKED_ROW_TOKENS, 2048),
    }


def mc_tokens(model, tok, items, batch_size: int) -> dict:
    from blur_core.eval.mc import _build_requests, mc_context, resolve_max_length
    from blur_core.eval.packing import group_by_prefix

    contexts = [mc_context(it) for it in items]
    max_length = resolve_max_length(model, tok)
    per_pair = _build_requests(tok, contexts, max_length, False, None)
    single_fwd = _build_requests(tok, contexts, max_length, True, None)
    pairs = [
        (ids[: len(ids) - len(cont) + 1], cont)
        for ids, targets in per_pair
        for _, _, cont in targets
    ]
    requests, _ = group_by_prefix(pairs)
    return {
        "single": padded_tokens([len(ids) for ids, _ in per_pair], 1),
        "batched": padded_tokens([len(ids) for ids, _ in single_fwd], batch_size),
        "packed": packed_tokens(requests, 512, 4096),
    }


def gen_tokens(model, tok, questions, batch_size: int, max_new_tokens: int) -> dict:
    """(real, processed) tokens of generation: the prompts (padded) plus one token per
    row and step; a row past its EOS counts as padding under ``model.generate`` (it runs
    until the batch's last row ends) and is not run by our loop."""
    from blur_core.data import QAFormat, encode_prompt
    from blur_core.eval.generation import _eos_ids, greedy_decode, left_pad
    from blur_core.eval.likelihood import length_sorted_batches

    prompts = [encode_prompt(tok, q, QAFormat()) for q in questions]
    eos = _eos_ids(model, tok)
    # each row's own new-token count (EOS included), one at a time
    new_len = [
        len(greedy_decode(model, *left_pad([p], tok.pad_token_id), max_new_tokens, eos)[0])
        for p in prompts
    ]
    lengths = [len(p) for p in prompts]
    out = {}
    for mode, size in (("single", 1), ("batched", batch_size), ("packed", batch_size)):
        real = processed = 0
        for b in length_sorted_batches(lengths, size):
            width, steps = max(lengths[i] for i in b), max(new_len[i] for i in b)
            real += sum(lengths[i] + new_len[i] for i in b)
            if mode == "packed":
                processed += len(b) * width + sum(new_len[i] for i in b)
            else:
                processed += len(b) * (width + steps)
        out[mode] = (real, processed)
    return out


def tofu_candidates(records) -> tuple[list[str], list[str]]:
    """Each question with its answer, paraphrase and perturbed answers (TOFU's scoring)."""
    qs, ans = [], []
    for r in records:
        for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]:
            qs.append(r["question"])
            ans.append(a)
    return qs, ans


def part_throughput(args, model, tok) -> dict:
    from blur_core.data import load_records
    from blur_core.data.mc import load_mmlu, load_wmdp, select_items
    from blur_core.eval.likelihood import answer_nll
    from blur_core.eval.mc import evaluate_mc

    B, rows = args.batch_size, []
    items = select_items(load_wmdp(args.data / "wmdp", "bio"), args.n) + select_items(
        load_mmlu(args.data / "mmlu", "test"), args.n
    )

    def mc(sub, mode):
        if mode == "single":
            return lambda: evaluate_mc(
                model, tok, sub, batch_size=1, single_forward=False, scoring="padded"
            )
        if mode == "batched":
            return lambda: evaluate_mc(model, tok, sub, batch_size=B, scoring="padded")
        return lambda: evaluate_mc(model, tok, sub, scoring="packed")

    rows.append(
        compare(
            f"MC scoring ({args.n} WMDP-bio + {args.n} MMLU)",
            len(items),
            {m: mc(items, m) for m in MODES},
            {m: mc(items[:2], m) for m in MODES},
            mc_tokens(model, tok, items, B),
            args.reps,
        )
    )
    packed_mc = evaluate_mc(model, tok, items, scoring="packed")["per_example"]
    padded_mc = evaluate_mc(model, tok, items, batch_size=B, scoring="padded")["per_example"]
    rows[-1]["max_abs_delta"] = max(
        abs(a - b) for p, q in zip(packed_mc, padded_mc) for a, b in zip(p["loglik"], q["loglik"])
    )

    records = load_records(args.data / "tofu" / "forget01_perturbed.json")[: args.n_tofu]
    qs, ans = tofu_candidates(records)

    def nll(q, a, mode):
        if mode == "packed":
            return lambda: answer_nll(model, tok, q, a, max_length=128, scoring="packed")
        size = 1 if mode == "single" else B
        return lambda: answer_nll(
            model, tok, q, a, batch_size=size, max_length=128, scoring="padded"
        )

    rows.append(
        compare(
            f"TOFU scoring ({len(records)} forget01 questions x 7 answers)",
            len(qs),
            {m: nll(qs, ans, m) for m in MODES},
            {m: nll(qs[:2], ans[:2], m) for m in MODES},
            tofu_pair_tokens(tok, qs, ans, B, 128),
            args.reps,
        )
    )
    delta = answer_nll(model, tok, qs, ans, max_length=128, scoring="packed") - answer_nll(
        model, tok, qs, ans, batch_size=B, max_length=128, scoring="padded"
    )
    rows[-1]["max_abs_delta"] = float(delta.abs().max())

    return {"rows": rows}


def part_generation(args, model, tok) -> dict:
    from blur_core.data import load_records
    from blur_core.eval.generation import greedy_generate

    records = load_records(args.data / "tofu" / "forget01_perturbed.json")
    gq = [r["question"] for r in records][: args.n_gen]
    gen_b, new = min(args.batch_size, len(gq)), args.max_new_tokens

    def gen(q, size, decoder):
        return lambda: greedy_generate(
            model, tok, q, batch_size=size, max_new_tokens=new, decoder=decoder
        )

    fns = {
        "single": gen(gq, 1, "generate"),
        "batched": gen(gq, gen_b, "generate"),
        "packed": gen(gq, gen_b, "auto"),
    }
    warm = {"single": gen(gq[:1], 1, "generate"), "batched": gen(gq[:2], 2, "generate")}
    warm["packed"] = gen(gq[:2], 2, "auto")
    row = compare(
        f"greedy generation ({len(gq)} x {new} new tokens, batch {gen_b})",
        len(gq),
        fns,
        warm,
        gen_tokens(model, tok, gq, gen_b, new),
        args.reps,
    )
    row["same_outputs"] = fns["packed"]() == fns["batched"]() == fns["single"]()
    row["labels"] = {
        "single": "one-at-a-time (generate)",
        "batched": "batched (generate)",
        "packed": "batched, finished rows leave (own loop)",
    }
    return {"rows": [row]}


def _study_sets(data: Path, limit: int) -> dict:
    from blur_core.eval.tofu import load_tofu_eval_sets

    sets = load_tofu_eval_sets(data / "tofu", "forget01")
    return {name: records[:limit] for name, records in sets.items()}


def _unlearn_config(model_dir: str, data: Path, out: Path, steps: int) -> dict:
    """The study's unlearning run (configs/study-tofu-smollm2.yaml, BLUR-NPO at gamma 1)."""
    from blur_core.data import load_records

    retain = out / "retain160.json"
    retain.write_text(
        "".join(json.dumps(r) + "\n" for r in load_records(data / "tofu" / "retain99.json")[:160])
    )
    return {
        "model": model_dir,
        "output_dir": str(out / "run"),
        "method": {
            "name": "blur",
            "forget_loss": "npo",
            "retain_loss": "nll",
            "variant": "forget_priority",
            "beta": 0.1,
            "gamma": 1.0,
        },
        "data": {
            "forget": str(data / "tofu" / "forget01.json"),
            "retain": str(retain),
            "max_length": 128,
        },
        "train": {
            "max_steps": steps,
            "micro_batch_size": 4,
            "grad_accum": 1,
            "optimizer": "adamw",
            "lr": 5.0e-5,
            "max_grad_norm": 1.0,
            "progress": False,
        },
    }


def part_eval(args, model, tok) -> dict:
    from blur_core.eval.tofu import evaluate_tofu

    sets = _study_sets(args.data, 40)
    out = {"items": sum(len(v) for v in sets.values()), "evaluation": {}}
    results = {}
    for mode in args.eval_modes.split(","):

        def call(mode=mode):
            results[mode] = evaluate_tofu(
                model, tok, sets, batch_size=16, max_new_tokens=32, max_length=128, scoring=mode
            )

        cpu, wall = timed(call)
        out["evaluation"][mode] = {"cpu_s": cpu, "wall_s": wall}
        print(f"  TOFU evaluation ({mode}): {cpu:.1f} s CPU, {wall:.1f} s wall", file=sys.stderr)
    if {"packed", "padded"} <= results.keys():
        a, b = results["packed"]["aggregates"], results["padded"]["aggregates"]
        out["aggregate_max_abs_delta"] = max(abs(a[s][m] - b[s][m]) for s in a for m in a[s])
    return out


def part_unlearn(args, model, tok) -> dict:
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        cfg = parse_run_config(
            _unlearn_config(args.model, args.data, Path(tmp), args.unlearn_steps)
        )
        cpu, wall = timed(lambda: run(cfg))
        log = Path(cfg.output_dir) / "train_log.jsonl"
        step_walls = [
            rec["step_time_s"]
            for rec in map(json.loads, log.read_text().splitlines())
            if "step_time_s" in rec
        ]
    print(f"  unlearning run: {cpu:.1f} s CPU, {wall:.1f} s wall", file=sys.stderr)
    # fewer steps than the study's 20: the fixed part (load, NPO reference pass, save) once,
    # the mean step 20 times; CPU time scaled like the wall time
    fixed = wall - sum(step_walls)
    wall_20 = fixed + 20 * statistics.mean(step_walls)
    return {
        "steps": args.unlearn_steps,
        "measured_cpu_s": cpu,
        "measured_wall_s": wall,
        "step_wall_s": step_walls,
        "cpu_s": cpu * wall_20 / wall,
        "wall_s": wall_20,
        "scaled": args.unlearn_steps != 20,
    }


# --- the table -------------------------------------------------------------------------


def _ratio(row, a, b, key="ex_per_s_cpu") -> str:
    return f"{row['modes'][a][key] / row['modes'][b][key]:.2f}x"


def render(meta: dict, throughput: dict | None, study: dict | None, unlearn: dict | None) -> str:
    lines = [
        "# Evaluation throughput: one-at-a-time vs batched (padded) vs packed",
        "",
        f"Model `{meta['model']}` (fp32, CPU), batch size {meta['batch_size']}, torch threads "
        f"{meta['threads']} (machine: {meta['cores']} cores; load average {meta['load']} "
        f"at the start, {meta['date']}), median of {meta['reps']} "
        "rotating rounds after a warm-up. Examples/s by process CPU time (robust to load from "
        "other processes) and by wall time. Tokens = model inputs including padding; padding "
        "share = 1 - real / processed. Produced by `benchmarks/eval_throughput.py`.",
        "",
    ]
    if throughput:
        lines += [
            "| workload | n | path | tokens processed | padding | ex/s (CPU) | ex/s (wall) "
            "| vs one-at-a-time (CPU) | vs batched (CPU) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in throughput["rows"]:
            for mode, m in row["modes"].items():
                lines.append(
                    f"| {row['name']} | {row['n']} | {row.get('labels', MODE_NAMES)[mode]} "
                    f"| {m['tokens_processed']} "
                    f"| {100 * m['padding_share']:.0f}% | {m['ex_per_s_cpu']:.2f} "
                    f"| {m['ex_per_s_wall']:.2f} | {_ratio(row, mode, 'single')} "
                    f"| {_ratio(row, mode, 'batched')} |"
                )
        lines.append("")
        for row in throughput["rows"]:
            if "max_abs_delta" in row:
                lines.append(
                    f"- {row['name']}: max |packed - padded| = {row['max_abs_delta']:.2e} "
                    "(NLL per answer token / MC log-likelihood)"
                )
            if "same_outputs" in row:
                lines.append(
                    f"- {row['name']}: identical texts on all three paths: {row['same_outputs']}"
                )
        lines.append("")
    if study and unlearn:
        ev, un = study["evaluation"], unlearn
        scaled = (
            f" (measured over {un['steps']} steps: fixed part once + mean step x 20)"
            if un["scaled"]
            else ""
        )
        sm = study["meta"]
        lines += [
            f"Evaluation part: torch threads {sm['threads']}, load average {sm['load']} at the "
            f"start, {sm['date']}; unlearning part: threads {un['meta']['threads']}, load "
            f"{un['meta']['load']}, {un['meta']['date']}.",
            "",
            f"One study-size TOFU evaluation ({study['items']} items: 40 per set, batch 16, "
            "32 new tokens, max_length 128) vs one unlearning run of the study's size "
            f"(BLUR-NPO, 20 AdamW steps of 4 forget + 4 retain, 128 tokens){scaled}:",
            "",
            "| job | CPU s | wall s | / unlearning run (CPU) |",
            "|---|---:|---:|---:|",
        ]
        for mode, t in ev.items():
            lines.append(
                f"| TOFU evaluation, {mode} scoring | {t['cpu_s']:.0f} | {t['wall_s']:.0f} "
                f"| {t['cpu_s'] / un['cpu_s']:.2f} |"
            )
        lines.append(f"| unlearning run | {un['cpu_s']:.0f} | {un['wall_s']:.0f} | 1.00 |")
        if "aggregate_max_abs_delta" in study:
            lines += [
                "",
                f"Max |packed - padded| over the 12 aggregates: {study['aggregate_max_abs_delta']:.2e}.",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF model dir (e.g. the imported SmolLM2)")
    parser.add_argument(
        "--part",
        choices=("throughput", "generation", "eval", "unlearn", "report"),
        required=True,
    )
    parser.add_argument("--n", type=int, default=16, help="MC items per benchmark (WMDP-bio, MMLU)")
    parser.add_argument("--n-tofu", type=int, default=12, help="forget01 questions (x 7 answers)")
    parser.add_argument("--n-gen", type=int, default=8, help="questions for generation (0 = skip)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--unlearn-steps", type=int, default=20)
    parser.add_argument(
        "--eval-modes", default="packed,padded", help="scoring paths of the timed TOFU evaluation"
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_throughput.md"
    )
    parser.add_argument(
        "--json-dir",
        type=Path,
        default=REPO / "results" / "benchmarks",
        help="where each part's raw JSON goes (not committed)",
    )
    args = parser.parse_args(argv)
    args.data = args.data.resolve()
    parts = {
        "throughput": part_throughput,
        "generation": part_generation,
        "eval": part_eval,
        "unlearn": part_unlearn,
    }
    paths = {p: args.json_dir / f"eval_throughput.{p}.json" for p in parts}

    if args.part != "report":
        import torch

        from blur_core.models import load_model, load_tokenizer

        torch.set_num_threads(args.threads)
        model, tok = load_model(args.model), load_tokenizer(args.model)
        model.eval()
        meta = {
            "model": args.model,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "load": f"{os.getloadavg()[0]:.1f}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "reps": args.reps,
        }
        result = {"meta": meta, **parts[args.part](args, model, tok)}
        paths[args.part].parent.mkdir(parents=True, exist_ok=True)
        paths[args.part].write_text(json.dumps(result, indent=1), encoding="utf-8")
    loaded = {p: json.loads(f.read_text()) if f.is_file() else None for p, f in paths.items()}
    meta = next((r["meta"] for r in loaded.values() if r), None)
    if meta is None:
        raise SystemExit(f"no results yet: run a part first ({paths})")
    rows = [  # generation rows from the generation part (older throughput JSONs had them)
        r
        for r in (loaded["throughput"] or {}).get("rows", [])
        if not (loaded["generation"] and r["name"].startswith("greedy generation"))
    ] + (loaded["generation"] or {}).get("rows", [])
    text = render(meta, {"rows": rows} if rows else None, loaded["eval"], loaded["unlearn"])
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
