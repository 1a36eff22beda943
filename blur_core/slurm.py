"""Multi-node training jobs under SLURM: ``python -m blur_core.slurm launch|node``.

A training job with ``nodes: N`` and ``gpus: K`` runs (see
:func:`blur_core.pipeline.launch.launch_prefix`)::

    python -m blur_core.slurm launch --nodes N --nproc-per-node K -m blur_core unlearn ...

``launch`` runs once, in the rule's shell, which snakemake's slurm-jobstep executor has
already put into a one-task, one-node job step (``srun -n1``) with most ``SLURM_*``
variables removed: what is left describes that step (``SLURM_NNODES=1``,
``SLURM_JOB_NODELIST`` = one node), so a plain nested ``srun --nodes N`` is refused
("Only allocated 1 nodes asked for N"). ``launch`` therefore clears every ``SLURM_*`` /
``SRUN_*`` / ``SBATCH_*`` variable but the job id and config path and replaces itself
with::

    srun --jobid $SLURM_JOB_ID --overlap --nodes N --ntasks N --ntasks-per-node 1 \
         --cpus-per-task C --kill-on-bad-exit=1 \
         python -m blur_core.slurm node --nproc-per-node K -m blur_core unlearn ...

(srun then reads the allocation from the controller; ``--overlap`` shares the resources
the executor's step holds; C is the step's CPUs per task, so the ranks keep the CPUs the
job asked for; each node's task gets the job's GPUs on that node). ``node`` runs once per
node, reads the step's variables (``SLURM_STEP_NUM_NODES``, ``SLURM_NODEID``,
``SLURM_STEP_NODELIST``) and replaces itself with::

    python -m torch.distributed.run --nnodes N --node-rank $SLURM_NODEID \
        --master-addr <address of the step's first node> --master-port <port> \
        --local-addr <address of this node> --nproc-per-node K -m blur_core unlearn ...

- A node's name need not resolve (SLURM's ``NodeAddr`` can differ from ``NodeName``):
  addresses come from ``scontrol show node`` (``NodeAddr``).
- A static rendezvous (node rank = ``SLURM_NODEID``) has no rendezvous server to lose;
  c10d rendezvous on a loopback test cluster failed 1 time in 5.
- Two multi-node jobs whose first node is the same must not share a port: the port is
  derived from the job id (``BLUR_MASTER_PORT`` overrides it).

Every node prints one line (its SLURM node name, address, node rank and the master
address) before it starts its ranks, so a job log shows which nodes took part.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "NodePlan",
    "launch_argv",
    "launch_env",
    "master_port",
    "node_address",
    "plan",
    "torchrun_argv",
]

PORT_BASE, PORT_SPAN = 20000, 20000  # master ports 20000-39999

Scontrol = Callable[[Sequence[str]], str]


class NodePlan:
    """What one node of the allocation runs: torchrun's rendezvous settings."""

    def __init__(
        self, nnodes: int, node_rank: int, node: str, local_addr: str, master: str, port: int
    ):
        self.nnodes, self.node_rank, self.node = nnodes, node_rank, node
        self.local_addr, self.master_addr, self.master_port = local_addr, master, port

    def describe(self) -> str:
        return (
            f"blur_core.slurm: node {self.node} ({self.local_addr}) is node rank "
            f"{self.node_rank} of {self.nnodes}; master {self.master_addr}:{self.master_port}"
        )


