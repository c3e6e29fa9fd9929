"""Run sweep points as child processes: one runner per point, stop means stop, progress with ETA.

The local runner of ``ablations/sweep.py`` hands every point to :func:`run_jobs`, which keeps up
to ``workers`` children going from the main thread and guarantees:

* **One point, one runner.** A point's folder holds a ``LOCK`` file, locked with ``flock`` for as
  long as the runner *and* its child live (the child inherits the locked descriptor), and
  carrying the runner's PID and host. A second runner skips a locked point ("running in PID N")
  instead of starting the same run again. The kernel drops the lock when its holders die, so a
  ``LOCK`` left by a killed runner is stale by construction and is taken over (with a note).
* **Stop = stop the children.** Each child runs in its own process group. Ctrl-C (SIGINT) or
  SIGTERM/SIGHUP to the runner: no queued point starts; each running child gets SIGINT (Lightning
  shuts down gracefully), then SIGTERM to its group after ``grace`` seconds, then SIGKILL; a
  second Ctrl-C kills at once. Nothing that ends after a stop request is marked ``DONE``.
* **No orphans.** A child asks the kernel (``PR_SET_PDEATHSIG``, Linux) to be killed when the
  runner dies, even by SIGKILL, when nothing could forward a signal.
* **Progress.** One line per started and per finished point, with the elapsed time and an ETA
  (mean time per finished point x points left / workers).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from mfif.progress import duration

LOCK = "LOCK"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Job:
    """One point to run: its argv, folder and how to judge success."""

    key: str  # the point id
    argv: list
    run_dir: Path
    check: Callable[[Path], tuple[int, str]] = field(default=lambda rd: (0, ""))  # (exit code, note) after exit 0
    on_done: Optional[Callable[[float], None]] = None  # called once the point succeeded (writes DONE)
    on_start: Optional[Callable[[], Optional[str]]] = None  # under the lock, before the start: a reason to skip, or None
    note: str = ""  # shown when the point starts (e.g. "resuming from last.ckpt")
    log: Optional[Path] = None  # stdout + stderr of every attempt (default: run_dir/log.txt)

    @property
    def log_path(self) -> Path:
        return Path(self.log) if self.log is not None else self.run_dir / "log.txt"


@dataclass
class Result:
    key: str
    status: str  # done | failed | skipped | locked | interrupted | not started
    returncode: Optional[int]
    seconds: float
    log: Path
    note: str = ""


class PointLock:
    """An exclusive ``flock`` on ``<run_dir>/LOCK`` holding the owner's PID and host."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: Optional[int] = None
        self.previous: dict = {}

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when a live runner holds it
        (``self.previous`` then describes that runner)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                self.previous = _read_owner(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    return False
                raise
            try:  # the file we locked may have been removed by its previous owner meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.previous = _read_owner(fd)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # the flock goes with the last descriptor (the child's copy is closed by now)
        self.fd = None


def _read_owner(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _death_signal_setter() -> Optional[Callable[[], None]]:
    """``preexec_fn`` asking the kernel to SIGKILL the child when the runner dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: nothing but two syscalls
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


class _Stop:
    """Signal bookkeeping: the first SIGINT/SIGTERM/SIGHUP asks for a stop, a second SIGINT kills."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum: Optional[int] = None
        self.hard = False
        self.at = 0.0
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
            print(f"\n{signal.Signals(signum).name}: stopping the running points (no new point starts; "
                  "Ctrl-C again to kill them at once)", file=sys.stderr, flush=True)
        elif signum == signal.SIGINT:
            self.hard = True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own process group
    except (ProcessLookupError, PermissionError):
        pass


def run_jobs(jobs: Sequence[Job], workers: int = 1, grace: float = 20.0, say: Callable[[str], None] = print,
             poll: float = 0.1) -> tuple[list[Result], Optional[int]]:
    """Run ``jobs``, ``workers`` at a time; returns (results in job order, the stop signal or None).

    A job whose folder is locked by another live runner is not run (``locked``). A stop request
    (see the module docstring) leaves the remaining jobs ``not started`` and the running ones
    ``interrupted``; their ``on_done`` is never called.
    """
    queue = list(jobs)
    results: dict[str, Result] = {}
    running: dict[str, tuple[Job, subprocess.Popen, float, PointLock, object]] = {}
    n, t_start, finished_times = len(jobs), time.monotonic(), []
    preexec = _death_signal_setter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stop = _Stop()

    def eta() -> str:
        left = n - len(results)
        if not finished_times or not left:
            return ""
        mean = sum(finished_times) / len(finished_times)
        return f", ETA {duration(mean * left / max(1, min(workers, left)))}"

    def start(job: Job) -> None:
        lock = PointLock(job.run_dir)
        if not lock.acquire():
            who = lock.previous
            results[job.key] = Result(job.key, "locked", None, 0.0, job.log_path,
                                      f"running in PID {who.get('pid', '?')} on {who.get('host', '?')} "
                                      f"since {who.get('started', '?')} ({job.run_dir / LOCK})")
            say(f"[{len(results)}/{n}] {job.key}: skipped, {results[job.key].note}")
            return
        reason = job.on_start() if job.on_start is not None else None
        if reason:  # e.g. another runner finished it meanwhile
            lock.release()
            results[job.key] = Result(job.key, "skipped", None, 0.0, job.log_path, reason)
            say(f"[{len(results)}/{n}] {job.key}: skipped, {reason}")
            return
        old = lock.previous.get("pid")
        if old and (lock.previous.get("host") != socket.gethostname() or not pid_alive(int(old))):
            say(f"{job.key}: taking over the stale lock of PID {old} on {lock.previous.get('host', '?')} (not running)")
        log = open(job.log_path, "a")
        log.write(f"\n$ {shlex.join(job.argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, preexec_fn=preexec, pass_fds=(lock.fd,))
        except OSError as e:  # e.g. the interpreter or program is not executable
            log.close()
            lock.release()
            results[job.key] = Result(job.key, "failed", None, 0.0, job.log_path, f"cannot start: {e}")
            say(f"[{len(results)}/{n}] {job.key}: failed, cannot start: {e}")
            return
        running[job.key] = (job, proc, time.monotonic(), lock, log)
        say(f"start {job.key} (pid {proc.pid}){' ' + job.note if job.note else ''}; log {job.log_path}")

    def finish(key: str, rc: int) -> None:
        job, proc, t0, lock, log = running.pop(key)
        log.close()
        secs = time.monotonic() - t0
        note = ""
        if stop.signum is not None:
            status = "interrupted"
            note = f"stopped by {signal.Signals(stop.signum).name}; not marked DONE"
        else:
            if rc == 0:
                rc, note = job.check(job.run_dir)
            status = "done" if rc == 0 else "failed"
            if status == "done" and job.on_done is not None:
                job.on_done(secs)
        lock.release()
        results[key] = Result(key, status, rc, secs, job.log_path, note)
        finished_times.append(secs)
        why = "" if status == "done" else f" (exit {rc}{', ' + note if note else ''}; see {job.log_path})"
        say(f"[{len(results)}/{n}] {key}: {status} in {duration(secs)}{why} "
            f"(elapsed {duration(time.monotonic() - t_start)}{eta() if stop.signum is None else ''})")

    with stop:
        try:
            while (queue and stop.signum is None) or running:
                while queue and stop.signum is None and len(running) < max(1, workers):
                    start(queue.pop(0))
                for key, (_, proc, _, _, _) in list(running.items()):
                    rc = proc.poll()
                    if rc is not None:
                        finish(key, rc)
                if stop.signum is not None and running:
                    waited = time.monotonic() - stop.at
                    for _, proc, _, _, _ in running.values():
                        _escalate(proc, stop, waited, grace)
                time.sleep(poll)
        finally:  # an exception here (or a bug) must not leave children behind
            for _, proc, _, lock, log in running.values():
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                log.close()
                lock.release()
    for job in queue:
        results[job.key] = Result(job.key, "not started", None, 0.0, job.log_path,
                                  "the sweep was stopped before it started")
    return [results[j.key] for j in jobs], stop.signum


def _escalate(proc: subprocess.Popen, stop: _Stop, waited: float, grace: float) -> None:
    """SIGINT to the child first (graceful), SIGTERM to its group after ``grace``, then SIGKILL."""
    sent = getattr(proc, "_mfif_sent", None)
    if stop.hard or waited > grace + 10:
        want = signal.SIGKILL
    elif waited > grace or stop.signum != signal.SIGINT:
        want = signal.SIGTERM
    else:
        want = signal.SIGINT
    if want == sent:
        return
    if want == signal.SIGINT:
        try:
            os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    else:
        _signal_group(proc, want)
    proc._mfif_sent = want  # type: ignore[attr-defined]
