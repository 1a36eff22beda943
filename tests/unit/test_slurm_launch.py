"""blur_core.slurm: one torchrun per node from SLURM's variables (scontrol faked)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blur_core.slurm import (
    launch_argv,
    launch_env,
    main,
    master_port,
    node_address,
    plan,
    torchrun_argv,
)

NODES = {"gpu-a17": "10.1.0.17", "gpu-a18": "10.1.0.18"}


def fake_scontrol(args):
    if args[:2] == ["show", "hostnames"]:
        assert args[2] == "gpu-a[17-18]"
        return "gpu-a17\ngpu-a18\n"
    if args[:3] == ["show", "node", "-o"]:
        name = args[3]
        return f"NodeName={name} Arch=x86_64 NodeAddr={NODES[name]} NodeHostName={name} Port=0\n"
    raise AssertionError(args)


# what a node's task of `srun --nodes 2 --ntasks-per-node 1` sees
ENV = {
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_NNODES": "2",
    "SLURM_NODEID": "1",
    "SLURMD_NODENAME": "gpu-a18",
    "SLURM_STEP_NODELIST": "gpu-a[17-18]",
    "SLURM_JOB_ID": "123456",
}
# what the rule's shell sees inside snakemake's `srun -n1` job step (measured on the test
# cluster; the executor removed the rest)
RULE_ENV = {
    "PATH": "/usr/bin",
    "HF_HUB_OFFLINE": "1",
    "SLURM_JOB_ID": "123456",
    "SLURM_CONF": "/etc/slurm/slurm.conf",
    "SLURM_JOB_NODELIST": "gpu-a17",
    "SLURM_NODELIST": "gpu-a[17-18]",
    "SLURM_NNODES": "1",
    "SLURM_NTASKS": "1",
    "SLURM_STEP_NUM_NODES": "1",
    "SLURM_CPUS_PER_TASK": "16",
    "SRUN_CPUS_PER_TASK": "16",
    "SBATCH_EXPORT": "ALL",
}


def test_launch_clears_the_step_and_starts_one_task_per_node():
    env = launch_env(RULE_ENV)
    assert env == {
        "PATH": "/usr/bin",
        "HF_HUB_OFFLINE": "1",
        "SLURM_JOB_ID": "123456",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
    }
    argv = launch_argv(RULE_ENV, 2, 8, ["-m", "blur_core", "unlearn"])
    assert argv[:12] == [
        "srun",
        "--jobid",
        "123456",
        "--overlap",
        "--nodes",
        "2",
        "--ntasks",
        "2",
        "--ntasks-per-node",
        "1",
        "--cpus-per-task",
        "16",
    ]
    assert argv[12:] == [
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        "blur_core.slurm",
        "node",
        "--nproc-per-node",
        "8",
        "-m",
        "blur_core",
        "unlearn",
    ]
    with pytest.raises(SystemExit, match=r"\$SLURM_JOB_ID is not set"):
        launch_env({"PATH": "/usr/bin"})


def test_plan_reads_the_step_of_one_task_per_node():
    p = plan(ENV, fake_scontrol)
    assert (p.nnodes, p.node_rank, p.node) == (2, 1, "gpu-a18")
    assert p.master_addr == "10.1.0.17" and p.local_addr == "10.1.0.18"  # NodeAddr, not names
    assert p.master_port == 20000 + 123456 % 20000
    assert "node gpu-a18 (10.1.0.18) is node rank 1 of 2; master 10.1.0.17:" in p.describe()
    argv = torchrun_argv(p, 4, ["-m", "blur_core", "unlearn", "--config-json", "{}"])
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    flags = dict(zip(argv[3:17:2], argv[4:17:2]))
    assert flags == {
        "--nnodes": "2",
        "--node-rank": "1",
        "--master-addr": "10.1.0.17",
        "--master-port": str(p.master_port),
        "--local-addr": "10.1.0.18",
        "--nproc-per-node": "4",
        "-m": "blur_core",
    }
    assert argv[-3:] == ["unlearn", "--config-json", "{}"]


def test_master_port_distinct_per_job_and_overridable():
    assert master_port({"SLURM_JOB_ID": "7"}) != master_port({"SLURM_JOB_ID": "8"})
    assert 20000 <= master_port({"SLURM_JOB_ID": "99999999"}) < 40000
    assert master_port({"SLURM_JOB_ID": "7", "BLUR_MASTER_PORT": "29511"}) == 29511
    assert master_port({}) == 29500
    with pytest.raises(ValueError, match="BLUR_MASTER_PORT=70000"):
        master_port({"BLUR_MASTER_PORT": "70000"})


def test_node_address_falls_back_to_the_name():
    def failing(args):
        raise subprocess.CalledProcessError(1, ["scontrol", *args])

    assert node_address("n1", failing) == "n1"
    assert node_address("n1", lambda a: "NodeName=n1 NodeAddr=(null)\n") == "n1"
    assert node_address("n1", lambda a: "NodeName=n1 NodeAddr=127.0.0.2 Port=6821\n") == "127.0.0.2"


def test_clear_errors_outside_an_allocation_or_on_bad_variables():
    env = {k: v for k, v in ENV.items() if k != "SLURM_NODEID"}
    with pytest.raises(SystemExit, match=r"\$SLURM_NODEID is not set: run it inside a SLURM job"):
        plan(env, fake_scontrol)
    with pytest.raises(SystemExit, match=r"gpu-a\[17-18\] names 2 nodes but the step has 3"):
        plan({**ENV, "SLURM_STEP_NUM_NODES": "3"}, fake_scontrol)
    with pytest.raises(SystemExit, match=r"SLURM_NODEID=2 not in \[0, 2\)"):
        plan({**ENV, "SLURM_NODEID": "2"}, fake_scontrol)


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["node", "--nproc-per-node", "0", "-m", "blur_core", "unlearn"])
    assert "--nproc-per-node must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["node", "--nproc-per-node", "2"])
    assert "give the program torchrun runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["launch", "--nproc-per-node", "2", "-m", "blur_core", "unlearn"])
    assert "launch needs --nodes >= 1, got None" in capsys.readouterr().err


def test_dry_run_prints_the_commands(monkeypatch, capsys):
    monkeypatch.setattr("os.environ", dict(RULE_ENV))
    assert main(["launch", "--nodes", "2", "--nproc-per-node", "1", "--dry-run", "-m", "x"]) == 0
    out = capsys.readouterr().out
    assert "blur_core.slurm: job 123456: srun --jobid 123456 --overlap --nodes 2" in out
    assert out.strip().endswith("blur_core.slurm node --nproc-per-node 1 -m x")
