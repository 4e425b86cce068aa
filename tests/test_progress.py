"""Progress written to a pipe or file: plain lines (start, rate-limited updates with an ETA, end), not rich bars."""

from __future__ import annotations

import io

from rich.console import Console

from frankenlm.cli.progress import PlainBar, phase_bars


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_plain_bar_writes_a_line_per_interval_with_elapsed_and_eta():
    buf, clock = io.StringIO(), FakeClock()
    bar = PlainBar(Console(file=buf), "qwen · arc_easy · search", 100, "units", interval=60, clock=clock)
    assert lines(buf) == ["qwen · arc_easy · search: 0/100 units"]
    clock.t += 30
    bar.advance(10)  # within the interval: no line
    assert len(lines(buf)) == 1
    clock.t += 30
    bar.advance(10)  # 20 of 100 done in 60 s: 80 left at 3 s each
    assert lines(buf)[-1] == "qwen · arc_easy · search: 20/100 units, 0:01:00 elapsed, ETA 0:04:00"
    clock.t += 59
    bar.advance(5)  # 59 s after the last line: still quiet
    assert len(lines(buf)) == 2
    clock.t += 61
    bar.advance(75)  # reaches the total: the closing line, at once
    assert lines(buf)[-1] == "qwen · arc_easy · search: 100/100 units in 0:03:00"
    bar.finish()  # the study's end-of-phase call after the total was reached adds nothing
    assert len(lines(buf)) == 3


def test_phase_bars_on_a_file_writes_plain_lines_and_closes_each_phase():
    buf = io.StringIO()
    out = Console(file=buf)
    assert not out.is_terminal
    factory = phase_bars(out)
    advance = factory("m · t · held-out", 6)
    advance("m · t · held-out", 2)
    advance("m · t · held-out", -1)  # the phase ends early (the rest was not needed)
    nxt = factory("m · t · fp32 re-check", 2)
    nxt("m · t · fp32 re-check", 2)
    nxt("m · t · fp32 re-check", -1)
    text = lines(buf)
    assert text[0] == "m · t · held-out: 0/6 units"
    assert text[1].startswith("m · t · held-out: 2/6 units in ")
    assert text[2] == "m · t · fp32 re-check: 0/2 units"
    assert text[3].startswith("m · t · fp32 re-check: 2/2 units in ")
    assert len(text) == 4 and "━" not in buf.getvalue()
