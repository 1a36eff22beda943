"""Agreement of blur_core's zero-shot multiple choice with lm-evaluation-harness itself.

    python benchmarks/mc_agreement.py --model /tmp/smol/model            # 200 WMDP-bio + 200 MMLU
    python benchmarks/mc_agreement.py --model DIR --n 50 --batch-size 16 # 50 + 50

Items: ``select_items(load_wmdp(<data>/wmdp, "bio"), n)`` and ``select_items(load_mmlu(
<data>/mmlu, "test"), n)`` (seed 0; the MMLU subset spans the subjects).

lm-eval side (its own machinery, offline): for every task involved (``wmdp_bio``,
``mmlu_<subject>``) lm-eval's task yaml is loaded with lm-eval's yaml loader
(``lm_eval.tasks._yaml_loader.load_yaml``, includes resolved), ``dataset_path`` is
overridden to a local JSON Lines file holding the selected items in the hub schema
``{question, subject, choices, answer}``, a ``ConfigurableTask`` builds the requests
(``build_all_requests``: description + doc_to_text + target_delimiter + choice), all
requests of all tasks go through ONE ``HFLM(pretrained=model, tokenizer=tok,
batch_size=B).loglikelihood`` call, and lm-eval's ``task.process_results`` gives its
``acc`` per item. Ours: ``blur_core.eval.mc.evaluate_mc(model, tok, items, batch_size=B)``.

Writes ``benchmarks/results/mc_agreement.md`` (and prints it): prediction agreement,
max |delta loglik| over all item x choice scores, accuracy of each, wall time of each
(scoring only; tokenisation included, model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def lmeval_task_yaml(subject: str) -> Path:
    """Path of lm-eval's task yaml for a blur_core subject (``wmdp_bio`` / an MMLU subject)."""
    import lm_eval

    tasks = Path(lm_eval.__file__).parent / "tasks"
    if subject.startswith("wmdp_"):
        return tasks / "wmdp" / f"{subject}.yaml"
    return tasks / "mmlu" / "default" / f"mmlu_{subject}.yaml"


def run_lmeval(model, tokenizer, items, batch_size: int, workdir: str | Path) -> dict:
    """Score ``items`` with lm-eval's task configs and HFLM (see the module docstring).

    Returns ``{"loglik": [[4 floats] per item], "acc": [0/1 per item], "seconds": wall,
    "cpu_seconds": process CPU time, "contexts": [str per item]}`` in the order of ``items``.
    """
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks._yaml_loader import load_yaml

    workdir = Path(workdir)
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_subject[item.subject].append(i)
    t0, c0 = time.perf_counter(), time.process_time()
    tasks, instances = {}, []
    for subject, idx in by_subject.items():
        data = workdir / f"{subject}.jsonl"
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "question": items[i].question,
                        "subject": subject,
                        "choices": list(items[i].choices),
                        "answer": items[i].answer,
                    }
                )
                + "\n"
                for i in idx
            ),
            encoding="utf-8",
        )
        cfg = load_yaml(lmeval_task_yaml(subject))
        # the mmlu yamls name a few-shot split ("dev"); unused at 0 shots but must exist
        files = {"test": str(data), "dev": str(data)}
        cfg.update(
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": files, "cache_dir": str(workdir / "hf_cache")},
        )
        task = ConfigurableTask(config=cfg)
        task.build_all_requests(limit=None, rank=0, world_size=1)
        tasks[subject] = task
        instances += [(subject, inst) for inst in task.instances]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = lm.loglikelihood([inst for _, inst in instances], disable_tqdm=True)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    n_choices = 4
    loglik = [[float("nan")] * n_choices for _ in items]
    raw: dict[int, list] = defaultdict(lambda: [None] * n_choices)
    contexts = [""] * len(items)
    docs = {}
    for (subject, inst), res in zip(instances, results):
        i = by_subject[subject][inst.doc_id]
        loglik[i][inst.idx] = float(res[0])
        raw[i][inst.idx] = res
        contexts[i] = inst.args[0]
        docs[i] = (subject, inst.doc)
    acc = [
        float(tasks[s].process_results(doc, raw[i])["acc"]) for i, (s, doc) in sorted(docs.items())
    ]
    return {
        "loglik": loglik,
        "acc": acc,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "contexts": contexts,
    }


