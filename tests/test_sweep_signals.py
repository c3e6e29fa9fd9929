"""Issue 17.5: the local sweep runner under signals, second runners and restarts (real processes).

Each test starts ``ablations/sweep.py`` as a subprocess on a stand-in for ``experiments/run.py``
that records its call and then waits for a release file, so a signal always lands while a point
runs. Before the fix: Ctrl-C let the queued points run and marked them DONE, killing the runner
orphaned the child, and a second runner started the same point again.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tiny_method  # noqa: F401  (registered once here: the forked runners inherit it)
from ablations.sweeps import sweep as sweep_cli
from conftest import ROOT, python_env
from mfif import registry
from sweep_stand_in import write_stand_in

pytestmark = pytest.mark.slow
registry.import_all()  # the paper modules, imported before the runners fork

WAITING = """\
(rd / "checkpoints").mkdir(exist_ok=True)
with open(rd.parent / "calls.txt", "a") as f:
    f.write(f"{kv['logger.name']} {kv.get('ckpt_path', '-')} {os.getpid()}\\n")
(rd / "checkpoints" / "last.ckpt").write_bytes(b"step 1")
try:
    while not (rd.parent / "release").exists():
        time.sleep(0.05)
except KeyboardInterrupt:  # as Lightning: a graceful stop, exit 0 without test metrics
    sys.exit(0)
(rd / "metrics.csv").write_text("image,psnr\\nmean,%s\\n" % kv["model.width"])
"""


def _sweep_file(tmp: Path, widths=(2, 3, 4)) -> tuple[Path, Path]:
    prog = write_stand_in(tmp / "waiting_run.py", "Stand-in for experiments/run.py: logs its call and pid, writes a "
                          "checkpoint, waits for `release`.", WAITING)
    f = tmp / "wait.yaml"
    f.write_text(textwrap.dedent(f"""\
        name: wait
        method: grid
        program: {prog}
        parameters:
          model.width: {{values: {list(widths)}}}
        command:
          - ${{env}}
          - ${{interpreter}}
          - ${{program}}
          - --config
          - {ROOT / 'tests' / 'configs_tiny.yaml'}
          - ${{args_no_hyphens}}
        """))
    return f, tmp / "runs"


class Runner:
    """``ablations/sweep.py`` in a forked process (the test process has imported the heavy modules
    already, so a runner starts in milliseconds); stdout/stderr go to ``log``."""

    def __init__(self, f: Path, runs: Path, *extra: str):
        self.log = runs.parent / f"runner-{time.monotonic_ns()}.log"
        self.proc = multiprocessing.get_context("fork").Process(
            target=self._main, args=([str(f), "--runs-root", str(runs), "--grace", "5", *extra],))
        self.proc.start()
        self.pid = self.proc.pid

    def _main(self, argv: list) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.environ["PYTHONPATH"] = python_env()["PYTHONPATH"]
        code = sweep_cli.main(argv)
        sys.stdout.flush()
        os._exit(code)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        self.proc.join(timeout)
        assert self.proc.exitcode is not None, "runner did not exit"
        return self.proc.exitcode, self.log.read_text()


def _calls(runs: Path) -> list[list[str]]:
    path = runs / "wait" / "calls.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.is_file() else []


def _wait_for(cond, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (a zombie awaiting a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_ctrl_c_stops_the_child_marks_nothing_done_and_the_point_resumes(tmp_path):
    f, runs = _sweep_file(tmp_path)
    first = Runner(f, runs)
    _wait_for(lambda: len(_calls(runs)) == 1)
    child = int(_calls(runs)[0][2])
    first.signal(signal.SIGINT)  # Ctrl-C reaches the runner; its child has its own process group
    code, out = first.wait()
    assert code == 130, out
    assert not _alive(child)
    assert len(_calls(runs)) == 1  # the queued points never started
    assert not list(runs.glob("wait/*/DONE")) and not list(runs.glob("wait/*/LOCK"))
    assert "1 interrupted, 2 not started" in out
    # other key=value settings: the unfinished point is not resumed with them
    code, out = Runner(f, runs, "--points", "0", "profile=smoke").wait()
    assert code == 1 and "holds an unfinished run with other settings" in out
    assert len(_calls(runs)) == 1
    # the same settings: the unfinished point resumes from its checkpoint; all complete
    (runs / "wait" / "release").touch()
    code, out = Runner(f, runs).wait()
    assert code == 0, out
    assert [c[:2] for c in _calls(runs)] == [["width-2", "-"], ["width-2", "last"], ["width-3", "-"], ["width-4", "-"]]
    assert "start width-2" in out and "resuming from checkpoints/last.ckpt" in out
    assert (runs / "wait" / "width-2" / "log.txt").read_text().count("$ ") == 2  # both attempts kept
    assert len(list(runs.glob("wait/*/DONE"))) == 3


def test_sigterm_to_the_runner_stops_the_child(tmp_path):
    f, runs = _sweep_file(tmp_path, widths=(2,))
    runner = Runner(f, runs)
    _wait_for(lambda: len(_calls(runs)) == 1)
    child = int(_calls(runs)[0][2])
    runner.signal(signal.SIGTERM)
    code, out = runner.wait()
    assert code == 143, out
    _wait_for(lambda: not _alive(child), timeout=20)
    assert not (runs / "wait" / "width-2" / "DONE").exists()


def test_one_point_one_runner_no_orphan_on_sigkill_stale_lock_taken_over(tmp_path):
    f, runs = _sweep_file(tmp_path, widths=(2,))
    first = Runner(f, runs)
    _wait_for(lambda: len(_calls(runs)) == 1)
    child = int(_calls(runs)[0][2])
    code, out = Runner(f, runs).wait()  # the same point while the first runner holds it
    assert code == 1 and f"running in PID {first.pid}" in out and "1 locked" in out, out
    assert len(_calls(runs)) == 1
    first.signal(signal.SIGKILL)  # nothing can forward a signal now
    assert first.wait()[0] == -signal.SIGKILL
    _wait_for(lambda: not _alive(child), timeout=20)  # the kernel's parent-death signal
    lock = runs / "wait" / "width-2" / "LOCK"
    assert f'"pid": {first.pid}' in lock.read_text()  # left behind by the killed runner
    (runs / "wait" / "release").touch()
    code, out = Runner(f, runs).wait()
    assert code == 0, out
    assert f"taking over the stale lock of PID {first.pid}" in out
    assert (runs / "wait" / "width-2" / "DONE").is_file() and not lock.exists()
    assert [c[1] for c in _calls(runs)] == ["-", "last"]
