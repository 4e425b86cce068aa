"""Progress for library callbacks (the library only calls them; drawing happens here).

On a terminal: rich bars with elapsed time and ETA. On a pipe or file rich's live bar never draws (only the
finished bar appears, when a phase ends), so a multi-hour run redirected to a log showed nothing of the phase in
progress. There each bar is a `PlainBar` instead: a line when it starts, one at most every `interval` seconds
while it advances (done/total, elapsed, ETA), and one when it ends.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from frankenlm.cli.console import console, err_console

PLAIN_INTERVAL_S = 60.0  # at most one progress line a minute per bar in a log file


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class PlainBar:
    """One bar as plain text lines on `out`, rate-limited to one line per `interval` seconds."""

    def __init__(
        self,
        out: Console,
        description: str,
        total: int,
        unit: str,
        interval: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.out, self.description, self.total, self.unit = out, description, total, unit
        self.interval, self.clock = interval, clock
        self.done, self.finished = 0, False
        self.started = self.last = clock()
        self._line(f"0/{total} {unit}")

    def _line(self, text: str) -> None:
        self.out.print(f"{self.description}: {text}", highlight=False, markup=False, soft_wrap=True)
        self.out.file.flush()

    def advance(self, n: int) -> None:
        self.done += n
        if self.done >= self.total:
            self.finish()
            return
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.started
        eta = "?" if self.done <= 0 else _clock(elapsed / self.done * (self.total - self.done))
        self._line(f"{self.done}/{self.total} {self.unit}, {_clock(elapsed)} elapsed, ETA {eta}")

    def finish(self) -> None:
        """The closing line (once): units done of the total, and the time the bar took."""
        if not self.finished:
            self.finished = True
            self._line(f"{self.done}/{self.total} {self.unit} in {_clock(self.clock() - self.started)}")


def _rich_bar(out: Console, description: str, unit: str | None = None) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        *([TextColumn(unit)] if unit else []),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=out,
        transient=False,
    )


@contextmanager
def task_bars(enabled: bool = True) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    """Yields an `evaluate(progress=...)` callback: one bar of requests per task, on stderr (None if disabled).

    On stderr so that piped stdout (tables, JSON) stays clean.
    """
    if not enabled:
        yield None
        return
    if not err_console.is_terminal:
        bars: list[PlainBar] = []

        def start_plain(description: str, total: int) -> Callable[[int], None]:
            bars.append(PlainBar(err_console, description, total, "requests"))
            return bars[-1].advance

        yield start_plain
        for bar in bars:
            bar.finish()
        return
    with _rich_bar(err_console, "[bold]{task.description}", "requests") as progress:

        def start(description: str, total: int) -> Callable[[int], None]:
            task_id = progress.add_task(description, total=total)
            return lambda n: progress.advance(task_id, n)

        yield start


def phase_bars(out: Console = console) -> Callable[[str, int], Callable[[str, int], None]]:
    """`run_study(progress=...)`: one bar per study phase (sweep, greedy search step, held-out, fp32 re-check).

    The study calls `advance(description, n)` with n units scored, and n < 0 when the phase is over.
    """
    if not out.is_terminal:

        def plain(description: str, total: int) -> Callable[[str, int], None]:
            bar = PlainBar(out, description, total, "units")
            return lambda _desc, n: bar.finish() if n < 0 else bar.advance(n)

        return plain

    progress = _rich_bar(out, "{task.description}")

    def factory(description: str, total: int) -> Callable[[str, int], None]:
        if not progress.live.is_started:
            progress.start()
        tid = progress.add_task(description, total=total)

        def advance(_desc: str, n: int) -> None:
            if n < 0:  # the phase is over: leave its finished bar on screen, draw the next one afresh
                progress.update(tid, completed=total)
                progress.stop()
                progress.remove_task(tid)
            else:
                progress.advance(tid, n)

        return advance

    return factory
