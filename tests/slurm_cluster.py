"""A throw-away one-node SLURM cluster for tests: munged + slurmctld + slurmd in one folder.

Everything lives under ``root``: its own ``slurm.conf`` (clients find it through ``SLURM_CONF``
in :attr:`SlurmCluster.env`), munge key and socket (so a system munged is never touched), state,
spool and log folders, and free TCP ports. The node is this machine (``hostname -s``, its CPUs and
memory); ``SlurmUser=root``, ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``SelectType=select/cons_tres``. The node offers :data:`NODE_CPUS` CPUs (at least the machine's;
``SlurmdParameters=config_overrides``) so that a test's tiny jobs run side by side and their waits
for a time-limit signal overlap, even on a 2-core machine. Timing settings that matter to the tests:

* ``cred_expire=5`` (``AuthInfo``): a requeued job waits this long before it may start again
  (SLURM's default is 120 s);
* ``KillWait=5``: seconds between SIGTERM and SIGKILL for a cancelled or timed-out job;
  ``OverTimeLimit=0``: no grace minutes after the time limit;
* slurmctld checks time limits every 30 s (compiled in) and sends ``--signal=SIG@W`` at the first
  check at least ``limit - W - 30`` s after the start, so e.g. ``--time=1 --signal=USR1@5`` arrives
  25-55 s into the job.

:meth:`SlurmCluster.stop` cancels every job, stops the daemons it started (by PID) and then ends
whatever process still carries this cluster's ``SLURM_CONF`` (job steps, ``slurmstepd``); it raises
if anything survives. Needs root and the Debian packages in :data:`PACKAGES`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")  # Debian/Ubuntu package names
NODE_CPUS = 8  # CPUs the test node offers (oversubscribed: every test job is seconds of 1-CPU work)
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


class ClusterError(RuntimeError):
    """The cluster could not be started, a command failed, or a daemon outlived :meth:`stop`."""


def missing_requirements() -> list[str]:
    """What this machine lacks to run the cluster (empty when nothing is missing)."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if os.geteuid() != 0:
        missing.append("root (SlurmUser=root)")
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # a daemon gets SIGTERM if the test process dies without teardown
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parse_record(line: str) -> dict:
    """One ``scontrol show -o`` record (``Key=value`` tokens) as a dict."""
    out, key = {}, None
    for tok in line.split():
        k, sep, v = tok.partition("=")
        if sep and k and k[0].isalpha():
            out[key := k] = v
        elif key:  # a value with spaces (e.g. Command=..., Reason=...)
            out[key] += " " + tok
    return out


