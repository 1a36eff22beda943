"""The GPU check: BLUR's cost at ~1B parameters on one GPU, measured in one short run.

    bash benchmarks/gpu_check.sh                   # ~1B Llama, bf16, on the GPU (<= 8 min on one H100/H200)
    python benchmarks/gpu_check.py --size tiny     # the same code paths on a CPU in ~1 min (CI smoke test)

Nothing is downloaded: the model is a Llama built from a config with random weights (1b:
hidden 2048, 16 layers, 32 heads / 8 KV heads, MLP 8192, vocabulary ~32k: ~1.1B parameters,
about Llama-3.2-1B's shape), the tokenizer a word-level one over synthetic words, the data
synthetic QA records (forget and retain). Printed and written (``--out``, default
``benchmarks/results/gpu_check.md``):

1. **Step time and peak GPU memory**, BLUR (forget priority, GA forget loss, NLL retain loss)
   vs GradDiff (the same two losses, weighted sum), bf16, AdamW: the local backend (one GPU)
   and DeepSpeed ZeRO-2 and ZeRO-3 with one rank. Each configuration runs ``steps`` optimizer
   steps of ``micro_batch`` forget + ``micro_batch`` retain sequences in its own process
   (``python -m blur_core unlearn``); the median step time excludes the first two steps;
   peak memory is ``torch.cuda.max_memory_allocated`` of the run (``summary.json``).
2. **The combiner alone** on gradients of the model's parameter shapes: ``blur_direction``
   (one flat fp32 buffer per set, no host sync) vs the reference code's per-parameter loop (two
   ``.item()`` per tensor, three gradient copies; ``benchmarks/step_bench.py``); time and the
   extra memory it allocates.
3. **Evaluation throughput**: answer NLL scoring and greedy generation, batched (32) vs one
   at a time, examples per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SIZES = {
    # ~1.1B parameters, the shape of Llama-3.2-1B (which ties its embeddings; untied here)
    "1b": dict(
        hidden=2048,
        layers=16,
        heads=32,
        kv_heads=8,
        mlp=8192,
        vocab=32000,
        seq=512,
        micro_batch=8,
        eval_items=64,
        gen_tokens=32,
    ),
    # the same code paths in about a minute on 2 CPU cores
    "tiny": dict(
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        mlp=128,
        vocab=300,
        seq=48,
        micro_batch=4,
        eval_items=8,
        gen_tokens=4,
    ),
}
CONFIGS = [("local", None), ("deepspeed", "zero2"), ("deepspeed", "zero3")]
METHODS = {
    "BLUR": {"name": "blur", "forget_loss": "ga", "retain_loss": "nll", "gamma": 0.1},
    "GradDiff": {"name": "graddiff", "retain_loss": "nll"},
}


def build_inputs(root: Path, size: dict, seed: int = 0) -> tuple[Path, Path, Path]:
    """A random-weight Llama of ``size`` with a word-level tokenizer, and synthetic forget /
    retain QA files whose examples are about ``size["seq"]`` tokens long."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from blur_core.data.io import write_jsonl
    from blur_core.tiny import build_tokenizer

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(size["vocab"])]
    tokenizer = build_tokenizer([" ".join(words)])
    n = max(2 * size["micro_batch"], size["eval_items"])
    answer_len = max(4, size["seq"] - 24)

    def records():
        return [
            {
                "question": " ".join(rng.choices(words, k=16)),
                "answer": " ".join(rng.choices(words, k=answer_len)),
            }
            for _ in range(n)
        ]

    forget, retain = (
        write_jsonl(root / "forget.jsonl", records()),
        write_jsonl(root / "retain.jsonl", records()),
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size["hidden"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        intermediate_size=size["mlp"],
        max_position_embeddings=max(2048, 2 * size["seq"]),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = LlamaForCausalLM(config).to(dtype)
    model_dir = root / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    (root / "n_params.txt").write_text(str(n_params))
    return model_dir, forget, retain


def train_run(root: Path, model_dir, forget, retain, method, backend, ds, size, steps, dtype):
    """One ``python -m blur_core unlearn`` process; (median step s, peak MiB, wall s)."""
    out = root / f"run-{method['name']}-{ds or backend}"
    train = {
        "max_steps": steps,
        "micro_batch_size": size["micro_batch"],
        "grad_accum": 1,
        "optimizer": "adamw",
        "lr": 1e-5,
        "max_grad_norm": 1.0,
        "dtype": dtype,
        "progress": False,
    }
    if backend == "deepspeed":
        train.update(backend="deepspeed", deepspeed_config=ds)
    cfg = {
        "model": str(model_dir),
        "output_dir": str(out),
        "method": method,
        "data": {"forget": str(forget), "retain": str(retain), "max_length": size["seq"] + 8},
        "train": train,
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "blur_core", "unlearn", "--config-json", json.dumps(cfg)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=900,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{method['name']} {ds or backend} failed:\n{proc.stderr[-3000:]}")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    times = [r["step_time_s"] for r in log[2:]] or [r["step_time_s"] for r in log]
    summary = json.loads((out / "summary.json").read_text())
    return statistics.median(times), summary.get("peak_memory_mb"), wall


def combiner_check(model_dir: Path, reps: int) -> dict:
    """blur_direction on flat buffers vs the per-parameter reference, on the model's shapes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.step_bench import reference_direction
    from blur_core.bilevel import blur_direction

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device("meta"):
        shapes = [
            p.shape
            for p in AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(model_dir)
            ).parameters()
        ]
    total = sum(s.numel() for s in shapes)
    g = torch.Generator(device=device).manual_seed(0)
    flat_f = torch.randn(total, generator=g, device=device)
    flat_r = torch.randn(total, generator=g, device=device) + 0.1 * flat_f
    views_f = list(torch.split(flat_f, [s.numel() for s in shapes]))
    views_r = list(torch.split(flat_r, [s.numel() for s in shapes]))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def measure(fn):
        fn()  # warm-up
        sync()
        times, extra = [], 0
        for _ in range(reps):
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
            if device == "cuda":
                extra = max(extra, torch.cuda.max_memory_allocated() - base)
        return statistics.median(times), extra / 2**20

    ours = measure(lambda: blur_direction([flat_f], [flat_r.clone()], 0.1, inplace=True))
    ref = measure(lambda: reference_direction(views_f, views_r, 0.1))
    return {"n_params": total, "n_tensors": len(shapes), "ours": ours, "reference": ref}


def eval_check(model_dir: Path, forget: Path, size: dict) -> dict:
    """answer_nll and greedy_generate, batched vs one at a time (examples/s)."""
    import torch

    from blur_core.data.io import load_records
    from blur_core.eval.generation import greedy_generate
    from blur_core.eval.likelihood import answer_nll
    from blur_core.models import load_model, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    model, tok = load_model(str(model_dir), dtype, device).eval(), load_tokenizer(str(model_dir))
    recs = load_records(forget)[: size["eval_items"]]
    qs, ans = [r["question"] for r in recs], [r["answer"] for r in recs]
    out = {}
    for name, fn in {
        "answer NLL": lambda b: answer_nll(
            model, tok, qs, ans, batch_size=b, max_length=size["seq"] + 8
        ),
        "greedy generation": lambda b: greedy_generate(
            model, tok, qs, batch_size=b, max_new_tokens=size["gen_tokens"]
        ),
    }.items():
        rates = {}
        for b in (32, 1):
            fn(b)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(b)
            if device == "cuda":
                torch.cuda.synchronize()
            rates[b] = len(qs) / (time.perf_counter() - t0)
        out[name] = rates
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per training run")
    ap.add_argument("--reps", type=int, default=5, help="combiner calls timed per variant")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_check.md"))
    args = ap.parse_args()
    import torch

    size = SIZES[args.size]
    cuda = torch.cuda.is_available()
    if args.size == "1b" and not cuda:
        print("no CUDA device: the 1b check needs a GPU (use --size tiny for the CPU smoke test)")
        return 2
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    dtype = "bfloat16" if cuda else "float32"
    start = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        root = Path(tmp)
        model_dir, forget, retain = build_inputs(root, size)
        n_params = int((root / "n_params.txt").read_text())
        print(
            f"model: {n_params / 1e6:.0f}M parameters ({args.size}), {dtype}, on {device}",
            flush=True,
        )
        rows = []
        for backend, ds in CONFIGS:
            result = {}
            for label, method in METHODS.items():
                result[label] = train_run(
                    root, model_dir, forget, retain, method, backend, ds, size, args.steps, dtype
                )
                print(f"  {ds or backend} {label}: {result[label]}", flush=True)
            rows.append((f"ZeRO-{ds[-1]}, 1 rank" if ds else "local, 1 process", result))
        comb = combiner_check(model_dir, args.reps)
        print(f"  combiner: {comb}", flush=True)
        ev = eval_check(model_dir, forget, size)
        print(f"  eval: {ev}", flush=True)
    total = time.perf_counter() - start

    def mem(v):
        return "n/a" if v is None else f"{v / 1024:.2f}"

    lines += [
        f"# GPU check ({args.size})",
        "",
        f"`python benchmarks/gpu_check.py --size {args.size} --steps {args.steps}` on **{device}**, "
        f"torch {torch.__version__}; {n_params / 1e6:.0f}M-parameter Llama with random weights, "
        f"{dtype}, {size['micro_batch']} forget + {size['micro_batch']} retain sequences of "
        f"~{size['seq']} tokens per step, AdamW. Total wall time {total:.0f} s.",
        "",
        "## Step time and peak memory: BLUR vs GradDiff",
        "",
        "| backend | BLUR step (s) | GradDiff step (s) | BLUR / GradDiff | BLUR peak (GiB) | "
        "GradDiff peak (GiB) | run wall, BLUR / GradDiff (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        b, g = r["BLUR"], r["GradDiff"]
        lines.append(
            f"| {name} | {b[0]:.3f} | {g[0]:.3f} | {b[0] / g[0]:.3f} | {mem(b[1])} | {mem(g[1])} | "
            f"{b[2]:.0f} / {g[2]:.0f} |"
        )
    (t_ours, m_ours), (t_ref, m_ref) = comb["ours"], comb["reference"]
    lines += [
        "",
        f"## The combiner alone ({comb['n_params'] / 1e6:.0f}M fp32 gradient entries in "
        f"{comb['n_tensors']} tensors, median of {args.reps})",
        "",
        "| combiner | time (ms) | / blur_direction | extra memory (MiB) |",
        "|---|---|---|---|",
        f"| blur_direction (flat, in place, no host sync) | {t_ours * 1e3:.2f} | 1.00 | {m_ours:.0f} |",
        f"| reference-style per-parameter loop | {t_ref * 1e3:.2f} | {t_ref / t_ours:.2f} | {m_ref:.0f} |",
        "",
        f"## Evaluation throughput ({size['eval_items']} items, examples/s)",
        "",
        "| workload | batched (32) | one at a time | ratio |",
        "|---|---|---|---|",
    ]
    for name, rates in ev.items():
        lines.append(f"| {name} | {rates[32]:.1f} | {rates[1]:.1f} | {rates[32] / rates[1]:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
