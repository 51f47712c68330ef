"""A throwaway single-node Slurm cluster on localhost, for tests.

`local_slurm_cluster(workdir)` installs Debian's Slurm and MUNGE packages when they
are missing (root only), starts a private munged, slurmctld and slurmd whose
configuration, state, sockets, logs and pid files all live under `workdir`, waits
for the node to be idle, and on exit cancels every job and stops exactly the
processes it started.  Nothing is written to /etc or /run: the Slurm commands
find the cluster through `SLURM_CONF` and PATH wrappers, so pass `cluster.env`
to every subprocess.

The node advertises one fake GPU (`gpu:1`, backed by /dev/null) so that jobs
asking for `--gres=gpu:1` schedule on a machine without one.  There is no
accounting database: `sacct` fails, so poll jobs with `squeue`/`scontrol`;
finished jobs stay visible there for `MIN_JOB_AGE` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers import apt_install, which

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# Every binary the helper or its callers run; the four packages above provide them all.
REQUIRED_PROGRAMS = (
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "sinfo",
    "scancel",
    "munged",
    "mungekey",
    "munge",
    "unmunge",
)
# Debian's slurm-client commands.  Each gets a wrapper that pins SLURM_CONF (see _write_wrappers).
CLIENT_PROGRAMS = (
    "sacct",
    "sacctmgr",
    "salloc",
    "sattach",
    "sbatch",
    "sbcast",
    "scancel",
    "scontrol",
    "sdiag",
    "sinfo",
    "sprio",
    "squeue",
    "sreport",
    "srun",
    "sshare",
    "sstat",
    "strigger",
)
PARTITION = "debug"
# Jobs stay listed by squeue/scontrol this long after they end.  The Snakemake
# Slurm executor only trusts squeue for status when MinJobAge >= 3 x its first
# status-check delay (40 s by default), i.e. 120 s.
MIN_JOB_AGE = 300
# Job states after which a job no longer holds the node or a slurmstepd.
FINISHED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
# Unix socket paths (munged's, slurmd's per-step sockets under the spool dir) are
# limited to 108 bytes; leave room for the file names Slurm appends.
_MAX_WORKDIR_LEN = 70
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Keys in `scontrol show job` output, e.g. JobState, MCS_label, Socks/Node, S:C:T.
_FIELD_NAME = re.compile(r"[A-Za-z][\w:/]*")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; `reason` says why (for pytest.skip)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster.

    `env` is os.environ plus SLURM_CONF and, first on PATH, `workdir/bin` with
    wrappers of the Slurm commands that pin this cluster's config: hand it to
    every subprocess that talks to the cluster (Snakemake included).
    """

    workdir: Path
    conf: Path
    node: str
    partition: str
    env: dict[str, str]

    def run(
        self, args: Sequence[str], *, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (e.g. ["squeue", "-h"]) against this cluster."""
        return subprocess.run(
            list(args), cwd=cwd, env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def sbatch(self, *args: str, cwd: Path) -> str:
        """Submit a batch job and return its id."""
        # --parsable prints "<jobid>" (or "<jobid>;<cluster>" on federations).
        out = self.run(["sbatch", "--parsable", *args], cwd=cwd).stdout
        return out.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, StdOut, ...); {} once Slurm forgot the job."""
        result = self.run(["scontrol", "show", "job", "--oneliner", job_id], check=False)
        if result.returncode != 0:
            return {}
        # Fields are space-separated Key=Value pairs; a token that does not start with a
        # key (a value containing a space) belongs to the previous field.
        info: dict[str, str] = {}
        key = None
        for token in result.stdout.split():
            name, sep, value = token.partition("=")
            if sep and _FIELD_NAME.fullmatch(name):
                key = name
                info[key] = value
            elif key is not None:
                info[key] += " " + token
        return info

    def wait_for_job(self, job_id: str, timeout: float = 60) -> dict[str, str]:
        """Block until the job reaches a final state; return its `job_info`."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job_info(job_id)
            if info.get("JobState") in FINISHED_STATES:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} not finished after {timeout} s: {info or 'unknown to scontrol'}\n{self.log_tails()}"
                )
            time.sleep(0.5)

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each daemon's log, for error messages."""
        parts = []
        for log in sorted((self.workdir / "log").iterdir()):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def ensure_slurm_installed(timeout: float = 900) -> None:
    """Install the Debian packages if a required program is missing; raise SlurmUnavailable if that is impossible."""
    reason = apt_install(PACKAGES, REQUIRED_PROGRAMS, timeout)
    if reason is not None:
        raise SlurmUnavailable(f"Slurm: {reason}")


def _free_port() -> int:
    # The kernel picks an unused port; a collision before the daemon binds it is unlikely
    # and would show up as a clear bind error in the daemon's log.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_memory_mb() -> int:
    """Memory to advertise: MemTotal less 10 %, as slurmd drains a node that reports less than configured."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise SlurmUnavailable("no MemTotal in /proc/meminfo")


def _write_config(workdir: Path, node: str) -> Path:
    cpus = len(os.sched_getaffinity(0))
    conf = workdir / "slurm.conf"
    conf.write_text(f"""\
ClusterName=poisonlab-test
# slurmctld refuses to start unless the name before the parentheses is this host's short
# hostname; the address keeps all traffic on loopback whatever DNS says about the host.
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
# A private munged (see local_slurm_cluster) instead of the system one at /run/munge.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={workdir / "munge" / "munge.socket"}
StateSaveLocation={workdir / "state"}
SlurmdSpoolDir={workdir / "spool"}
SlurmctldPidFile={workdir / "run" / "slurmctld.pid"}
SlurmdPidFile={workdir / "run" / "slurmd.pid"}
# slurmctld -D logs to stderr, which local_slurm_cluster saves as log/slurmctld.log.  slurmd
# gets a log file because the slurmstepd processes it forks log there (else to syslog).
SlurmdLogFile={workdir / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: CI containers rarely delegate a writable cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
MinJobAge={MIN_JOB_AGE}
# A node that went down (e.g. slurmd restarted) comes back by itself once it registers.
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_real_memory_mb()} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    # slurmd looks for gres.conf next to slurm.conf.  /dev/null is a character device,
    # which is all the gpu plugin checks, so it stands in for a GPU; jobs that ask for
    # one get CUDA_VISIBLE_DEVICES=0 and still see no real GPU.
    (workdir / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
    return conf


def _write_wrappers(bin_dir: Path, conf: Path) -> None:
    """Put `<cmd>` scripts that run the real command with SLURM_CONF=conf into bin_dir.

    SLURM_CONF in the environment is not enough: inside a job, Snakemake's
    slurm-jobstep executor strips every SLURM_* variable (SLURM_CONF included)
    before calling `srun`, which then finds no configuration.  PATH survives.
    """
    bin_dir.mkdir(exist_ok=True)
    for name in CLIENT_PROGRAMS:
        real = which(name)
        if real is None:
            continue
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(conf))} exec {shlex.quote(real)} "$@"\n')
        wrapper.chmod(0o755)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends it SIGTERM when the thread
    # that started it dies, so daemons do not outlive a test process killed before our
    # shutdown code could run (SIGKILL, or SIGTERM, which Python does not turn into an exception).
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a daemon in the foreground as our child, so we hold its pid and reap it ourselves."""
    with log.open("ab") as out:
        # A new session keeps a Ctrl-C aimed at pytest from hitting the daemons before
        # our own shutdown has cancelled the jobs and stopped them in order.
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    cluster: SlurmCluster,
    procs: dict[str, subprocess.Popen[bytes]],
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [f"{name} exited with code {p.returncode}" for name, p in procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            problem = "; ".join(dead) or f"timed out after {timeout} s"
            node = cluster.run(["scontrol", "show", "node", cluster.node], check=False)
            raise RuntimeError(
                f"local Slurm cluster: {what}: {problem}\n{node.stdout}{node.stderr}{cluster.log_tails()}"
            )
        time.sleep(0.25)


def _munge_round_trip(socket_path: Path) -> bool:
    """Whether munged at socket_path encodes and decodes a credential, as Slurm will ask it to."""
    sock = f"--socket={socket_path}"
    cred = subprocess.run([which("munge"), "--no-input", sock], capture_output=True)
    if cred.returncode != 0:
        return False
    return subprocess.run([which("unmunge"), sock], input=cred.stdout, capture_output=True).returncode == 0


def _node_state(cluster: SlurmCluster) -> str:
    result = cluster.run(["sinfo", "--noheader", "--Node", "--nodes", cluster.node, "--format", "%T"], check=False)
    return result.stdout.strip().lower() if result.returncode == 0 else ""


def _cancel_all_jobs(cluster: SlurmCluster, timeout: float = 30) -> None:
    """Cancel every job and wait for them to end: slurmstepd outlives slurmd, so jobs must finish first."""
    cluster.run(["scancel", "--partition", cluster.partition], check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cluster.run(["squeue", "--noheader", "--states", "all", "--format", "%T"], check=False)
        if result.returncode != 0 or set(result.stdout.split()) <= FINISHED_STATES:
            return
        time.sleep(0.5)


@contextlib.contextmanager
def local_slurm_cluster(workdir: Path, start_timeout: float = 60) -> Iterator[SlurmCluster]:
    """Run a one-node cluster (partition `debug`, one fake GPU) with all its files under `workdir`.

    Raises SlurmUnavailable when Slurm is missing and cannot be installed, and
    RuntimeError (with the daemons' log tails) when the daemons do not come up.
    """
    ensure_slurm_installed()
    workdir = Path(workdir).resolve()
    if len(str(workdir)) > _MAX_WORKDIR_LEN:
        raise ValueError(
            f"workdir path too long for Slurm's and MUNGE's unix sockets (> {_MAX_WORKDIR_LEN} chars): {workdir}"
        )
    for sub in ("munge", "state", "spool", "run", "log"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    conf = _write_config(workdir, node)
    bin_dir = workdir / "bin"
    _write_wrappers(bin_dir, conf)
    env = {
        **os.environ,
        "SLURM_CONF": str(conf),
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", os.defpath)]),
    }
    cluster = SlurmCluster(workdir=workdir, conf=conf, node=node, partition=PARTITION, env=env)

    munge_dir = workdir / "munge"
    key = munge_dir / "munge.key"
    if not key.exists():
        # mungekey writes the key with mode 0600 owned by us, which is what munged demands.
        subprocess.run([which("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
    socket_path = munge_dir / "munge.socket"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["munged"] = _start(
            [
                which("munged"),
                "--foreground",
                # munged refuses a socket whose directory (or a parent) is not world-executable,
                # as pytest's and mkdtemp's 0700 dirs are; --force downgrades that to a warning.
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={workdir / 'run' / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            # In the foreground munged logs to stderr only.
            workdir / "log" / "munged.log",
            env,
        )
        _wait_until(
            lambda: _munge_round_trip(socket_path), start_timeout, "`munge -n | unmunge` failed", cluster, procs
        )
        # -D keeps the daemons in the foreground as our children; -c starts without the
        # jobs and node states a reused workdir may hold.
        procs["slurmctld"] = _start(
            [which("slurmctld"), "-D", "-c", "-f", str(conf)], workdir / "log" / "slurmctld.log", env
        )
        _wait_until(
            lambda: " is UP" in cluster.run(["scontrol", "ping"], check=False).stdout,
            start_timeout,
            "slurmctld did not answer `scontrol ping`",
            cluster,
            procs,
        )
        # slurmd's stderr repeats its log file, plus errors from before it opened that file.
        procs["slurmd"] = _start([which("slurmd"), "-D", "-f", str(conf)], workdir / "log" / "slurmd.stderr", env)

        def node_idle() -> bool:
            state = _node_state(cluster)
            if state.startswith(("down", "drain")):
                cluster.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
            return state == "idle"

        _wait_until(node_idle, start_timeout, f"node {node} did not become idle", cluster, procs)
        yield cluster
    finally:
        if "slurmctld" in procs and procs["slurmctld"].poll() is None:
            _cancel_all_jobs(cluster)
        # Reverse start order: slurmd reports to slurmctld, and both authenticate via munged.
        for name in ("slurmd", "slurmctld", "munged"):
            if name in procs:
                _stop(procs[name])
