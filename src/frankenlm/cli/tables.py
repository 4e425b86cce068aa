"""Rich tables for what the library returns: `frankenlm eval` summaries and efficiency figures, the task list."""

from __future__ import annotations

import math

from rich.table import Table

from frankenlm.eval.comparison import EvalRun, TaskSummary


def pm(v: float, se: float | None) -> str:
    """'value ± se' with 4 / 2 significant digits (no ± part when the error is undefined)."""
    return f"{v:.4g}" + ("" if se is None or not math.isfinite(se) else f" ± {se:.2g}")


def num(v) -> str:
    """Large numbers with thousands separators, floats to 4 significant digits, anything else as str."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_table(s: TaskSummary) -> Table:
    compared = any(r.diff is not None for r in s.rows)
    t = Table(title=f"{s.task} ({s.n_items} items)" + (f" — plan {s.plan}" if s.plan else ""))
    t.add_column("metric")
    t.add_column("value ± se", justify="right")
    if compared:
        for c in ("base ± se", "difference [95% CI]", "p"):
            t.add_column(c, justify="right")
    for r in s.rows:
        row = [r.metric + ("" if r.higher_is_better else " (lower is better)"), pm(r.value, r.se)]
        if compared:
            row += [
                pm(r.base_value, r.base_se),
                f"{r.diff:+.4g} [{r.diff_low:+.4g}, {r.diff_high:+.4g}]",
                f"{r.p_value:.3g}",
            ]
        t.add_row(*row)
    return t


def efficiency_table(efficiency: dict) -> Table:
    eff = Table(title="efficiency")
    eff.add_column("")
    for k in efficiency:
        eff.add_column(k, justify="right")
    keys = next(iter(efficiency.values())).keys() if efficiency else []
    for key in keys:
        eff.add_row(key, *[num(v[key]) for v in efficiency.values()])
    return eff


def eval_tables(run: EvalRun) -> list[Table]:
    """One table per task, then the efficiency table."""
    return [summary_table(s) for s in run.summaries()] + [efficiency_table(run.efficiency)]


def tasks_table(rows: list[dict]) -> Table:
    """`frankenlm tasks`: name, output type, metrics (*: primary, ↓: lower is better), item counts (when counted), description."""
    counted = any("items" in r for r in rows)
    t = Table(title="frankenlm tasks", caption="* ranked by in studies   ↓ lower is better")
    for c in ("name", "output type", "metrics"):
        t.add_column(c)
    if counted:
        for c in ("items", "search", "heldout"):
            t.add_column(c, justify="right")
    t.add_column("description")
    for r in rows:
        hib = r.get("higher_is_better", {})
        marks = {m: ("*" if m == r.get("primary") else "") + ("" if hib.get(m, True) else " ↓") for m in r["metrics"]}
        cells = [r["name"], r["output_type"], ", ".join(m + marks[m] for m in r["metrics"])]
        if counted:
            cells += [num(r[k]) if k in r else "—" for k in ("items", "search", "heldout")]
        t.add_row(*cells, r["description"])
    return t
