"""Progress of long stages (calibration, validation, sensitivity rounds).

On a terminal a stage shows a rich bar with counts (``calibrating ━━━━ 256/512 images 0:00:03``);
without one (CI logs, pipes) it prints one plain line when it finishes
(``calibrating: 512 images in 6.1 s``). Everything goes to stderr, so stdout keeps the results.
``enabled=False`` makes every call a no-op (the library default; the CLI turns it on).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class Stage:
    """Handle of one running stage: :meth:`advance` by a count, or :meth:`update` to a position."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task
        self.completed = 0
        self.total: int | None = None
        self.info = ""

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._progress is not None:
            self._progress.update(self._task, completed=self.completed)

    def update(self, completed: int, total: int | None = None, info: str = "") -> None:
        self.completed, self.info = completed, info
        if total is not None:
            self.total = total
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=self.total, info=info)


@contextlib.contextmanager
def stage(description: str, total: int | None, unit: str, *, enabled: bool = True,
          console: Any = None) -> Iterator[Stage]:
    """A progress bar (terminal) or a closing line (no terminal) for one stage of ``total`` ``unit``.

    The closing line is printed only when the stage finishes without an exception (an error has its
    own line).
    """
    if not enabled:
        yield Stage(None, None)
        return
    console = console or _console()
    t0 = time.perf_counter()
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                       TextColumn(unit), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                       console=console, transient=False)
        with bar:
            handle = Stage(bar, bar.add_task(description, total=total, info=""))
            handle.total = total
            yield handle
            bar.update(handle._task, total=handle.completed if total is None else None)
        return
    handle = Stage(None, None)
    handle.total = total
    yield handle
    done = str(handle.completed)
    if handle.total and handle.completed < handle.total:
        done += f"/{handle.total}"
    console.print(f"{description}: {done} {unit} in {time.perf_counter() - t0:.1f} s",
                  markup=False, highlight=False, soft_wrap=True)


def track(items: Iterable[T], description: str, total: int | None, unit: str, *,
          count: Callable[[T], int] = lambda _: 1, enabled: bool = True, console: Any = None) -> Iterator[T]:
    """Yield ``items`` while a :func:`stage` counts them (``count(item)`` each, e.g. a batch's size)."""
    if not enabled:
        yield from items
        return
    with stage(description, total, unit, enabled=enabled, console=console) as s:
        for item in items:
            yield item
            s.advance(count(item))