class SlurmCluster:
    """A one-node cluster under ``root``; :meth:`start` it, :meth:`stop` it (or use ``with``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.cpus = max(NODE_CPUS, len(os.sched_getaffinity(0)))
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for k in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
            del self.env[k]  # tests started inside a SLURM job must not leak that job's settings

    # --- lifecycle ---------------------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for d in ("munge", "state", "log", f"spool/{self.node}"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o755)  # munged refuses group/world-writable socket folders
        key = r / "munge" / "munge.key"
        if not key.exists():
            subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o400)
        mem = next(int(x.split()[1]) // 1024 for x in open("/proc/meminfo") if x.startswith("MemTotal:"))
        (r / "plugstack.conf").write_text("")
        self.conf.write_text("\n".join([
            "ClusterName=mfiftest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={r}/munge/munge.socket,cred_expire=5",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            f"PlugStackConfig={r}/plugstack.conf",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=2",
            "MpiDefault=none", "SwitchType=switch/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "MailProg=/bin/true", "ReturnToService=2", "JobRequeue=1",
            "KillWait=5", "OverTimeLimit=0", "MinJobAge=3600", "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            ""]))

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        """Write the config, start munged, slurmctld and slurmd, wait until the node is idle."""
        missing = missing_requirements()
        if missing:
            raise ClusterError(f"cannot start the SLURM test cluster, missing: {', '.join(missing)} "
                               f"(as root: apt-get install -y {' '.join(PACKAGES)}; make test does this)")
        self.write_config()
        m = self.root / "munge"
        self._daemon("munged", [_exe("munged"), "--foreground", "--force", f"--socket={m}/munge.socket",
                                f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
                                f"--seed-file={m}/munged.seed", f"--log-file={self.root}/log/munged.log"])
        deadline = time.monotonic() + timeout
        while not (m / "munge.socket").exists():
            self._check_running(deadline)
        self._daemon("slurmctld", [_exe("slurmctld"), "-D", "-c"])
        self._daemon("slurmd", [_exe("slurmd"), "-D"])
        while self.node_state() != "idle":
            self._check_running(deadline)
        return self

    def _check_running(self, deadline: float) -> None:
        dead = [n for n, p in self.procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"node not idle (state '{self.node_state()}')"
            raise ClusterError(f"SLURM test cluster did not start: {why}\n{self.logs()}")
        time.sleep(0.2)

    def node_state(self) -> str:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    def logs(self, lines: int = 15) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            tail = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {f}\n" + "\n".join(tail))
        return "\n".join(out)

    def processes(self) -> list[int]:
        """PIDs of every live process of this cluster: its daemons and whatever carries its
        ``SLURM_CONF`` (slurmstepd, job steps, their children); never the calling process."""
        pids = {p.pid for p in self.procs.values() if alive(p.pid)}
        tag = f"SLURM_CONF={self.conf}".encode()
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if tag in (d / "environ").read_bytes().split(b"\0") and alive(int(d.name)):
                        pids.add(int(d.name))
                except OSError:
                    pass
        return sorted(pids)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel all jobs, stop the daemons (SIGTERM, then SIGKILL), end stray job processes.

        Raises:
            ClusterError: a process of this cluster is still alive afterwards.
        """
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True)
            end = time.monotonic() + min(timeout, 15.0)
            while self.squeue() and time.monotonic() < end:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        for sig in (signal.SIGTERM, signal.SIGKILL):  # job steps orphaned by a daemon that died first
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 5
            while self.processes() and time.monotonic() < end:
                time.sleep(0.1)
        left = self.processes()
        if left:
            raise ClusterError(f"processes of the SLURM test cluster outlived stop(): {left}")

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- jobs --------------------------------------------------------------------------------
    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a client command (``sbatch``, ``scontrol``, ...) against this cluster; raise on failure."""
        r = subprocess.run(argv, env=kw.pop("env", self.env), capture_output=True, text=True, **kw)
        if r.returncode != 0:
            raise ClusterError(f"{' '.join(map(str, argv))} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def sbatch(self, *args, cwd: Optional[Path] = None, env: Optional[dict] = None) -> str:
        """Submit; returns the job id."""
        r = self.run(["sbatch", "--parsable", *map(str, args)], cwd=cwd, env={**self.env, **(env or {})})
        return r.stdout.strip().split(";")[0]

    def squeue(self) -> list[str]:
        r = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=self.env, capture_output=True, text=True)
        return r.stdout.split("\n") if r.stdout.strip() else []

    def jobs(self, job_id: str) -> list[dict]:
        """``scontrol show job`` records of a job (one per array task)."""
        r = self.run(["scontrol", "show", "job", "-o", str(job_id)])
        return [parse_record(line) for line in r.stdout.splitlines() if line.strip()]

    def wait(self, job_id: str, timeout: float) -> list[dict]:
        """Wait until every task of ``job_id`` is in a final state; returns their records."""
        end = time.monotonic() + timeout
        while True:
            recs = self.jobs(job_id)
            if recs and all(r.get("JobState") in FINAL_STATES for r in recs):
                return recs
            if time.monotonic() > end:
                states = [(r.get("JobId"), r.get("JobState"), r.get("Reason")) for r in recs]
                raise ClusterError(f"job {job_id} not finished after {timeout:.0f} s: {states}\n{self.logs()}")
            time.sleep(0.5)

    def wait_running(self, job_id: str, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            rec = self.jobs(job_id)[0]
            if rec.get("JobState") == "RUNNING":
                return rec
            if rec.get("JobState") in FINAL_STATES or time.monotonic() > end:
                raise ClusterError(f"job {job_id} did not start: {rec.get('JobState')} {rec.get('Reason')}")
            time.sleep(0.2)


def session_cluster(root: Path):
    """Generator for a pytest fixture: a started cluster, stopped (and checked) afterwards."""
    cluster = SlurmCluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
