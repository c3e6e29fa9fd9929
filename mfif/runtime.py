"""Process-level settings for fast CPU inference, applied by the command-line entry points.

:func:`retain_freed_memory` - glibc hands every allocation above its mmap threshold (at most
32 MiB) straight back to the kernel when it is freed, so each new large tensor of a forward pass
(a 64 x 520 x 520 float32 activation is 69 MB) is fresh memory that page-faults on first touch:
the kernel zeroes it page by page. On a Lytro pair with GACN that was ~0.24 s of system time per
pair, a third of the wall time (``ablations/gacn/table3.py``). Keeping freed memory in the
process heap (``M_MMAP_MAX = 0``, high ``M_TRIM_THRESHOLD``) lets later tensors reuse it: the
same pair then runs with no page faults. Values are unchanged; the cost is that the resident
memory stays at its peak until the process ends, which is what a fusion or evaluation job wants.

Library users opt in by calling it themselves; the CLIs (``fuse.py``, ``run.py``,
``evaluate.py``, the benchmarks) call it at start-up unless ``MFIF_RETAIN_FREED_MEMORY=0``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Callable

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_applied = False


def retain_freed_memory() -> bool:
    """Keep freed memory in the heap for reuse (glibc only); returns whether it is in effect.

    Idempotent. A no-op returning False on non-Linux systems, non-glibc C libraries or when the
    environment variable ``MFIF_RETAIN_FREED_MEMORY`` is ``0``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("MFIF_RETAIN_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _applied


def run_cli(main: Callable[[], int], fast_exit: bool = False) -> int:
    """Run a command-line ``main`` with the process settings of this module applied first.

    With ``fast_exit`` the process ends right after ``main`` returns (:func:`exit_now`) instead of
    returning the exit code to the interpreter's normal shutdown. For commands that have written
    and closed everything when ``main`` returns (``fuse.py``, ``evaluate.py``); not for runs with
    W&B or Lightning, whose exit hooks finish their files.
    """
    retain_freed_memory()
    rc = main()
    if fast_exit:
        exit_now(rc)
    return rc


def exit_now(rc: int) -> None:
    """End the process with exit code ``rc`` without the interpreter's teardown.

    With torch imported, the normal shutdown (finalising thousands of modules and objects) takes
    about 0.3 s on this kind of CPU, as long as a GACN fusion of a Lytro pair; a command-line run
    has nothing left to release at that point. Standard streams and logging handlers are flushed
    first; atexit hooks do not run (hence only for commands that own no such hooks).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written
            pass
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(rc if isinstance(rc, int) else 1)


def time_calls(fn: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds (all threads) of ``repeats`` calls of ``fn`` after one warm-up.

    The benchmarks report both: on a shared machine the wall time includes waiting for a core,
    the CPU time does not.
    """
    import time

    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu
