"""Rich progress for training: one bar per epoch showing loss and accuracy.

Each epoch gets its own short-lived :class:`rich.progress.Progress`, so on a terminal
every finished epoch stays on screen as one line, and without a TTY (CI logs, pipes)
rich prints exactly one plain line per epoch. Bars go to stderr.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


class EpochBars:
    """Factory of per-epoch bars; ``enabled=False`` makes every call a no-op."""

    def __init__(self, enabled: bool = True, console: Any = None) -> None:
        self.enabled = enabled
        self._console = console

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def print(self, message: str) -> None:
        """A plain line in the same stream as the bars (no markup interpretation)."""
        if self.enabled:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def epoch(self, title: str, total: int) -> Iterator["EpochBar"]:
        """A bar for one epoch of ``total`` steps; closes (and prints its final line) on exit."""
        if not self.enabled:
            yield EpochBar(None, None)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            transient=False,
        )
        with progress:
            task = progress.add_task(title, total=max(1, total), stats="")
            yield EpochBar(progress, task)


class EpochBar:
    """Handle to update one epoch's bar."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def update(self, completed: int, stats: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, stats=stats)

    def finish(self, completed: int, stats: str) -> None:
        """Final state: mark the bar done (the run may stop mid-epoch) and show the summary."""
        if self._progress is not None:
            self._progress.update(self._task, total=max(1, completed), completed=max(1, completed), stats=stats)