def load_items(data: Path, n: int, seed: int = 0):
    from blur_core.data.mc import load_mmlu, load_wmdp, select_items

    wmdp = select_items(load_wmdp(data / "wmdp", "bio"), n, seed)
    mmlu = select_items(load_mmlu(data / "mmlu", "test"), n, seed)
    return wmdp, mmlu


def compare(ours: dict, theirs: dict) -> dict:
    """Agreement numbers of one item set."""
    pairs = list(zip(ours["per_example"], theirs["loglik"]))
    their_pred = [max(range(len(t)), key=lambda k: (t[k], -k)) for t in theirs["loglik"]]
    agree = sum(o["pred"] == p for (o, _), p in zip(pairs, their_pred))
    max_delta = max(abs(a - b) for o, t in pairs for a, b in zip(o["loglik"], t))
    n = len(pairs)
    return {
        "n": n,
        "agree": agree,
        "agree_pct": 100.0 * agree / n,
        "max_delta": max_delta,
        "acc_ours": ours["accuracy"],
        "acc_lmeval": sum(theirs["acc"]) / n,
        "s_ours": ours["seconds"],
        "s_lmeval": theirs["seconds"],
        "cpu_ours": ours["cpu_seconds"],
        "cpu_lmeval": theirs["cpu_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF model dir (e.g. the imported SmolLM2)")
    parser.add_argument("--n", type=int, default=200, help="items per benchmark (WMDP-bio, MMLU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "mc_agreement.md"
    )
    args = parser.parse_args(argv)

    import torch

    from blur_core.eval.mc import evaluate_mc, mc_context
    from blur_core.models import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    model.eval()
    rows = {}
    prompt_mismatch = 0
    wmdp, mmlu = load_items(args.data, args.n)
    evaluate_mc(model, tok, wmdp[:2], batch_size=2)  # warm-up, not timed
    with tempfile.TemporaryDirectory() as tmp:
        for name, items in zip(("WMDP-bio", "MMLU"), (wmdp, mmlu)):
            t0, c0 = time.perf_counter(), time.process_time()
            ours = evaluate_mc(model, tok, items, batch_size=args.batch_size)
            ours["seconds"], ours["cpu_seconds"] = (
                time.perf_counter() - t0,
                time.process_time() - c0,
            )
            theirs = run_lmeval(model, tok, items, args.batch_size, tmp)
            prompt_mismatch += sum(mc_context(it) != c for it, c in zip(items, theirs["contexts"]))
            rows[name] = compare(ours, theirs)
            print(f"{name}: {rows[name]}", file=sys.stderr)

    lines = [
        "# Zero-shot multiple choice: blur_core vs lm-evaluation-harness",
        "",
        f"Model `{args.model}`, {args.n} WMDP-bio + {args.n} MMLU test items (`select_items`, seed 0), "
        f"batch size {args.batch_size} for both, fp32, {torch.get_num_threads()} CPU threads. "
        "lm-eval: its own task yamls (`wmdp_bio`, `mmlu_<subject>`) with `dataset_path` pointed at a "
        "local JSON Lines copy of the items, `ConfigurableTask.build_all_requests`, one "
        "`HFLM.loglikelihood` call, `task.process_results` for `acc`. "
        f"Prompt strings differing from `mc_context`: {prompt_mismatch}. Times: scoring incl. "
        "tokenisation (lm-eval: incl. building its dataset and requests), model load excluded; "
        "wall time on a machine shared with other jobs, process CPU time less sensitive to that. "
        "Ours projects only the scored positions onto the vocabulary (`logits_to_keep`), lm-eval "
        "computes full `[B, T, V]` logits.",
        "",
        "| items | n | prediction agreement | max abs delta loglik | acc (ours) | acc (lm-eval) "
        "| wall s (ours) | wall s (lm-eval) | CPU s (ours) | CPU s (lm-eval) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['n']} | {r['agree']}/{r['n']} ({r['agree_pct']:.1f} %) | {r['max_delta']:.2e} "
            f"| {r['acc_ours']:.4f} | {r['acc_lmeval']:.4f} | {r['s_ours']:.1f} | {r['s_lmeval']:.1f} "
            f"| {r['cpu_ours']:.1f} | {r['cpu_lmeval']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