def _scontrol(args: Sequence[str]) -> str:
    return subprocess.run(
        ["scontrol", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def master_port(env: Mapping[str, str]) -> int:
    """``BLUR_MASTER_PORT``, else a port derived from ``SLURM_JOB_ID`` (distinct for
    concurrent jobs), else torchrun's default 29500."""
    if env.get("BLUR_MASTER_PORT"):
        port = int(env["BLUR_MASTER_PORT"])
        if not 1 <= port <= 65535:
            raise ValueError(f"BLUR_MASTER_PORT={port} is not a TCP port")
        return port
    job = env.get("SLURM_JOB_ID", "")
    return PORT_BASE + int(job) % PORT_SPAN if job.isdigit() else 29500


def node_address(name: str, scontrol: Scontrol = _scontrol) -> str:
    """The address SLURM reaches node ``name`` at (its ``NodeAddr``), else the name."""
    try:
        out = scontrol(["show", "node", "-o", name])
    except (OSError, subprocess.SubprocessError):
        return name
    m = re.search(r"\bNodeAddr=(\S+)", out)
    return m.group(1) if m and m.group(1) not in ("(null)", "") else name


def _need(env: Mapping[str, str], key: str) -> str:
    value = env.get(key)
    if not value:
        raise SystemExit(
            f"error: blur_core.slurm: ${key} is not set: run it inside a SLURM job "
            "(`launch` in the job's shell, `node` under srun with one task per node)"
        )
    return value


KEEP = ("SLURM_JOB_ID", "SLURM_CONF")  # what `launch` keeps of SLURM's variables


def launch_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the job step's SLURM / srun / sbatch settings (see the module
    docstring); the job id and config path stay."""
    _need(env, "SLURM_JOB_ID")
    return {
        k: v
        for k, v in env.items()
        if k in KEEP or not k.startswith(("SLURM_", "SRUN_", "SBATCH_"))
    }


def launch_argv(env: Mapping[str, str], nodes: int, nproc_per_node: int, rest: Sequence[str]):
    """The srun command that starts ``node`` once on each of ``nodes`` nodes of the job."""
    cpus = env.get("SLURM_CPUS_PER_TASK", "")
    return [
        "srun",
        "--jobid",
        _need(env, "SLURM_JOB_ID"),
        "--overlap",
        "--nodes",
        str(nodes),
        "--ntasks",
        str(nodes),
        "--ntasks-per-node",
        "1",
        *(["--cpus-per-task", cpus] if cpus.isdigit() else []),
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        "blur_core.slurm",
        "node",
        "--nproc-per-node",
        str(nproc_per_node),
        *rest,
    ]


def plan(env: Mapping[str, str], scontrol: Scontrol = _scontrol) -> NodePlan:
    """This node's torchrun settings from the step's SLURM variables (module docstring)."""
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or _need(env, "SLURM_NNODES"))
    node_rank = int(_need(env, "SLURM_NODEID"))
    nodelist_var = "SLURM_STEP_NODELIST" if env.get("SLURM_STEP_NODELIST") else "SLURM_NODELIST"
    nodes = scontrol(["show", "hostnames", _need(env, nodelist_var)]).split()
    if len(nodes) != nnodes:
        raise SystemExit(
            f"error: blur_core.slurm: {nodelist_var}={env[nodelist_var]} names "
            f"{len(nodes)} nodes but the step has {nnodes}"
        )
    if not 0 <= node_rank < nnodes:
        raise SystemExit(f"error: blur_core.slurm: SLURM_NODEID={node_rank} not in [0, {nnodes})")
    node = env.get("SLURMD_NODENAME") or nodes[node_rank]
    return NodePlan(
        nnodes=nnodes,
        node_rank=node_rank,
        node=node,
        local_addr=node_address(node, scontrol),
        master=node_address(nodes[0], scontrol),
        port=master_port(env),
    )


def torchrun_argv(p: NodePlan, nproc_per_node: int, rest: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(p.nnodes),
        "--node-rank",
        str(p.node_rank),
        "--master-addr",
        p.master_addr,
        "--master-port",
        str(p.master_port),
        "--local-addr",
        p.local_addr,
        "--nproc-per-node",
        str(nproc_per_node),
        *rest,
    ]


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        prog="python -m blur_core.slurm",
        description="start a multi-node training job inside its SLURM allocation",
        usage=(
            "python -m blur_core.slurm launch --nodes N --nproc-per-node K -m MODULE [ARGS ...]\n"
            "       python -m blur_core.slurm node --nproc-per-node K [--dry-run] -m MODULE ..."
        ),
    )
    ap.add_argument("mode", choices=("launch", "node"), help="launch: once per job; node: per node")
    ap.add_argument("--nodes", type=int, help="launch: nodes of the job to start ranks on")
    ap.add_argument("--nproc-per-node", type=int, required=True, help="ranks on each node")
    ap.add_argument(
        "--dry-run", action="store_true", help="print the command instead of running it"
    )
    # our options end where the program torchrun runs begins (-m MODULE ...)
    cut = argv.index("-m") if "-m" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    command = list(argv[cut:])
    if args.nproc_per_node < 1:
        ap.error(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    if args.mode == "launch" and (args.nodes is None or args.nodes < 1):
        ap.error(f"launch needs --nodes >= 1, got {args.nodes}")
    if not command:
        ap.error("give the program torchrun runs, e.g. -m blur_core unlearn --config-json ...")
    return args, command


def main(argv: Sequence[str] | None = None) -> int:
    args, command = _parse(list(sys.argv[1:] if argv is None else argv))
    if args.mode == "launch":
        env = launch_env(os.environ)
        cmd = launch_argv(os.environ, args.nodes, args.nproc_per_node, command)
        print(f"blur_core.slurm: job {env['SLURM_JOB_ID']}: {' '.join(cmd[: -len(command)])} ...")
    else:
        env = dict(os.environ)
        p = plan(env)
        cmd = torchrun_argv(p, args.nproc_per_node, command)
        print(p.describe(), flush=True)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, env)
    return 1  # (not reached)


if __name__ == "__main__":
    sys.exit(main())
