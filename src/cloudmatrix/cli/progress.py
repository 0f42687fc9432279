"""A Rich progress bar on stderr that appears only once a run has lasted a second (short runs stay quiet)."""

from __future__ import annotations

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

    def __enter__(self) -> LazyProgress:
        return self

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.started < SHOW_AFTER_S or not self.console.is_terminal:
                return
            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.stop()
