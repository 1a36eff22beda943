"""BLUR vs GradDiff under DeepSpeed ZeRO-2 and ZeRO-3: step time and peak memory per rank.

    python benchmarks/zero_step.py [--nproc 2] [--steps 12] [--hidden 512] [--layers 4]

Both methods use the same model, data, losses (forget: -NLL, retain: NLL), batch split and
backend; they differ only in the combiner (BLUR direction vs weighted sum), so the ratio
of step times is the cost of BLUR's projection and the memory difference its extra
buffers. Each (stage, method) runs in a fresh torchrun launch (peak RSS is per process).
The first 2 steps of every launch are warm-up and excluded; the table reports the median
step time. ``--rounds N`` repeats every launch N times, alternating the method order, so
that a shared machine's load hits both methods alike. ``--out`` writes the table as markdown
(default benchmarks/results/zero_step.md).

Targets (issue 3): BLUR/GradDiff step time <= 1.05; BLUR's extra peak memory per rank
<= 2 fp32 gradient shards. Note that our ZeroBackend keeps the forget and retain shards in
two fp32 buffers for *both* combiners (the weighted sum needs both gradients too), so the
"2 shards" column also bounds the backend's overhead over plain DeepSpeed.
On CPU, memory is peak RSS (ru_maxrss); on GPU, torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METHODS = {
    "BLUR": {"name": "blur", "forget_loss": "ga", "retain_loss": "nll", "gamma": 0.1},
    "GradDiff": {
        "name": "graddiff",
        "forget_weight": 1.0,
        "retain_weight": 1.0,
        "retain_loss": "nll",
    },
}
STAGES = ("zero2", "zero3")


def _worker(cfg_path: str, result_path: str) -> None:
    import torch
    import torch.distributed as dist
    import yaml

    from blur_core.train.config import parse_run_config
    from blur_core.train.dist import init_distributed
    from blur_core.train.loop import run

    ctx = init_distributed()
    cfg = parse_run_config(yaml.safe_load(Path(cfg_path).read_text()))
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    run(cfg, ctx)
    if ctx.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks = [None] * ctx.world_size
    dist.all_gather_object(peaks, peak)
    if ctx.is_main:
        log = [
            json.loads(x)
            for x in (Path(cfg.output_dir) / "train_log.jsonl").read_text().splitlines()
        ]
        Path(result_path).write_text(
            json.dumps(
                {
                    "step_times": [r["step_time_s"] for r in log],
                    "peak_mb": peaks,
                    "device": ctx.device.type,
                }
            )
        )


def _n_params(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as fh:
        return sum(_prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118 (safe_open is no dict)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--stages", default="zero2,zero3", help="comma-separated subset of zero2,zero3")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every (stage, method) launch this often, method order alternating (shared machines)",
    )
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--workdir", help="keep runs here (default: a temp dir)")
    ap.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "zero_step.md"),
        help="also write the table here (markdown); '' to skip",
    )
    ap.add_argument("--worker", nargs=2, metavar=("CFG", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker)
        return 0

    import yaml

    from blur_core.tiny import prepare_embedded

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="zero_step_"))
    paths = prepare_embedded(
        work / "embedded",
        n_people=40,
        questions_per_person=5,
        forget_fraction=0.25,
        seed=0,
        hidden_size=args.hidden,
        num_layers=args.layers,
    )
    n_params = _n_params(paths["base_model"])
    shard_mb = n_params * 4 / args.nproc / 2**20
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    results: dict[tuple[str, str], dict] = {}
    load0 = os.getloadavg()[0]
    stages = tuple(x for x in args.stages.split(",") if x)
    if not stages or any(x not in STAGES for x in stages):
        ap.error(f"--stages: choose from {','.join(STAGES)}")
    for rnd in range(args.rounds):
        for stage in stages:
            labels = list(METHODS) if rnd % 2 == 0 else list(METHODS)[::-1]
            for label in labels:
                method = METHODS[label]
                out = work / f"{stage}-{label}-{rnd}"
                cfg = {
                    "model": str(paths["base_model"]),
                    "output_dir": str(out),
                    "method": method,
                    "data": {
                        "forget": str(paths["forget"]),
                        "retain": str(paths["retain"]),
                        "max_length": 64,
                    },
                    "train": {
                        "max_steps": args.steps,
                        "micro_batch_size": args.micro_batch,
                        "grad_accum": args.grad_accum,
                        "optimizer": "adamw",
                        "lr": 1e-4,
                        "dtype": args.dtype,
                        "progress": False,
                        "resume": "never",
                        "backend": "deepspeed",
                        "deepspeed_config": stage,
                    },
                }
                cfg_path, res_path = (
                    work / f"{stage}-{label}-{rnd}.yaml",
                    work / f"{stage}-{label}-{rnd}.json",
                )
                cfg_path.write_text(yaml.safe_dump(cfg))
                cmd = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={args.nproc}",
                    str(Path(__file__).resolve()),
                    "--worker",
                    str(cfg_path),
                    str(res_path),
                ]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(REPO))
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-6000:])
                    return 1
                res = json.loads(res_path.read_text())
                res["step_times"] = res["step_times"][2:]  # warm-up excluded per launch
                res["launch_peaks"] = [res["peak_mb"]]
                if (stage, label) in results:
                    prev = results[stage, label]
                    prev["step_times"] += res["step_times"]
                    prev["peak_mb"] = [max(a, b) for a, b in zip(prev["peak_mb"], res["peak_mb"])]
                    prev["launch_peaks"] += res["launch_peaks"]
                else:
                    results[stage, label] = res
                print(f"done: round {rnd + 1} {stage} {label}", file=sys.stderr)

    device = results[stages[0], "BLUR"]["device"]
    mem = "peak RSS" if device == "cpu" else "peak allocated"
    lines = [
        f"model: tiny Llama, {n_params / 1e6:.2f}M parameters (hidden {args.hidden}, {args.layers} layers), "
        f"{args.dtype}; {args.nproc} ranks on {device}; micro-batch {args.micro_batch} x accum "
        f"{args.grad_accum} per rank (forget + retain); AdamW; median of steps 3..{args.steps} "
        f"over {args.rounds} round(s); "
        f"one fp32 gradient shard = {shard_mb:.1f} MiB",
        "",
        f"| ZeRO | BLUR step (s) | GradDiff step (s) | BLUR / GradDiff | BLUR {mem}/rank (MiB) | "
        f"GradDiff {mem}/rank (MiB) | BLUR extra (MiB) | extra in fp32 grad shards |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage in stages:
        b, g = results[stage, "BLUR"], results[stage, "GradDiff"]
        tb, tg = statistics.median(b["step_times"]), statistics.median(g["step_times"])
        mb, mg = max(b["peak_mb"]), max(g["peak_mb"])
        lines.append(
            f"| {stage[-1]} | {tb:.4f} | {tg:.4f} | {tb / tg:.3f} | {mb:.0f} | {mg:.0f} | {mb - mg:+.0f} | "
            f"{(mb - mg) / shard_mb:+.2f} |"
        )
    lines += ["", "Peak RSS per launch (rank 0 / rank 1, MiB), in launch order:", ""]
    for stage in stages:
        for label in METHODS:
            lines.append(
                f"- {stage} {label}: "
                + "; ".join(
                    "/".join(f"{x:.0f}" for x in p) for p in results[stage, label]["launch_peaks"]
                )
            )
    print("\n" + "\n".join(lines))
    if args.out:
        import platform

        import torch

        head = [
            "# BLUR vs GradDiff under DeepSpeed ZeRO-2/3",
            "",
            f"`python benchmarks/zero_step.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on "
            f"{platform.machine()} CPU ({os.cpu_count()} cores, gloo), torch {torch.__version__}; no GPU. "
            f"Each (stage, method) is a separate torchrun launch; {args.rounds} round(s), the "
            "method order alternating "
            f"between rounds; peak RSS = the larger of the rounds. "
            f"Load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end (shared machine).",
            "",
        ]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(head + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
