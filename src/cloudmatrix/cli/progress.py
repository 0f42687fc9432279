"""A Rich progress bar on stderr that appears only once a run has lasted a second (short runs stay quiet),
whether or not the work has reported a step by then (a single long step shows a running clock). Only on
a terminal: piped stderr and ``--json`` stdout never see it."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

SHOW_AFTER_S = 1.0


class LazyProgress:
    def __init__(self, label: str) -> None:
        self.label = label
        self.console = Console(stderr=True)
        self.started = time.perf_counter()
        self.bar: Progress | None = None
        self.task = TaskID(0)
        self.done, self.total = 0, 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def __enter__(self) -> LazyProgress:
        if self.console.is_terminal:
            self._timer = threading.Timer(max(SHOW_AFTER_S, 0.0), self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _show(self) -> None:
        """Start the bar (from the timer, or from an update past the delay); published only once its task
        exists, so an update racing the timer never sees a bar without it."""
        with self._lock:
            if self.bar is not None or self._closed:
                return
            bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            bar.start()
            self.task = bar.add_task(self.label, total=self.total or None, completed=self.done)
            self.bar = bar

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.bar is None:
            if time.perf_counter() - self.started < SHOW_AFTER_S or not self.console.is_terminal:
                return
            self._show()
        with self._lock:
            if self.bar is not None and not self._closed:
                self.bar.update(self.task, completed=done, total=total)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self.bar is not None:
                self.bar.stop()
