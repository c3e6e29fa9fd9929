"""A warm Python interpreter for tests that start many short ``python PROGRAM ARGS`` children.

Starting ``experiments/run.py`` costs about 6 CPU-seconds of imports (torch, Lightning,
torchmetrics, ...) before a smoke run's 2-4 seconds of work; the sweep smoke test starts 26 of
them. :class:`WarmPython` starts one server process that imports those libraries once and listens
on a Unix socket; :attr:`WarmPython.interpreter` is a small client script to use in place of
``sys.executable``. The client hands the server its arguments, working folder, environment and
standard streams (file descriptors); the server forks a child that runs ``PROGRAM`` as
``__main__`` with them, the client forwards SIGINT/SIGTERM/SIGHUP to that child and exits with its
exit code. A program thus runs as under a fresh interpreter, except that the modules the server
preloaded are already imported (their import-time settings come from the test's environment).

Forking is safe because the server imports only, on one thread, and runs no torch operation.
Tests only: nothing in the project uses it.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

CLIENT = '''#!{python} -SE
"""Run a program in the warm interpreter of tests/warm_python.py (argv, cwd, env, stdio go there)."""
import json, os, signal, socket, struct, sys

s = socket.socket(socket.AF_UNIX)
s.connect({sock!r})
msg = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(s, [struct.pack("!I", len(msg)) + msg], [0, 1, 2])
f = s.makefile("r")
pid = int(f.readline())
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda n, _f: os.kill(pid, n))
line = f.readline()
sys.exit(int(line) if line.strip() else 1)
'''


def _recv_exactly(conn: socket.socket, n: int, first: bytes) -> bytes:
    data = first
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection early")
        data += chunk
    return data


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested program, run it, never return."""
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: die with the server
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin, sys.stdout, sys.stderr = (open(i, mode, closefd=False, buffering=1 if i else -1)
                                             for i, mode in ((0, "r"), (1, "w"), (2, "w")))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        program = request["argv"][0]
        sys.argv = list(request["argv"])
        sys.path[0] = str(Path(program).resolve().parent)  # as `python PROGRAM` sets it
        import runpy

        try:
            runpy.run_path(program, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - report like the interpreter does
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()  # W&B, logging: what a normal interpreter exit would run
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def serve(sock_path: str, preload: Sequence[str]) -> None:
    """The server loop: preload, then fork one child per client; the exit code goes back.

    ``preload`` names modules to import, or ``module:function`` to call as well (e.g. to fill a
    cache that every child would otherwise fill again).
    """
    for name in preload:
        module, _, function = name.partition(":")
        mod = importlib.import_module(module)
        if function:
            getattr(mod, function)()
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock_path)
    srv.listen(16)
    running: dict[int, tuple] = {}
    log = open(Path(sock_path).with_name("children.log"), "a", buffering=1)  # CPU seconds per program run
    while True:
        ready, _, _ = select.select([srv], [], [], 0.05)
        if ready:
            conn, _ = srv.accept()
            head, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            size = struct.unpack("!I", head[:4])[0]
            request = json.loads(_recv_exactly(conn, size + 4, head)[4:])
            pid = os.fork()
            if pid == 0:
                srv.close()
                conn.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            running[pid] = (conn, request["argv"], time.monotonic())
        while running:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            conn, argv, t0 = running.pop(pid, (None, [], 0.0))
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                log.write(f"exit {code} cpu {usage.ru_utime + usage.ru_stime:.1f} s wall {time.monotonic() - t0:.1f} s: "
                          f"{' '.join(argv)[:200]}\n")
                try:
                    conn.sendall(f"{code if code >= 0 else 128 - code}\n".encode())
                except OSError:  # the client is gone (killed)
                    pass
                conn.close()


class WarmPython:
    """The server process and its client script, under ``folder``; use as a context manager."""

    def __init__(self, folder: Path, preload: Sequence[str], env: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sock = str(self.folder / "warm.sock")
        Path(self.sock).unlink(missing_ok=True)  # it appears once the server has preloaded
        self.interpreter = str(self.folder / "warm-python")
        Path(self.interpreter).write_text(CLIENT.format(python=sys.executable, sock=self.sock))
        os.chmod(self.interpreter, 0o755)
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import warm_python; " \
               f"warm_python.serve({self.sock!r}, {list(preload)!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL)

    def __enter__(self) -> "WarmPython":
        end = time.monotonic() + 300
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the warm Python server did not start (exit {self.proc.poll()})")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()  # its children die with it (PR_SET_PDEATHSIG)
        self.proc.wait(10)
