"""The study report: one self-contained HTML page (figures embedded as PNG data URIs, the stylesheet inlined
from report/style.css), its figure files and the CSV of every table, written from a run directory's
``results.csv`` and ``study.json`` through the typed reader (`frankenlm.study.results.read_results`).

A pure function of those two files: it never loads or runs a model, and the same inputs give the same bytes.
It renders the rows' verdicts (`better`, `confirmed`, ...), the groups' rankings and Pareto fronts; it computes
none of them. Figures: report/figures.py; written answers: report/prose.py.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from frankenlm.report import figures as F
from frankenlm.report.fmt import TOP_N, describe, group_slug, title
from frankenlm.report.fmt import digits as _digits
from frankenlm.report.fmt import duration as _duration
from frankenlm.report.fmt import esc as _e
from frankenlm.report.fmt import gain_sense as _gain_sense
from frankenlm.report.fmt import gci as _gci
from frankenlm.report.fmt import num as _num
from frankenlm.report.fmt import pct as _pct
from frankenlm.report.fmt import plural as _plural
from frankenlm.report.fmt import pval as _p
from frankenlm.report.fmt import si as _si
from frankenlm.report.fmt import slug as _slug
from frankenlm.report.prose import answers, summary_line
from frankenlm.study.results import Group, ResultRow, read_results
from frankenlm.study.results import fin as _fin

__all__ = ["write_report", "REPORT_NAME", "FIGURE_DIR", "TABLE_DIR", "TOP_N"]

REPORT_NAME = "report.html"
FIGURE_DIR = F.FIGURE_DIR
TABLE_DIR = "tables"


def _f(x: Any) -> float:
    """A study.json number, NaN for anything empty or unparsable."""
    try:
        return float(x) if x is not None and str(x).strip() else math.nan
    except (TypeError, ValueError):
        return math.nan


def _css() -> str:
    return resources.files("frankenlm.report").joinpath("style.css").read_text(encoding="utf-8")


def _write_csv(run_dir: Path, name: str, rows: list[dict]) -> str:
    d = run_dir / TABLE_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.csv"
    cols = list(dict.fromkeys(k for r in rows for k in r)) if rows else ["empty"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return f"{TABLE_DIR}/{name}.csv"


def _html_table(
    headers: list[str], body: list[list[str]], csv_path: str | None = None, cls: str = "", sub: list[str] | None = None
) -> str:
    """A table; `sub` adds a full-width second line under each row (e.g. a long command)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{c}</td>" for c in r)
        + "</tr>"
        + (f'<tr class="sub"><td></td><td colspan="{len(headers) - 1}">{sub[k]}</td></tr>' if sub else "")
        for k, r in enumerate(body)
    )
    note = f'<p class="file">CSV: {_e(csv_path)}</p>' if csv_path else ""
    return (
        f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{note}'
    )


def _top_table(run_dir: Path, g: Group) -> str:
    top = g.ranked[:TOP_N]
    if not top:
        return '<p class="omit">No configuration has a full-budget search estimate, so there is no top table.</p>'
    d = _digits(g)
    csv_rows, body, cmds = [], [], []
    for rank, r in enumerate(top, 1):
        shrink = r.gain - r.heldout_gain if r.remeasured else math.nan
        csv_rows.append(
            {
                "rank": rank,
                "model": g.model,
                "task": g.task,
                "metric": g.metric,
                "config": r.config,
                "design": r.design,
                "params": describe(r),
                "gain": r.gain,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p_holm": r.p_holm,
                "significant": int(r.significant),
                "heldout_gain": r.heldout_gain,
                "heldout_ci_low": r.heldout_ci_low,
                "heldout_ci_high": r.heldout_ci_high,
                "shrinkage": shrink,
                "confirmed": int(r.confirmed),
                "heldout_p_holm": r.heldout_p_holm,
                "heldout_better": int(r.heldout_better),
                "fp32_gain": r.fp32_gain,
                "extra_flops_per_token": r.extra_flops_per_token,
                "extra_flops_pct": r.extra_flops_pct,
                "kv_bytes_per_token": r.kv_bytes_per_token,
                "export_command": r.export_command,
            }
        )
        verdict = (
            '<span class="ok">confirmed</span>'
            if r.confirmed
            else '<span class="warn">not confirmed</span>'
            if r.better and r.remeasured
            else f'<span class="ok">better on held-out alone</span> (Holm p {_p(r.heldout_p_holm)})'
            if r.heldout_better
            else ""
        )
        body.append(
            [
                str(rank),
                f"<code>{_e(r.config)}</code>",
                _e(describe(r)),
                _gci(r.gain, r.ci_low, r.ci_high, d) + (" <b>*</b>" if r.better else ""),
                _p(r.p_holm),
                _gci(r.heldout_gain, r.heldout_ci_low, r.heldout_ci_high, d) + (f"<br>{verdict}" if verdict else ""),
                _num(shrink, d),
                _num(r.fp32_gain, d),
                f"{_pct(r.extra_flops_pct)}<br><span class=small>{_si(r.extra_flops_per_token, 'FLOP')}</span>",
            ]
        )
        cmds.append(f"export: <code class=cmd>{_e(r.export_command)}</code>" if r.export_command else "export: —")
    path = _write_csv(run_dir, f"top_{group_slug(g)}", csv_rows)
    headers = [
        "#",
        "config",
        "design",
        "search gain [95% CI]",
        "p (Holm)",
        "held-out gain [95% CI]",
        "shrinkage",
        "fp32 gain",
        "extra FLOPs/token",
    ]
    n, s, h, k = g.shrinkage()
    if n:
        wc = (
            f"Winner's curse: across the {_plural(n, 'configuration')} re-measured on held-out items, the mean "
            f"search gain is {_num(s, d)} and the mean held-out gain {_num(h, d)}: a mean shrinkage of "
            f"{_num(k, d)} {_e(g.metric)} from search to held-out."
        )
    else:
        wc = "No configuration was re-measured on held-out items, so the shrinkage from search to held-out is unknown."
    return (
        f"<h3>Top configurations by search gain</h3>"
        f'<p class="small">Early-stopped configurations excluded; at most {TOP_N}. Gains in {_e(g.metric)}, '
        f"{_e(_gain_sense(g))}. <b>*</b> = significantly better on search (Holm 5%, CI excludes 0). "
        f"Shrinkage = search gain − held-out gain.</p>"
        + _html_table(headers, body, path, "top", sub=cmds)
        + f'<p class="note">{wc}</p>'
    )


