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


def test_plain_bar_counts_stored_units_as_done_but_draws_the_eta_from_computed_ones():
    """A resumed phase finds units already stored: the bar counts them, says so, and its ETA is the rate of the
    units computed in this run applied to the units left (counting stored ones in the rate would promise the
    rest at the speed of a database lookup)."""
    buf, clock = io.StringIO(), FakeClock()
    bar = PlainBar(Console(file=buf), "q · arc_easy · damped", 248, "units", interval=60, clock=clock)
    bar.advance(68, stored=True)
    clock.t += 600
    bar.advance(20)  # 20 computed in 600 s: 160 left at 30 s each
    assert lines(buf)[-1] == "q · arc_easy · damped: 88/248 units (68 already stored), 0:10:00 elapsed, ETA 1:20:00"
    bar.advance(160)
    assert lines(buf)[-1] == "q · arc_easy · damped: 248/248 units (68 already stored) in 0:10:00"
    everything_stored = PlainBar(Console(file=buf), "q · arc_easy · held-out", 6, "units", clock=clock)
    clock.t += 61
    everything_stored.advance(3, stored=True)  # no unit computed yet: no rate to draw an ETA from
    assert lines(buf)[-1] == "q · arc_easy · held-out: 3/6 units (3 already stored), 0:01:01 elapsed, ETA ?"


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


def test_phase_bars_on_a_terminal_say_how_many_units_were_already_stored():
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=True, width=120)
    advance = phase_bars(out)("m · t · damped", 10)
    advance("t: 4 stored", 4, stored=True)
    advance("t 0..3", 1)
    advance("m · t · damped", -1)
    assert "m · t · damped (4 already stored)" in buf.getvalue()
