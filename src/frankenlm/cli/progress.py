"""Progress bars for library callbacks (the library only calls them; drawing happens here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from frankenlm.cli.console import err_console


@contextmanager
def task_bars(enabled: bool = True) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    """Yields an `evaluate(progress=...)` callback: one bar of requests per task, on stderr (None if disabled).

    On stderr so that piped stdout (tables, JSON) stays clean.
    """
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:

        def start(description: str, total: int) -> Callable[[int], None]:
            task_id = bar.add_task(description, total=total)
            return lambda n: bar.advance(task_id, n)

        yield start
