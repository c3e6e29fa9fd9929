"""Progress with an ETA for long loops (tiled 4K fusion, evaluation, sweeps): cheap, silenceable.

:class:`Progress` prints ``[k/n] what  3.2/s  elapsed 12s  ETA 40s`` to stderr: in a terminal one
line rewritten in place (as tqdm does), elsewhere (SLURM logs, pipes) a new line at most every
``every`` seconds and at the end. An update costs a clock read; nothing is printed when the
environment variable ``MFIF_PROGRESS=0`` is set or the caller passes ``enabled=False``.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

ENV = "MFIF_PROGRESS"


def progress_enabled() -> bool:
    """False when ``MFIF_PROGRESS=0`` silences every progress display."""
    return os.environ.get(ENV, "1") != "0"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_seconds(done: int, total: int, elapsed: float) -> Optional[float]:
    """Time left at the mean rate so far (None before the first item or once all are done)."""
    if done <= 0 or done >= total:
        return None
    return elapsed / done * (total - done)


class Progress:
    """Count ``total`` items and show how far, how fast and how long to go.

    Args:
        total: number of items.
        desc: what is counted (``tiles``, ``lytro``).
        stream: where to write (default stderr).
        every: seconds between lines when ``stream`` is not a terminal.
        enabled: False for silence; None: on unless ``MFIF_PROGRESS=0``.

    Example:
        >>> with Progress(3, "items", enabled=False) as bar:
        ...     for _ in range(3):
        ...         bar.update()
    """

    def __init__(self, total: int, desc: str = "", stream: Optional[TextIO] = None, every: float = 10.0,
                 enabled: Optional[bool] = None):
        self.total, self.desc, self.every = max(0, int(total)), desc, float(every)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled() if enabled is None else bool(enabled) and progress_enabled()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.t0, self._last, self._width = 0, time.monotonic(), -1e9, 0

    def line(self, note: str = "") -> str:
        """The current status, e.g. ``[3/8] tiles  1.5/s  elapsed 2s  ETA 3s``."""
        elapsed = time.monotonic() - self.t0
        rate = f"  {self.done / elapsed:.3g}/s" if elapsed > 0 and self.done else ""
        eta = eta_seconds(self.done, self.total, elapsed)
        left = f"  ETA {duration(eta)}" if eta is not None else ""
        return f"[{self.done}/{self.total}] {self.desc}{rate}  elapsed {duration(elapsed)}{left}{'  ' + note if note else ''}"

    def update(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more items; print when due (always for the last one)."""
        self.done = min(self.total, self.done + n)
        if not self.enabled:
            return
        now, last = time.monotonic(), self.done >= self.total
        if not last and now - self._last < (0.1 if self.tty else self.every):
            return
        self._last = now
        text = self.line(note)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width) + ("\n" if last else ""))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a line left open in a terminal (an interrupted loop)."""
        if self.enabled and self.tty and 0 < self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