def _header(run_dir: Path, study: dict, groups: list[Group], rows: list[ResultRow]) -> str:
    models = [m for m in study.get("models") or [] if isinstance(m, dict)]
    if not models:
        models = [
            {"name": m, "depth": next((g.depth for g in groups if g.model == m), None)}
            for m in dict.fromkeys(r.model for r in rows)
        ]
    tasks = [t for t in study.get("tasks") or [] if isinstance(t, dict)]
    if not tasks:
        tasks = [
            {"name": t, "primary_metric": next(g.metric for g in groups if g.task == t)}
            for t in dict.fromkeys(g.task for g in groups)
        ]
    mrows = [{"model": m.get("name"), "depth": m.get("depth"), "params": m.get("params")} for m in models]
    mpath = _write_csv(run_dir, "models", mrows)
    mtable = _html_table(
        ["model", "layers", "parameters"],
        [[_e(r["model"]), _e(r["depth"] if r["depth"] is not None else "—"), _si(_f(r["params"]))] for r in mrows],
        mpath,
    )
    trows = []
    for t in tasks:
        name = t.get("name")
        full = [
            r.n_tokens for r in rows if r.task == name and not r.stopped_early and r.n_tokens and r.design != "base"
        ]
        trows.append(
            {
                "task": name,
                "primary_metric": t.get("primary_metric"),
                "higher_is_better": t.get("higher_is_better"),
                "search_items": t.get("search_items"),
                "heldout_items": t.get("heldout_items"),
                "search_tokens": t.get("search_tokens"),
                "median_scored_tokens_per_config": float(np.median(full)) if full else math.nan,
            }
        )
    tpath = _write_csv(run_dir, "tasks", trows)
    yn = lambda v: "—" if v is None else ("higher" if str(v).lower() in ("1", "true") else "lower")  # noqa: E731
    ttable = _html_table(
        [
            "task",
            "primary metric",
            "better",
            "search items",
            "held-out items",
            "search token budget",
            "scored tokens / config (median)",
        ],
        [
            [
                _e(r["task"]),
                _e(r["primary_metric"] or "—"),
                yn(r["higher_is_better"]),
                _e(r["search_items"] if r["search_items"] is not None else "—"),
                _e(r["heldout_items"] if r["heldout_items"] is not None else "—"),
                _si(_f(r["search_tokens"])),
                _si(r["median_scored_tokens_per_config"]),
            ]
            for r in trows
        ],
        tpath,
    )
    meta = []
    meta.append(("Models", ", ".join(_e(m.get("name")) for m in models) or "—"))
    meta.append(("Tasks", ", ".join(_e(t.get("name")) for t in tasks) or "—"))
    meta.append(
        (
            "Designs",
            ", ".join(_e(x) for x in study.get("designs") or [])
            or ", ".join(_e(x) for x in dict.fromkeys(r.design for r in rows if r.design != "base"))
            or "—",
        )
    )
    dtype = study.get("dtype")
    own = {}  # tasks in another dtype than the study's (a task may name its own)
    for t in tasks:
        if t.get("dtype") and t.get("dtype") != dtype:
            own.setdefault(t["dtype"], []).append(t.get("name"))
    meta.append(
        (
            "dtype",
            _e(dtype or "—") + "".join(f" ({_e(d)}: {', '.join(_e(n) for n in names)})" for d, names in own.items()),
        )
    )
    budgets = ", ".join(
        f"{_e(t.get('name'))}: {_si(_f(t.get('search_tokens')), 'tokens')}"
        for t in tasks
        if _fin(_f(t.get("search_tokens")))
    )
    meta.append(("Search token budgets", budgets or "—"))
    started, finished = study.get("started"), study.get("finished")
    took = "—"
    try:
        if started and finished:
            delta = datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))
            took = _duration(delta.total_seconds())
    except ValueError:
        pass
    timings = study.get("timings") or {}
    if took == "—" and isinstance(timings, dict) and _fin(_f(timings.get("total"))):
        took = _duration(_f(timings["total"]))
    meta.append(("Time taken", f"{took} (started {_e(started or '—')}, finished {_e(finished or '—')})"))
    if isinstance(timings, dict) and timings:
        meta.append(
            ("Timings", ", ".join(f"{_e(k)}: {_duration(_f(v)) if _fin(_f(v)) else _e(v)}" for k, v in timings.items()))
        )
    es = study.get("early_stopping")
    n_stop = sum(r.stopped_early for r in rows)
    if isinstance(es, dict):
        es_txt = (
            ", ".join(f"{_e(k)}={_e(v)}" for k, v in es.items())
            + f" — {n_stop} (model, config, task) rows stopped early"
        )
    else:
        es_txt = "off" if not n_stop else f"{n_stop} rows stopped early"
    meta.append(("Early stopping", es_txt))
    meta.append(("Command", f"<code class=cmd>{_e(study.get('command') or '—')}</code>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta)
    missing = "" if study else '<p class="warn">study.json is missing: header details are derived from results.csv.</p>'
    return f'<dl class="meta">{dl}</dl>{missing}<h3>Models</h3>{mtable}<h3>Tasks</h3>{ttable}'


def _omit(what: str, g: Group) -> str:
    return f'<p class="omit">The {what} design wasn\'t run for {_e(title(g))}, so its figure is omitted.</p>'


def write_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.html (self-contained), RUN_DIR/figures/*.png and RUN_DIR/tables/*.csv from
    RUN_DIR/results.csv and RUN_DIR/study.json. Returns the report's path. Never loads a model."""
    run_dir = Path(run_dir)
    res = read_results(run_dir)
    rows, study = res.rows, res.study
    groups = res.groups()
    figs = F.Figures(run_dir)
    tdir = run_dir / TABLE_DIR
    if tdir.is_dir():
        for old in tdir.glob("*.csv"):
            old.unlink()
    import matplotlib

    with matplotlib.rc_context(
        {
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.hashsalt": "frankenlm",
            "figure.max_open_warning": 0,
        }
    ):
        header = _header(run_dir, study, groups, rows)
        sections, summaries, nav = [], [], []
        for g in groups:
            text, st = summary_line(g)
            summaries.append(st)
            parts = [f'<section id="g-{_e(group_slug(g))}"><h2>{_e(title(g))}</h2><p>{text}</p>']
            for design, fn, name, caption in (
                (
                    "repeat-block",
                    F.fig_heatmap,
                    "heatmap",
                    "Gain of running block i..j twice, over (i, j); colour in metric units, positive = better (blue). "
                    "Dot: significant after Holm; ×: early-stopped by racing (estimate from the slices it saw); orange "
                    "square: confirmed on held-out items; grey: not run; white diamond: an outlier beyond the colour "
                    f"scale (|gain| over {F.CLIP_FENCE:g}× the {F.CLIP_PERCENTILE:g}th percentile on its side), drawn "
                    "in the end colour so that one catastrophic block cannot wash out the rest.",
                ),
                (
                    "repeat-layer",
                    F.fig_repeats,
                    "repeat_layer",
                    "Left: gain vs number of extra copies of one layer, with 95% CIs (ring: significant, ×: "
                    "early-stopped). Right: each layer's best gain and the count that gives it.",
                ),
                (
                    "sublayer",
                    F.fig_sublayers,
                    "sublayer",
                    "Repeating only the attention sublayer, only the MLP sublayer, or the whole block of each layer "
                    "once (95% CIs).",
                ),
            ):
                fig = fn(g) if g.has(design) else None
                parts.append(
                    figs.add(fig, f"{group_slug(g)}_{name}", caption, f"{title(g)}: {name}")
                    if fig is not None
                    else _omit(design, g)
                )
            fig = F.fig_scales(g)
            if fig is not None:
                parts.append(
                    figs.add(
                        fig,
                        f"{group_slug(g)}_scales",
                        "Gain vs the branch scale of the repeated "
                        "copy, one line per repeated layer or block (dashed: attention only, dotted: "
                        "MLP only), with 95% CIs; scale 1 is the plain repeat where it was measured.",
                        f"{title(g)}: gain vs scale",
                    )
                )
            fig = F.fig_cost(g)
            if fig is not None:
                parts.append(
                    figs.add(
                        fig,
                        f"{group_slug(g)}_cost",
                        "Gain vs extra compute per token for every configuration; "
                        "the red step line is the Pareto front (no configuration is both cheaper and "
                        "better), with 95% CIs on its points.",
                        f"{title(g)}: quality vs cost",
                    )
                )
            else:
                parts.append(
                    '<p class="omit">No configuration has both a gain and a FLOPs figure, so the '
                    "quality-vs-cost figure is omitted.</p>"
                )
            parts.append(_top_table(run_dir, g))
            parts.append("</section>")
            sections.append("".join(parts))
            nav.append(f'<li><a href="#g-{_e(group_slug(g))}">{_e(title(g))}</a></li>')
        size_html = ""
        if len({g.model for g in groups}) > 1:
            chunks = []
            bpb_tasks = [
                t
                for t in dict.fromkeys(g.task for g in groups)
                if any(F._is_bpb(g.metric) for g in groups if g.task == t)
            ]
            for t in bpb_tasks:
                gs = [g for g in groups if g.task == t]
                fig = F.fig_sizes(gs) if len(gs) > 1 else None
                if fig is not None:
                    chunks.append(
                        figs.add(
                            fig,
                            f"sizes_{_slug(t)}",
                            "Gain vs normalised depth, one series per model, in bits per byte (positive = fewer bits).",
                            f"model size: {t}",
                        )
                    )
                else:
                    chunks.append(
                        f'<p class="omit">No design was run on more than one model for {_e(t)}, so there '
                        "is no size comparison for it.</p>"
                    )
            if not bpb_tasks:
                chunks.append('<p class="omit">No bits-per-byte task was run, so the model-size figure is omitted.</p>')
            size_html = '<section id="sizes"><h2>Model size</h2>' + "".join(chunks) + "</section>"
            nav.append('<li><a href="#sizes">Model size</a></li>')
        spath = _write_csv(run_dir, "summary", summaries)
        answers_html = answers(groups, study) if groups else "<p>results.csv holds no rows.</p>"
    page_title = f"frankenlm study report — {study.get('preset') or run_dir.name}"
    models_txt = ", ".join(dict.fromkeys(g.model for g in groups)) or "no models"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(page_title)}</title><style>{_css()}</style></head>
<body>
<header><h1>{_e(page_title)}</h1><p class="sub">{_e(models_txt)} · {_e(study.get("dtype") or "dtype unknown")}</p>
{header}</header>
<nav><h3>Contents</h3><ul><li><a href="#answers">Answers</a></li>{"".join(nav)}
<li><a href="#method">Method</a></li></ul></nav>
<section id="answers"><h2>Answers</h2>
<p class="small">Generated from the numbers. A configuration counts as an improvement only if its search CI excludes 0
with Holm significance at 5% <em>and</em> its held-out CI excludes 0 in the same direction. Per-group counts:
{_e(spath)}.</p>{answers_html}</section>
{"".join(sections)}
{size_html}
<section id="method"><h2>Method</h2><p class="small">Each gain is a paired difference against the base model on the same
items, signed so that positive = better, in the metric's units, with a 95% paired CI. p-values are adjusted with
Holm's method across each model's configurations on a task; "significant" means Holm-adjusted p &lt; 0.05. Early-stopped
configurations were dropped by racing after a slice of search items (any slice but the last, once enough documents
had been seen) because their paired interval showed them clearly worse than the base and than the current last of
the re-measured leaders (on benchmarks scored by accuracy, racing decides on a continuous per-item statistic: the
change in the gold choice's log-likelihood margin over the best wrong choice, per character for acc_norm; the
reported metric stays the accuracy with its own CI); their estimates come from the slices they saw, are wider, and they are excluded from the
top tables and the Pareto front. The top configurations were re-measured on
held-out items to correct for the winner's curse; shrinkage = search gain − held-out gain. Costs: extra FLOPs per
token over the base, KV-cache bytes per token; repeated layers reuse the base weights (zero extra parameter bytes).
This page is written from results.csv and study.json only.</p></section>
</body></html>
"""
    out = run_dir / REPORT_NAME
    out.write_text(page, encoding="utf-8")
    return out
