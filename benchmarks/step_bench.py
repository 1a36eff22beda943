"""Single-process step time and memory: BLUR vs GradDiff vs the reference code's update.

    python benchmarks/step_bench.py                     # writes benchmarks/results/step_local.md
    python benchmarks/step_bench.py --hidden 64 --layers 24 --steps 12 --reps 3 --smollm2-reps 3

Three combiners on the same model, data, losses (forget: -NLL, retain: NLL), batches and
LocalBackend; they differ only in how F and R become the update d:

  BLUR       blur_core.bilevel.blur_direction on the flat fp32 buffers, in place; the three
             sums stay on the device (the loop's one host sync per step reads them).
  GradDiff   blur_core.bilevel.weighted_sum, same buffers, same single sync.
  reference  the reference code's update (docs/architecture.md section 6), reimplemented here as a
             baseline (it is not library code): clone the forget and the retain gradient of
             every parameter (two full-size copies), per parameter ``torch.sum(f*r).item()``
             and ``torch.sum(f*f).item()`` (two host syncs per parameter tensor), then a new
             full-size gradient ``r + xi*f`` (third copy), written back as the update.

Part 1 (whole optimizer step): the three combiners run round-robin in *one* process
(``reps`` rounds, the order reversed every other round), each a full ``blur_core.train.loop.run`` of
``steps`` steps; the table gives the median step time over steps 3.. of every round and the
ratios, both as CPU time of the process (one torch thread, so other processes' load barely
moves it) and as wall time (the loop's own step timer). Peak RSS is per process, so each
combiner's memory is measured in a fresh subprocess (one run, same config).

Part 2 (combiner alone): d from synthetic gradients with the parameter shapes of (a) the
benchmark model and (b) SmolLM2-135M (273 tensors, 134.5M parameters), the three
combiners interleaved in one process (median of ``reps`` calls each, CPU and wall). Extra
memory is the peak RSS (VmHWM) after one combiner call minus before it, in a fresh subprocess holding only F
and R (fp32). This isolates what the combiner costs; part 1 shows how much of a step it is.
On a GPU the reference's per-parameter ``.item()`` stalls the stream twice per tensor;
on CPU a sync is nearly free, so CPU numbers understate the reference's cost there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
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
GAMMA = 0.1
METHODS = {
    "BLUR": {"name": "blur", "forget_loss": "ga", "retain_loss": "nll", "gamma": GAMMA},
    "GradDiff": {
        "name": "graddiff",
        "forget_weight": 1.0,
        "retain_weight": 1.0,
        "retain_loss": "nll",
    },
    # same objective as BLUR; only the combiner is swapped for reference_direction below
    "reference": {"name": "blur", "forget_loss": "ga", "retain_loss": "nll", "gamma": GAMMA},
}
COMBINERS = ("BLUR", "GradDiff", "reference")


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak over
    fork+exec into the child's ru_maxrss, which would hide a child smaller than its parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Clock:
    """Stand-in for the loop's ``time`` module: perf_counter() returns process CPU time and
    records (wall, cpu) of every call, so one run yields both per-step wall and CPU times.
    CPU time (1 thread) is what a shared machine's load inflates least."""

    def __init__(self):
        self.calls: list[tuple[float, float]] = []

    def perf_counter(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        self.calls.append((wall, cpu))
        return cpu

    def __getattr__(self, name):
        return getattr(time, name)


# ----------------------------------------------------------------------------- the baseline


def reference_direction(forget_grads, retain_grads, gamma):
    """The reference code's BLUR update (forget priority), as it does it: per-parameter lists.

    Returns (new gradient tensors, python floats dot and ||F||^2). Three extra full-size
    copies (f clones, r clones, the new gradients) and two ``.item()`` per parameter.
    """
    import torch

    f_copy = [f.detach().clone() for f in forget_grads]  # copy 1: captured forget gradients
    r_copy = [r.detach().clone() for r in retain_grads]  # copy 2: captured retain gradients
    dot, sq_f = 0.0, 0.0
    for f, r in zip(f_copy, r_copy):
        dot += torch.sum(f * r).item()  # host sync 1 for this parameter
        sq_f += torch.sum(f * f).item()  # host sync 2 for this parameter
    xi = gamma - dot / sq_f
    new = [r + xi * f for f, r in zip(f_copy, r_copy)]  # copy 3: the new gradients
    return new, dot, sq_f


def _install_reference_combiner(backend_shapes):
    """Patch the loop's combiner with the reference update (restore with the returned fn).

    LocalBackend hands over one flat buffer; the reference works per parameter, so the
    buffer is viewed per parameter, and the new gradients are copied back into the retain
    buffer (where LocalBackend.apply expects d), as the reference assigns ``param.grad``.
    """
    import torch

    from blur_core import bilevel
    from blur_core.train import loop

    original = loop.blur_direction

    def patched(
        F,
        R,
        gamma,
        variant="forget_priority",
        eps=bilevel.DEFAULT_EPS,
        all_reduce=None,
        inplace=False,
    ):
        (flat_f,), (flat_r,) = F, R
        views_f, views_r, off = [], [], 0
        for shape in backend_shapes:
            n = int(torch.Size(shape).numel())
            views_f.append(flat_f[off : off + n].view(shape))
            views_r.append(flat_r[off : off + n].view(shape))
            off += n
        new, dot, sq_f = reference_direction(views_f, views_r, gamma)
        for v, g in zip(views_r, new):
            v.copy_(g)
        xi = gamma - dot / sq_f
        sq_r = torch.dot(flat_r, flat_r).double()  # for the loop's log only (norm of d, now in R)

        def t(x):
            return torch.tensor(x, dtype=torch.float64)

        stats = bilevel.DirectionStats(
            xi=t(xi),
            dot=t(dot),
            norm_f=t(sq_f).sqrt(),
            norm_r=t(0.0),
            cosine=t(0.0),
            fallback=t(0.0),
            norm_d=sq_r.sqrt(),
        )
        return [flat_r], stats

    loop.blur_direction = patched
    return lambda: setattr(loop, "blur_direction", original)


# ----------------------------------------------------------------------------- part 1: whole step


def _run_cfg(paths, out: Path, method: dict, args) -> dict:
    return {
        "model": str(paths["base_model"]),
        "output_dir": str(out),
        "method": method,
        "data": {"forget": str(paths["forget"]), "retain": str(paths["retain"]), "max_length": 64},
        "train": {
            "max_steps": args.steps,
            "micro_batch_size": args.micro_batch,
            "grad_accum": args.grad_accum,
            "optimizer": "adamw",
            "lr": 1e-4,
            "progress": False,
            "resume": "never",
            "max_grad_norm": 1.0,
        },
    }


def _param_shapes(model_dir: Path) -> list[tuple[int, ...]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return [tuple(p.shape) for p in model.parameters() if p.requires_grad]


def _one_run(label: str, cfg: dict, shapes) -> tuple[list[float], list[float]]:
    """One training run; per-step (wall, CPU) seconds, from the loop's own step timer."""
    from blur_core.train import loop
    from blur_core.train.config import parse_run_config

    restore = _install_reference_combiner(shapes) if label == "reference" else None
    clock, real_time = _Clock(), loop.time
    loop.time = clock
    try:
        loop.run(parse_run_config(cfg))
    finally:
        loop.time = real_time
        if restore:
            restore()
    steps = cfg["train"]["max_steps"]
    calls = clock.calls  # t_start, then (t0, t_end) per step, then the final wall time
    if len(calls) != 2 * steps + 2:
        raise RuntimeError(
            f"loop timer called {len(calls)} times, expected {2 * steps + 2}: the loop changed"
        )
    pairs = [(calls[1 + 2 * i], calls[2 + 2 * i]) for i in range(steps)]
    return [e[0] - b[0] for b, e in pairs], [e[1] - b[1] for b, e in pairs]


def _mem_worker(label: str, cfg_path: str, shapes_path: str) -> None:
    cfg = json.loads(Path(cfg_path).read_text())
    shapes = [tuple(s) for s in json.loads(Path(shapes_path).read_text())]
    _one_run(label, cfg, shapes)
    print(json.dumps({"peak_mb": _peak_rss_mb()}))


def whole_step(args, work: Path, env: dict) -> tuple[str, dict]:
    from blur_core.tiny import prepare_embedded

    paths = prepare_embedded(
        work / "embedded",
        n_people=40,
        questions_per_person=5,
        forget_fraction=0.25,
        seed=0,
        hidden_size=args.hidden,
        num_layers=args.layers,
        intermediate_size=args.intermediate,
    )
    shapes = _param_shapes(paths["base_model"])
    n_params = sum(math.prod(s) for s in shapes)
    (work / "shapes.json").write_text(json.dumps(shapes))

    times: dict[str, list[float]] = {c: [] for c in COMBINERS}
    cpu: dict[str, list[float]] = {c: [] for c in COMBINERS}
    for rep in range(args.reps):
        order = (
            COMBINERS if rep % 2 == 0 else COMBINERS[::-1]
        )  # balanced: each position equally often
        for label in order:
            cfg = _run_cfg(paths, work / f"run-{label}-{rep}", METHODS[label], args)
            wall, cpu_s = _one_run(label, cfg, shapes)
            times[label] += wall[2:]
            cpu[label] += cpu_s[2:]
            print(f"  step: round {rep + 1}/{args.reps} {label} done", file=sys.stderr)

    peaks = {}
    for label in COMBINERS:
        cfg_path = work / f"mem-{label}.json"
        cfg_path.write_text(
            json.dumps(_run_cfg(paths, work / f"mem-{label}", METHODS[label], args))
        )
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mem-worker",
                label,
                str(cfg_path),
                str(work / "shapes.json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=str(REPO),
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-4000:])
        peaks[label] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]

    med = {c: statistics.median(times[c]) for c in COMBINERS}
    grad_mb = n_params * 4 / 2**20
    lines = [
        f"Model: tiny Llama, {n_params / 1e6:.2f}M parameters in {len(shapes)} tensors (hidden "
        f"{args.hidden}, "
        f"{args.layers} layers, intermediate {args.intermediate}), fp32; micro-batch "
        f"{args.micro_batch} x accum "
        f"{args.grad_accum} (forget + retain), max_length 64; AdamW; LocalBackend, 1 process, 1 thread. "
        f"Median per-step CPU time (process time, insensitive to other processes) and wall time over "
        f"steps 3..{args.steps} of {args.reps} interleaved rounds "
        f"({len(times['BLUR'])} steps each), same process. One fp32 gradient = {grad_mb:.1f} MiB.",
        "",
        "| combiner | step CPU, median (s) | / GradDiff | / BLUR | step wall, median (s) | / "
        "GradDiff | / BLUR | peak RSS (MiB) | vs GradDiff (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mn = {c: statistics.median(cpu[c]) for c in COMBINERS}
    for c in COMBINERS:
        lines.append(
            f"| {c} | {mn[c]:.4f} | {mn[c] / mn['GradDiff']:.3f} | {mn[c] / mn['BLUR']:.3f} | "
            f"{med[c]:.4f} | {med[c] / med['GradDiff']:.3f} | {med[c] / med['BLUR']:.3f} | "
            f"{peaks[c]:.0f} | {peaks[c] - peaks['GradDiff']:+.0f} |"
        )
    return "\n".join(lines), {
        "median_step_wall_s": med,
        "median_step_cpu_s": mn,
        "peak_rss_mb": peaks,
        "n_params": n_params,
        "n_tensors": len(shapes),
    }


# ----------------------------------------------------------------------------- part 2: combiner alone


def smollm2_shapes() -> list[tuple[int, ...]]:
    """SmolLM2-135M's trainable tensors (tied embeddings): 30 layers, hidden 576, kv 192, mlp 1536."""
    h, kv, m, vocab = 576, 192, 1536, 49152
    shapes = [(vocab, h)]
    for _ in range(30):
        shapes += [(h, h), (kv, h), (kv, h), (h, h), (m, h), (m, h), (h, m), (h,), (h,)]
    return [*shapes, (h,)]


def _flat_and_views(shapes, seed: int):
    import torch

    n = sum(int(torch.Size(s).numel()) for s in shapes)
    g = torch.Generator().manual_seed(seed)
    flat = torch.randn(n, generator=g, dtype=torch.float32)
    views, off = [], 0
    for s in shapes:
        k = int(torch.Size(s).numel())
        views.append(flat[off : off + k].view(s))
        off += k
    return flat, views


def _call(label: str, F, R, Fv, Rv):
    """One combiner call as the loop makes it (including its share of the step's host sync)."""
    from blur_core.bilevel import blur_direction, weighted_sum

    if label == "BLUR":
        _, stats = blur_direction([F], [R], GAMMA, inplace=True)
        stats.to_dict()  # the loop's one sync (it reads these with the losses)
    elif label == "GradDiff":
        _, stats = weighted_sum([F], [R], 1.0, 1.0, inplace=True)
        stats.to_dict()
    else:
        new, _, _ = reference_direction(Fv, Rv, GAMMA)
        for v, g in zip(Rv, new):
            v.copy_(g)


def _combiner_mem_worker(label: str, which: str) -> None:
    shapes = (
        smollm2_shapes()
        if which == "smollm2"
        else [tuple(s) for s in json.loads(Path(which).read_text())]
    )
    F, Fv = _flat_and_views(shapes, 0)
    R, Rv = _flat_and_views(shapes, 1)
    before = _peak_rss_mb()
    _call(label, F, R, Fv, Rv)
    print(json.dumps({"extra_mb": _peak_rss_mb() - before}))


def combiner_alone(name: str, shapes, reps: int, env: dict, shapes_arg: str) -> tuple[str, dict]:
    import torch

    F, Fv = _flat_and_views(shapes, 0)
    R, Rv = _flat_and_views(shapes, 1)
    n = F.numel()
    for label in COMBINERS:  # warm-up
        _call(label, F, R, Fv, Rv)
    times: dict[str, list[float]] = {c: [] for c in COMBINERS}
    cpu: dict[str, list[float]] = {c: [] for c in COMBINERS}
    for rep in range(reps):
        order = COMBINERS if rep % 2 == 0 else COMBINERS[::-1]
        for label in order:
            t0, c0 = time.perf_counter(), time.process_time()
            _call(label, F, R, Fv, Rv)
            times[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
    del F, R, Fv, Rv
    extra = {}
    for label in COMBINERS:
        proc = subprocess.run(
            [sys.executable, __file__, "--combiner-mem-worker", label, shapes_arg],
            env=env,
            capture_output=True,
            text=True,
            cwd=str(REPO),
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-4000:])
        extra[label] = json.loads(proc.stdout.strip().splitlines()[-1])["extra_mb"]
    med = {c: statistics.median(times[c]) for c in COMBINERS}
    mn = {c: statistics.median(cpu[c]) for c in COMBINERS}
    grad_mb = n * 4 / 2**20
    rows = []
    for c in COMBINERS:
        rows.append(
            f"| {name} | {c} | {mn[c] * 1e3:.2f} | {mn[c] / mn['BLUR']:.2f} | {med[c] * 1e3:.2f} | "
            f"{med[c] / med['BLUR']:.2f} | {extra[c]:.0f} | {extra[c] / grad_mb:.2f} |"
        )
    return "\n".join(rows), {
        "n_params": n,
        "n_tensors": len(shapes),
        "median_wall_s": med,
        "median_cpu_s": mn,
        "extra_mb": extra,
        "grad_mb": grad_mb,
        "torch_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument(
        "--layers", type=int, default=24, help="many layers = many small parameter tensors"
    )
    ap.add_argument("--intermediate", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument(
        "--reps", type=int, default=6, help="interleaved rounds (part 1; even = balanced order)"
    )
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument(
        "--combiner-reps", type=int, default=30, help="calls per combiner, tiny shapes (part 2)"
    )
    ap.add_argument(
        "--smollm2-reps", type=int, default=3, help="calls per combiner, SmolLM2 shapes; 0: skip"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenMP threads (1: least sensitive to a shared machine)",
    )
    ap.add_argument("--out", default=str(RESULTS / "step_local.md"))
    ap.add_argument("--workdir")
    ap.add_argument("--mem-worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--combiner-mem-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_worker:
        _mem_worker(*args.mem_worker)
        return 0
    if args.combiner_mem_worker:
        _combiner_mem_worker(*args.combiner_mem_worker)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="step_bench_"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(args.threads),
    }
    load0 = os.getloadavg()
    t0 = time.time()
    step_table, step_data = whole_step(args, work, env)

    shapes = [tuple(s) for s in json.loads((work / "shapes.json").read_text())]
    c_rows, c_data = [], {}
    row, c_data["tiny"] = combiner_alone(
        "benchmark model", shapes, args.combiner_reps, env, str(work / "shapes.json")
    )
    c_rows.append(row)
    if args.smollm2_reps:
        row, c_data["smollm2"] = combiner_alone(
            "SmolLM2-135M shapes", smollm2_shapes(), args.smollm2_reps, env, "smollm2"
        )
        c_rows.append(row)
    load1 = os.getloadavg()

    tiny = c_data["tiny"]
    desc = (
        f"benchmark model = {tiny['n_params'] / 1e6:.2f}M parameters in {tiny['n_tensors']} tensors, "
        f"{args.combiner_reps} calls each"
    )
    if "smollm2" in c_data:
        s = c_data["smollm2"]
        desc += (
            f"; SmolLM2-135M shapes = {s['n_params'] / 1e6:.1f}M in {s['n_tensors']} tensors, "
            f"{args.smollm2_reps} calls each"
        )
    text = "\n".join(
        [
            "# Step time and memory, single process (LocalBackend)",
            "",
            f"`python benchmarks/step_bench.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on "
            f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); "
            f"no GPU. Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end (shared machine: "
            "compare ratios, "
            f"not absolute times); {time.time() - t0:.0f} s in all.",
            "",
            "## Whole optimizer step",
            "",
            step_table,
            "",
            "## The combiner alone (F, R -> d)",
            "",
            f"Synthetic fp32 gradients; {desc}; interleaved, median. Extra memory: peak RSS growth "
            "during one call "
            "in a fresh process holding only F and R.",
            "",
            "| gradients | combiner | CPU, median (ms) | / BLUR | wall, median (ms) | / BLUR | "
            "extra memory (MiB) | in fp32 gradients |",
            "|---|---|---|---|---|---|---|---|",
            *c_rows,
            "",
        ]
    )
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "whole_step": step_data,
                "combiner": c_data,
                "load": [load0, load1],
                "argv": sys.argv[1:],
            },
            indent=2,
        )
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
