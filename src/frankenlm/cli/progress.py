"""Progress for library callbacks (the library only calls them; drawing happens here).

On a terminal: rich bars with elapsed time and ETA. On a pipe or file rich's live bar never draws (only the
finished bar appears, when a phase ends), so a multi-hour run redirected to a log showed nothing of the phase in
progress. There each bar is a `PlainBar` instead: a line when it starts, one at most every `interval` seconds
while it advances (done/total, elapsed, ETA), and one when it ends.

A resumed study finds many of a phase's units already stored: they count as done (the bar's total stays the
phase's), but the ETA is drawn from the units computed in this run only.
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
        self.done, self.stored, self.finished = 0, 0, False
        self.started = self.last = clock()
        self._line(f"0/{total} {unit}")

    def _line(self, text: str) -> None:
        self.out.print(f"{self.description}: {text}", highlight=False, markup=False, soft_wrap=True)
        self.out.file.flush()

    def _done(self) -> str:
        stored = f" ({self.stored} already stored)" if self.stored else ""
        return f"{self.done}/{self.total} {self.unit}{stored}"

    def advance(self, n: int, stored: bool = False) -> None:
        """`n` more units done: computed here, or (`stored`) found already stored."""
        self.done += n
        self.stored += n if stored else 0
        if self.done >= self.total:
            self.finish()
            return
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed, computed = now - self.started, self.done - self.stored
        eta = "?" if computed <= 0 else _clock(elapsed / computed * (self.total - self.done))
        self._line(f"{self._done()}, {_clock(elapsed)} elapsed, ETA {eta}")

    def finish(self) -> None:
        """The closing line (once): units done of the total, and the time the bar took."""
        if not self.finished:
            self.finished = True
            self._line(f"{self._done()} in {_clock(self.clock() - self.started)}")


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


def phase_bars(out: Console = console) -> Callable[[str, int], Callable[..., None]]:
    """`run_study(progress=...)`: one bar per study phase (sweep, greedy search step, held-out, fp32 re-check).

    The study calls `advance(description, n)` with n units scored, `advance(description, n, stored=True)` with n
    units it found already stored, and n < 0 when the phase is over.
    """
    if not out.is_terminal:

        def plain(description: str, total: int) -> Callable[..., None]:
            bar = PlainBar(out, description, total, "units")
            return lambda _desc, n, stored=False: bar.finish() if n < 0 else bar.advance(n, stored)

        return plain

    progress = _rich_bar(out, "{task.description}")

    def factory(description: str, total: int) -> Callable[..., None]:
        if not progress.live.is_started:
            progress.start()
        tid = progress.add_task(description, total=total)
        already = 0

        def advance(_desc: str, n: int, stored: bool = False) -> None:
            nonlocal already
            if n < 0:  # the phase is over: leave its finished bar on screen, draw the next one afresh
                progress.update(tid, completed=total)
                progress.stop()
                progress.remove_task(tid)
            elif stored:  # rich's ETA reads a 30 s window of samples: a stored jump skews it for that long only
                already += n
                progress.update(tid, advance=n, description=f"{description} ({already} already stored)")
            else:
                progress.advance(tid, n)

        return advance

    return factory
