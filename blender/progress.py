"""Progress reporting for the renderer: a rich progress bar on a terminal, log lines otherwise.

Blender prints its render log on the C-level stdout/stderr, which the renderer redirects to a
log file while rendering; the reporter therefore writes to its own duplicate of the original
stderr so the progress stays visible.
"""

from __future__ import annotations

import os
import sys
import time


class Reporter:
    """Per-scene progress (``steps_per_scene`` renders) over ``num_scenes`` scenes."""

    def __init__(self, num_scenes: int, steps_per_scene: int, stream=None):
        if stream is None:
            sys.stderr.flush()
            stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        self.stream = stream
        self.num_scenes = num_scenes
        self.steps = steps_per_scene
        self.done = 0
        self.scene = None
        self.t_step = time.perf_counter()
        self._progress = None
        self._task = None
        if stream.isatty():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(),
                    console=Console(file=stream),
                    transient=False,
                )
                self._progress.start()
            except ImportError:  # pragma: no cover - rich is a dependency
                self._progress = None

    def _line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def info(self, text: str) -> None:
        """Free-form message."""
        self._line(text)

    def error(self, text: str) -> None:
        """Error message (also used for Blender log tails)."""
        self._line(f"ERROR: {text}")

    def skip(self, index: int) -> None:
        """Scene ``index`` is already complete."""
        self.done += 1
        self._line(f"[{self.done}/{self.num_scenes}] scene_{index:06d} exists, skipped")

    def start_scene(self, index: int) -> None:
        """A scene starts rendering."""
        self.scene = index
        self.t_step = time.perf_counter()
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"scene_{index:06d} ({self.done + 1}/{self.num_scenes})", total=self.steps
            )

    def step(self, what: str) -> None:
        """One render of the current scene finished."""
        now = time.perf_counter()
        if self._progress is not None:
            self._progress.advance(self._task)
        else:
            self._line(f"  scene_{self.scene:06d}: {what} ({now - self.t_step:.1f}s)")
        self.t_step = now

    def abort_scene(self) -> None:
        """The current scene failed (its temporary folder was deleted)."""
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
        self._task = None

    def end_scene(self, index: int, seconds: float) -> None:
        """The scene was committed."""
        self.done += 1
        if self._progress is not None:
            self._progress.remove_task(self._task)
        self._line(f"[{self.done}/{self.num_scenes}] scene_{index:06d} done in {seconds:.1f}s")

    def close(self, failed: int = 0, skipped: int = 0) -> None:
        """Final summary; stops the progress bar."""
        if self._progress is not None:
            self._progress.stop()
        rendered = self.done - skipped
        self._line(f"finished: {rendered} rendered, {skipped} skipped, {failed} failed")
