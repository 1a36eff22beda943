"""A real two-node SLURM (munged + slurmctld + one slurmd per node) on this one machine,
for the tests, run as root.

Debian's slurm-wlm (22.05) without systemd or cgroups (docs/architecture.md section 7):
ProctrackType linuxproc, TaskPlugin none, no slurmdbd (so snakemake must use `squeue` for
job status), two fake GPUs per node declared as gres backed by char devices. The two nodes
are two slurmd daemons (`slurmd -N n1`, `slurmd -N n2`) with their own loopback address
(127.0.0.2, 127.0.0.3), port, spool dir, PID file and log: SLURM schedules them as two
nodes (`srun -N2` runs one task on each, SLURMD_NODENAME n1 / n2) although they share the
kernel, its hostname and the filesystem (which is what a cluster's shared filesystem
gives). All traffic stays in 127.0.0.0/8. The daemons run in the foreground as our
children and are stopped by PID. Everything it writes lives in one state dir, except
/etc/slurm/slurm.conf and gres.conf: the slurm-jobstep executor strips SLURM_CONF, so the
config must be at the default path. An existing config that we did not write is never
overwritten (the caller skips instead).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MARKER = "# written by blur-pipeline tests/slurm (safe to delete)"
ETC = Path("/etc/slurm")
DAEMONS = ("munged", "slurmctld", "slurmd")
N_GPUS = 2  # per node
# node name -> (address, slurmd port); the addresses are loopback ones (no network set-up)
NODES = {"n1": ("127.0.0.2", 6821), "n2": ("127.0.0.3", 6822)}


def why_unavailable() -> str | None:
    """None if a test cluster can be started here, else the reason to skip."""
    missing = [d for d in DAEMONS if not shutil.which(d) and not Path(f"/usr/sbin/{d}").exists()]
    if missing:
        return (
            f"SLURM not installed ({', '.join(missing)} not found): "
            "apt-get install slurm-wlm munge (as .ci/run does) to run the SLURM tests"
        )
    if os.geteuid() != 0:
        return "the local SLURM test cluster needs root (it writes /etc/slurm and starts daemons)"
    conf = ETC / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text(errors="replace"):
        return (
            f"{conf} exists and was not written by these tests: "
            "refusing to replace a real cluster's config"
        )
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _run(cmd: list[str], timeout: float = 20, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


class LocalSlurm:
    def __init__(self, state: Path):
        self.state = Path(state)
        self.host = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.daemons = ("munged", "slurmctld", *(f"slurmd-{n}" for n in NODES))
        self.logs = {d: self.state / f"{d}.log" for d in self.daemons}

    # ------------------------------------------------------------------ config
    def _write_config(self) -> None:
        s = self.state
        for d in ("ctld", "munge", "dev", *(f"spool-{n}" for n in NODES)):
            (s / d).mkdir(parents=True, exist_ok=True)
        # fake GPUs: char devices (same major/minor as /dev/null), one per gres
        for i in range(N_GPUS):
            dev = s / "dev" / f"fakegpu{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
        cpus = os.cpu_count() or 2
        # each node gets the machine's CPUs (SLURM checks them against what slurmd sees) and
        # an equal share of 80% of its memory
        mem_mb = int(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8 / len(NODES)
        )
        node_lines = "\n".join(
            f"NodeName={n} NodeHostname={self.host} NodeAddr={addr} Port={port} "
            f"CPUs={cpus} RealMemory={mem_mb} Gres=gpu:{N_GPUS} State=UNKNOWN"
            for n, (addr, port) in NODES.items()
        )
        names = ",".join(NODES)
        ETC.mkdir(parents=True, exist_ok=True)
        (ETC / "slurm.conf").write_text(f"""{MARKER}
ClusterName=blurtest
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again after cred_expire + 1 s (default 120 s: minutes of idle tests)
AuthInfo=cred_expire=10
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={s}/ctld
SlurmdSpoolDir={s}/spool-%n
SlurmdLogFile={s}/slurmd-%n.daemonlog
SlurmctldPidFile={s}/slurmctld.pid
SlurmdPidFile={s}/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
DefMemPerCPU=2048
JobRequeue=1
{node_lines}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP
""")
        (ETC / "gres.conf").write_text(
            f"{MARKER}\nNodeName={names} Name=gpu File={s}/dev/fakegpu[0-{N_GPUS - 1}]\n"
        )

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.logs[name], "ab")  # noqa: SIM115 (the daemon writes to it after we return)
        self.procs[name] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, n: int = 3000) -> str:
        f = self.logs[name]
        return f.read_text(errors="replace")[-n:] if f.exists() else "(no log)"

    def start(self, timeout: float = 60) -> LocalSlurm:
        self._write_config()
        run_munge = Path("/run/munge")
        run_munge.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_munge, "munge", "munge")
        # munged as the munge user, in the foreground (-F) so that we own its PID
        self._spawn("munged", ["runuser", "-u", "munge", "--", _exe("munged"), "-F", "--force"])
        deadline = time.monotonic() + timeout
        while not (run_munge / "munge.socket.2").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"munged did not come up:\n{self.tail('munged')}")
            time.sleep(0.2)
        self._spawn("slurmctld", [_exe("slurmctld"), "-D", "-i"])
        for n in NODES:
            self._spawn(f"slurmd-{n}", [_exe("slurmd"), "-D", "-N", n])
        while True:
            self._check_alive()
            p = _run(["sinfo", "-h", "-N", "-o", "%N %T"], timeout=10)
            states = dict(ln.split() for ln in p.stdout.splitlines() if ln.strip())
            if (
                p.returncode == 0
                and sorted(states) == sorted(NODES)
                and all(st in ("idle", "mixed", "allocated") for st in states.values())
            ):
                return self
            if time.monotonic() > deadline:
                slurmds = "\n".join(f"{d}:\n{self.tail(d)}" for d in self.daemons[2:])
                raise TimeoutError(
                    f"nodes not idle after {timeout}s (sinfo: {p.stdout.strip()} "
                    f"{p.stderr.strip()})\nslurmctld:\n{self.tail('slurmctld')}\n{slurmds}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel our jobs, then SIGTERM each daemon (SIGKILL after 10 s), by PID."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                _run(["scancel", "--full", "--partition", "debug"], timeout=10)
        for name in (*reversed(self.daemons[2:]), "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for name in ("slurm.conf", "gres.conf"):
            f = ETC / name
            if f.exists() and MARKER in f.read_text(errors="replace"):
                f.unlink()
