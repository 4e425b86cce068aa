"""`docs/FINDINGS.md` from study results: the answers to the project's questions, written from the numbers.

`write_findings(run_dirs, out)` reads each run directory's typed results (`frankenlm.study.results`) and writes
one Markdown document; nothing is computed from a model, and no sentence carries a number that is not in the
rows, so text and numbers cannot drift. Every gain is quoted with its paired 95% CI, its Holm-adjusted p-value
(across one model's configurations on one task) and its held-out re-measure where there is one. A gain counts
only when it is `confirmed`: Holm-significant on search items *and* its held-out CI above 0 (the pre-registered
rule). A configuration whose held-out gain alone is significant (`heldout_better`: Holm across the task's
re-measured configurations, the confirmatory family of a select-then-test design) is reported beside, never
merged into, the confirmed ones, with both stages' numbers, and is exported and shown generating like them.

Questions answered, per model: which single-layer repeats help or hurt (on normalised depth, the first layers
singled out, whole and attention-only), what the strided (i, j) block scan finds (verdict counts, the best and worst
block, whether block length decides; RYS-style heatmaps), how the gain changes with the number of repeats, how the
picture changes with size, whether bits per byte ranks configurations as the benchmarks do (Spearman rho over the
configurations both measured), the per-item ceiling (how many of the base's wrong answers some configuration gets
right, against what the configuration chosen on search items fixes on held-out items), the winner's curse (search →
held-out shrinkage), gain per extra FLOP, and the compute each model took (from the units' records).
The document opens with "The answers" ("so far" while the run is unfinished): one plain answer per question,
each sentence counted from the same rows (`_answers_lines`), before the sections that hold the detail.
Those configurations are shown exported, reloaded and generating from `showcase.json` (written by the one
step that loads models, `frankenlm findings --showcase`; see `frankenlm.cli.showcase`). Figures (matplotlib,
the report's own) are written to a folder beside the document and linked from it.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from frankenlm.model.zoo import display_name
from frankenlm.report.fmt import plural
from frankenlm.report.prose import block_lengths
from frankenlm.study.results import ALPHA, Group, ResultRow, fin, read_results
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import PAUSE_EXCESS_S, PAUSE_FACTOR

EARLY = 0.15  # "the first layers": normalised depth below this
FIGURES = "findings"  # the figures' folder, beside the document


def _pm(r: ResultRow, scale: float) -> str:
    if not fin(r.gain):
        return "—"
    return f"{scale * r.gain:+.2f} [{scale * r.ci_low:+.2f}, {scale * r.ci_high:+.2f}]"


def _held(r: ResultRow, scale: float) -> str:
    if not fin(r.heldout_gain):
        return "—"
    return f"{scale * r.heldout_gain:+.2f} [{scale * r.heldout_ci_low:+.2f}, {scale * r.heldout_ci_high:+.2f}]"


def _p(x: float) -> str:
    return "—" if not fin(x) else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _unit(g: Group) -> tuple[float, str]:
    """Accuracy in points; bits per byte in milli-bits."""
    if g.metric.startswith("acc") or g.metric == "exact_match":
        return 100.0, f"{g.metric} points"
    return 1000.0, f"milli-{g.metric}"


def _is_acc(g: Group) -> bool:
    return _unit(g)[1].endswith("points")


def _by_kind(groups: list[Group]) -> list[tuple[str, list[Group]]]:
    """The groups measured in bits per byte, then those measured in accuracy."""
    return [
        ("bits per byte", [g for g in groups if not _is_acc(g)]),
        ("accuracy", [g for g in groups if _is_acc(g)]),
    ]


def _full(g: Group) -> dict[str, ResultRow]:
    """The configurations measured on the full search budget, by plan text."""
    return {r.config: r for r in g.rows if not r.stopped_early and fin(r.gain)}


def _singles(g: Group) -> list[tuple[int, ResultRow]]:
    """(layer, row) of every single layer repeated once, with a finite gain."""
    return [(k, r) for (k, rep), r in g.layer_reps.items() if rep == 1 and fin(r.gain)]


def _verdict(r: ResultRow, g: Group) -> str:
    """`r`'s verdict in its group `g` (whose held-out check may not have run yet)."""
    if r.confirmed:
        return "**better, confirmed on held-out**"
    if r.better:
        if r.remeasured:
            return "better on search, not confirmed on held-out items"
        return (
            "better on search, not among those re-measured" if g.checked() else "better on search, not yet re-measured"
        )
    if r.heldout_better:
        return f"no significant difference on search; **better on held-out items** (Holm p {_p(r.heldout_p_holm)})"
    if r.worse:
        return "worse"
    return "no significant difference" + _partial(r, g)


def _partial(r: ResultRow, g: Group) -> str:
    """Why `r` holds fewer than all search items: racing stopped it (the task's walk is done), or its units are
    still being run (a task in progress: the store alone cannot tell a raced-out configuration from a pending
    one, so the text says how far it got instead)."""
    if not r.stopped_early:
        return ""
    if g.checked():
        return " (stopped early)"
    total = g.base.n_items if g.base is not None and g.base.n_items else None
    return f" (so far on {r.n_items or 0:,}" + (f" of {total:,}" if total else "") + " search items)"


MIN_RANKED = 3  # configurations a rank correlation needs


def _spearman(xs: list[float], ys: list[float]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(xs) < MIN_RANKED:
        return math.nan, math.nan
    res = spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue)


def _group_summary(g: Group) -> str:
    rows = [r for r in g.rows if not r.is_base]
    scale, unit = _unit(g)
    n_better = sum(r.better for r in rows)
    n_conf = sum(r.confirmed for r in rows)
    n_held = len(_heldout_only(g))
    n_worse = sum(r.worse for r in rows)
    best = g.ranked[0] if g.ranked else None
    line = (
        f"- **{g.task}** ({unit}; base {g.base.base_value if g.base else math.nan:.4g}): {plural(len(rows), 'configuration')}, "
        f"{n_better} better on search (Holm 5%), {n_conf} confirmed on held-out, "
        + (f"{n_held} better on held-out items alone, " if n_held else "")
        + f"{n_worse} worse"
    )
    if best is not None:
        line += f"; best on search `{best.config}` {_pm(best, scale)} (Holm p {_p(best.p_holm)}), held-out {_held(best, scale)}"
    n, s, h, shrink = g.shrinkage()
    if n:
        line += f"; winner's curse over {n} re-measured: search {scale * s:+.2f} → held-out {scale * h:+.2f}"
    return line


MIN_SCAN = 3  # blocks that make a scan (a task measures fewer when only selected configurations carry to it)


def _scan(g: Group) -> list[ResultRow]:
    """`g`'s (i, j) block repeats with a finite gain, when there are enough for a scan (else none)."""
    rows = g.block_rows()
    return rows if len(rows) >= MIN_SCAN else []


def _blocks_line(g: Group) -> str | None:
    """`g`'s strided (i, j) block scan in one line: how many blocks, their verdicts, the best and the worst on
    search (with held-out where re-measured), and whether block length decides the verdict."""
    rows = _scan(g)
    if not rows:
        return None
    scale, unit = _unit(g)
    depth = g.n_layers() or 1
    full = [r for r in rows if not r.stopped_early] or rows
    best, worst = max(full, key=lambda r: r.gain), min(rows, key=lambda r: r.gain)

    def at(r: ResultRow) -> str:
        return f"`{r.i}..{r.j}` (depth {r.i / depth:.2f}–{r.j / depth:.2f}) {_pm(r, scale)}"

    held = f", held-out {_held(best, scale)}" if best.remeasured else ""
    n_stop = sum(r.stopped_early for r in rows)
    stopped = (
        f"; racing stopped {n_stop} early, on a slice of the search items"
        if g.checked()
        else f"; {n_stop} so far on a slice of the search items"
    )
    return (
        f"- {g.model} · {g.task} ({unit}): {plural(len(rows), 'block')} "
        f"({_verdict_counts(rows)}{stopped if n_stop else ''}); best on search {at(best)} ({_verdict(best, g)}{held}); "
        f"worst {at(worst)} ({_verdict(worst, g)}). {block_lengths(g)}"
    )


def _layers_table(g: Group) -> list[str]:
    scale, unit = _unit(g)
    depth = g.n_layers() or 1
    out = [
        f"| layer (depth) | whole, r=1 ({unit}) | attention only | MLP only | held-out (whole) | verdict (whole) |",
        "|---|---|---|---|---|---|",
    ]
    layers = sorted({k for (k, r) in g.layer_reps if r == 1} | {k for (k, _s) in g.subs})
    for k in layers:
        whole = g.layer_rep(k, 1) or g.sub(k, "block")
        attn, mlp = g.sub(k, "attn"), g.sub(k, "mlp")
        cells = [_pm(x, scale) if x else "—" for x in (whole, attn, mlp)]
        out.append(
            f"| {k} ({k / depth:.2f}) | {cells[0]} | {cells[1]} | {cells[2]} | "
            f"{_held(whole, scale) if whole else '—'} | {_verdict(whole, g) if whole else '—'} |"
        )
    return out


def _repeats_lines(g: Group) -> list[str]:
    scale, unit = _unit(g)
    counts, curves = g.repeat_curves()
    out = []
    for k, pts in curves.items():
        if len(pts) < 2:
            continue
        seq = ", ".join(f"r={r}: {scale * row.gain:+.2f}" + ("*" if row.stopped_early else "") for r, row in pts)
        best_r = max(pts, key=lambda p: p[1].gain)[0]
        star = "stopped early" if g.checked() else "not on all search items yet"
        out.append(f"  - layer {k}: {seq} (best r={best_r}; {unit}; * = {star})")
    return out


def _proxy_pairs(groups: list[Group]):
    """Per model, every (bits-per-byte group, benchmark group): (model, p, a, the configurations both measured
    on the full budget, p's and a's full-budget rows by plan, Spearman rho and its p-value over them)."""
    for model in dict.fromkeys(g.model for g in groups):
        gs = [g for g in groups if g.model == model]
        for p in (g for g in gs if not _is_acc(g)):
            for a in (g for g in gs if _is_acc(g)):
                pf, af = _full(p), _full(a)
                common = sorted(set(pf) & set(af))
                rho, pv = _spearman([pf[c].gain for c in common], [af[c].gain for c in common])
                yield model, p, a, common, pf, af, rho, pv


def _proxy_lines(groups: list[Group]) -> list[str]:
    out = [
        f"- {model}: {p.task} vs {a.task}: Spearman rho {rho:+.2f} (p {_p(pv)}) over {len(common)} "
        "configurations both measured on the full search budget"
        if len(common) >= MIN_RANKED
        else f"- {model}: {p.task} vs {a.task}: not ranked yet, {plural(len(common), 'configuration')} both measured on the "
        f"full search budget (a rank correlation needs {MIN_RANKED})"
        for model, p, a, common, _pf, _af, rho, pv in _proxy_pairs(groups)
    ]
    intros = {
        False: "The configurations bits per byte selected (each bits-per-byte task's held-out-checked top, best "
        "first: the `selected` design measures them on the other tasks once it has run), on the benchmarks' "
        "search items:",
        True: "The configurations the swept benchmark selected (its held-out-checked top, best first), on the other "
        "benchmarks' search items:",
    }
    for from_benchmark, intro in intros.items():
        if transfer := _transfer_lines(groups, from_benchmark):
            out += ["", intro, "", *transfer]
    return out


def _selected(groups: list[Group], from_benchmark: bool = False):
    """Per model, every (selecting group p, benchmark group a): p's selected configurations (its rows re-measured
    on held-out items, best on search first) and, for those measured on a, (p's row, a's row). p is each
    bits-per-byte group, or with `from_benchmark` the model's swept benchmark (the one with the most
    configurations) and a every other benchmark."""
    for model in dict.fromkeys(g.model for g in groups):
        gs = [g for g in groups if g.model == model]
        benchmarks = [g for g in gs if _is_acc(g)]
        if from_benchmark:
            selectors = [max(benchmarks, key=lambda g: (len(g.rows), g.task))] if len(benchmarks) > 1 else []
        else:
            selectors = [g for g in gs if not _is_acc(g)]
        for p in selectors:
            picks = sorted((r for r in p.rows if r.remeasured and not r.is_base), key=lambda r: (-r.gain, r.config))
            for a in (g for g in benchmarks if g is not p):
                on_a = {r.config: r for r in a.rows if fin(r.gain)}
                yield model, p, a, picks, [(r, on_a[r.config]) for r in picks if r.config in on_a]


def _transfer_lines(groups: list[Group], from_benchmark: bool = False) -> list[str]:
    out = []
    for model, p, a, picks, got in _selected(groups, from_benchmark):
        if not got:
            continue
        ps, pu = _unit(p)
        scale, unit = _unit(a)
        for rp, ra in got:
            out.append(
                f"- {model}: {p.task}'s #{picks.index(rp) + 1} `{rp.config}` ({_pm(rp, ps)} {pu}, held-out "
                f"{_held(rp, ps)}) on {a.task}: {_pm(ra, scale)} {unit} over {ra.n_items or 0:,} items (Holm p "
                f"{_p(ra.p_holm)}; {_verdict(ra, a)}), held-out {_held(ra, scale)}"
            )
    return out


def _by_size(groups: list[Group], params: dict[str, int]):
    """Per task measured on two or more models: (task, scale, unit, [(group, its configuration rows, the median
    gain of a single layer repeated once)]), the models from smallest to largest."""
    for task in dict.fromkeys(g.task for g in groups):
        gs = sorted([g for g in groups if g.task == task], key=lambda g: (params.get(g.model, 0), g.model))
        if len(gs) < 2:
            continue
        scale, unit = _unit(gs[0])
        per = []
        for g in gs:
            singles = [r.gain for _k, r in _singles(g)]
            rows = [r for r in g.rows if not r.is_base and fin(r.gain)]
            per.append((g, rows, statistics.median(singles) if singles else math.nan))
        yield task, scale, unit, per


def _median_single(median: float, scale: float, label: str) -> str:
    """`label` and the median gain of a single layer repeated once, or "no single-layer scan" where the task
    measured none (a confirmation task: `_by_size` gives nan)."""
    return f"{label} {scale * median:+.2f}" if math.isfinite(median) else "no single-layer scan"


def _size_lines(groups: list[Group], params: dict[str, int]) -> list[str]:
    """Per task, the models from smallest to largest: how many configurations are worse, the best one, and the
    median gain of a single layer repeated once."""
    out = []
    for task, scale, unit, per in _by_size(groups, params):
        out.append(f"- **{task}** ({unit}), smallest model first:")
        for g, rows, median in per:
            size = f"{params[g.model] / 1e6:,.0f}M parameters, " if g.model in params else ""
            line = (
                f"  - {g.model} ({size}{g.n_layers()} layers): {sum(r.worse for r in rows)} of "
                f"{plural(len(rows), 'configuration')} worse, {sum(r.better for r in rows)} better; "
                + _median_single(median, scale, "median single-layer repeat")
            )
            if g.ranked:
                line += f"; best `{g.ranked[0].config}` {_pm(g.ranked[0], scale)}"
            out.append(line)
    return out


def _ceiling_lines(studies: list[dict]) -> list[str]:
    out = []
    for study in studies:
        for model, tasks in (study.get("ceiling") or {}).items():
            for task, c in tasks.items():
                if not c.get("search_base_wrong"):
                    continue
                head = f"- {model} · {task}: the base gets {c['search_base_wrong']} of {c['search_items']} search items wrong"
                if not c.get("configurations"):
                    out.append(f"{head}; no configuration is measured on the full search budget yet.")
                    continue
                line = (
                    f"{head}; some one of {plural(c['configurations'], 'configuration')} gets {c['search_fixed_by_some']} of "
                    f"them right ({100 * c['search_fixed_by_some'] / c['search_base_wrong']:.0f}%)"
                )
                if c.get("chosen"):
                    line += (
                        f". On held-out items the configuration chosen on search (`{c['chosen']}`) fixes "
                        f"{c['chosen_fixed']} of the base's {c['heldout_base_wrong']} wrong answers and breaks "
                        f"{c['chosen_broken']} right ones (net {c['chosen_fixed'] - c['chosen_broken']:+d} of "
                        f"{c['heldout_items']}); the re-measured configurations ({c['heldout_remeasured']}) together "
                        f"fix {c['heldout_fixed_by_some']}"
                    )
                out.append(line + ".")
    if out:
        out.append("")
        out.append(
            "Some configuration always flips many items: with dozens of configurations, items the base gets "
            "narrowly wrong are flipped by chance too, so the search-side ceiling is an upper bound. The gap between "
            "it and the chosen configuration's held-out net gain is what a per-input layer plan (a router choosing "
            "the plan per item) could at most win, before paying for choosing."
        )
    return out


def _compute_lines(studies: list[dict]) -> list[str]:
    """Per model, task and dtype, the units stored and the hours they took to score (from each unit's record,
    pauses of the run taken out: `Store.compute`). Units the studies' protocol does not use (a task it does not
    name, or a lower precision than the task's own: an earlier protocol's, kept in the archive) are marked and
    left out of the protocol's total."""
    per: dict[str, dict[tuple[str, str], list[float]]] = {}
    protocol: dict[str, str] = {}  # task -> its dtype in the studies' spec
    for st in studies:
        protocol.update({t["name"]: t.get("dtype", st.get("dtype")) for t in st.get("tasks", [])})
        protocol.update(st.get("task_dtypes") or {})  # also the spec's tasks without results yet
        for model, tasks in (st.get("compute") or {}).items():
            for task, dtypes in tasks.items():
                for dtype, c in dtypes.items():
                    acc = per.setdefault(model, {}).setdefault((task, dtype), [0, 0.0, 0])
                    acc[0] += c["units"]
                    acc[1] += c["seconds"]
                    acc[2] += c.get("paused_units", 0)
    if not per:
        return []

    def used(task: str, dtype: str) -> bool:  # the task's own dtype, or its fp32 re-checks
        return task in protocol and dtype in (protocol[task], "float32")

    paused = sum(v[2] for rows in per.values() for v in rows.values())
    lines = [
        "Scoring time of every stored unit (a configuration on one slice of items, search, held-out and fp32 "
        "re-checks alike), summed from the units' own records: model time on the machine that computed them, "
        "without model loading or bookkeeping. A resumed session re-runs a base pass to rebuild the prefix states "
        "its configurations reuse on a slice whose base unit an earlier session stored: units record that pass, "
        "cut at the deepest layer the slice's remaining configurations reuse, and it is counted; units stored "
        "before frankenlm recorded it leave it out (up to one base unit's time per slice resumed that way). "
        "A record is wall time, so a unit scored while the run was paused "
        "(or shared its cores with another job) holds the pause: "
        f"{paused:,} such units (over {PAUSE_FACTOR:g}x their task's median time per item, and "
        f"more than {PAUSE_EXCESS_S:g} s above it) count at the median rate instead. Units marked *unused* are an "
        "earlier protocol's (a task this one does not measure, or a lower precision than its own), kept in the "
        "archive; the protocol's total leaves them out.",
        "",
        "| model | task | dtype | units | hours |",
        "|---|---|---|---|---|",
    ]
    for model, rows in per.items():
        for (task, dtype), (n, sec, _) in sorted(rows.items()):
            mark = "" if used(task, dtype) else " (*unused*)"
            lines.append(f"| {model} | {task}{mark} | {dtype} | {n:,} | {sec / 3600:.2f} |")
        mine = [v for k, v in rows.items() if used(*k)]
        n, sec = sum(v[0] for v in mine), sum(v[1] for v in mine)
        lines.append(f"| {model} | **this protocol** | | {n:,} | **{sec / 3600:.2f}** |")
        if len(mine) < len(rows):
            n, sec = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
            lines.append(f"| {model} | all stored units | | {n:,} | {sec / 3600:.2f} |")
    return [*lines, ""]


def _coverage_lines(run_dirs: list[Path], groups: list[Group], studies: list[dict]) -> tuple[list[str], bool]:
    """Model × task: done (held-out check finished), in progress (search, or the held-out check running) or not
    started, per the studies' specs; a document from an unfinished run says so before anything else. A task
    counts as begun where units in its own dtype are stored (an earlier protocol's units in another precision do
    not begin it). Also whether every model × task of every spec is done."""
    import json

    out: list[str] = []
    complete = True
    for d, study in zip(run_dirs, studies, strict=True):
        sp = Path(d) / "spec.json"
        if not sp.is_file():
            continue
        spec = json.loads(sp.read_text(encoding="utf-8"))
        mp = Path(d) / "manifest.json"
        begun = json.loads(mp.read_text(encoding="utf-8")).get("models", {}) if mp.is_file() else {}
        tasks = [t["name"] for t in spec.get("tasks", [])]
        default = spec.get("dtype") or StudySpec.dtype  # a task's dtype, else the spec's, else StudySpec's default
        dtypes = {t["name"]: t.get("dtype") or default for t in spec.get("tasks", [])}
        out += ["| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        known = {g.model for g in groups} | set(begun)
        for source in spec.get("models", []):
            m = display_name(source)  # results name a model as loading it does: a path by its folder's name
            if m not in known and Path(source).name in known:  # a path that is not there on this machine
                m = Path(source).name
            cells = []
            for t in tasks:
                g = next((g for g in groups if g.model == m and t == g.task), None)
                if g is None:
                    if "compute" in study:  # units of the task in its own dtype
                        started = dtypes[t] in ((study["compute"] or {}).get(m) or {}).get(t, {})
                    else:  # a study.json written before the compute summary: the manifest decides
                        started = t in (begun.get(m) or {}).get("tasks", {})
                    cells.append("in progress (the base's search slices not all run)" if started else "not started")
                elif g.checked():
                    cells.append("done")
                elif n_re := g.n_remeasured():
                    cells.append(f"in progress (held-out check: {n_re} of {g.heldout_family()} re-measured)")
                else:
                    cells.append(f"in progress ({plural(len(g.rows), 'configuration')} so far)")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
            complete = complete and all(c == "done" for c in cells)
        out.append("")
    return out, complete and bool(out)


# ------------------------------------------------------------------------------------------ plain answers

HEALED = ("damped", "substep")  # designs whose repeats damp or sub-step the repeated update


def _heldout_only(g: Group) -> list[ResultRow]:
    """The rows of `g` significant on held-out items alone: not confirmed (the search stage's Holm test failed),
    but Holm-significant across the task's re-measured configurations."""
    return [r for r in g.rows if r.heldout_better and not r.confirmed]


def _both_stages(g: Group, r: ResultRow) -> str:
    """A held-out-alone row's two stages: held-out first (the test), then the search that selected it."""
    scale, unit = _unit(g)
    n_re, n_fam = g.n_remeasured(), g.heldout_family()
    family = (
        f"the {plural(n_fam, 'configuration')} re-measured"
        if n_re >= n_fam
        else f"the {plural(n_fam, 'configuration')} the held-out check re-measures, {n_re} so far, the rest as p = 1"
    )
    n_cfg = sum(not x.is_base for x in g.rows)
    return (
        f"{g.model} · {g.task} `{r.config}` held-out {_held(r, scale)} {unit} (Holm p {_p(r.heldout_p_holm)} "
        f"across {family}), search {_pm(r, scale)} (Holm p {_p(r.p_holm)} across {plural(n_cfg, 'configuration')})"
    )


def _bonferroni_all(groups: list[Group], held: list[tuple[Group, ResultRow]]) -> str:
    """Which of the `held` rows survive Bonferroni over every held-out test in the document (all models, tasks
    and measures): the strictest reading of a held-out gain."""
    n = sum(fin(r.heldout_p) for g in groups for r in g.rows if r.remeasured)
    keep = [f"`{r.config}` ({g.model} · {g.task})" for g, r in held if fin(r.heldout_p) and r.heldout_p * n < ALPHA]
    if len(held) == 1:
        return f" Bonferroni over all {n} held-out tests in this document {'keeps' if keep else 'does not keep'} it."
    return f" Bonferroni over all {n} held-out tests in this document keeps {len(keep)} of them" + (
        f": {', '.join(keep)}." if keep else "."
    )


def _elsewhere(groups: list[Group], g: Group, r: ResultRow) -> str:
    """How configuration `r` of group `g` does on its model's other tasks (search items; where measured)."""
    parts = []
    for o in groups:
        if o is g or o.model != g.model:
            continue
        x = next((y for y in o.rows if y.config == r.config and fin(y.gain)), None)
        if x is not None:
            scale, unit = _unit(o)
            parts.append(f"{o.task} {_pm(x, scale)} {unit} ({_verdict(x, o)})")
    return f"; on the model's other tasks: {'; '.join(parts)}" if parts else ""


def _pairs(gs: list[Group]) -> str:
    return ", ".join(f"{g.model} · {g.task}" for g in gs)


def _answer_help(groups: list[Group]) -> list[str]:
    out = []
    for kind, gs in _by_kind(groups):
        kind = "benchmark accuracy" if kind == "accuracy" else kind
        done = [g for g in gs if g.checked()]
        pending = f" ({len(gs) - len(done)} more still running)" if len(gs) > len(done) else ""
        if not done:
            out.append(f"  - on {kind}: no model × task finished yet{pending}.")
            continue
        conf = [(g, r) for g in done for r in g.rows if r.confirmed]
        if conf:
            parts = []
            for g, r in conf:
                scale, unit = _unit(g)
                base = g.base.base_value if g.base else math.nan
                rel = f" ({100 * r.gain / base:.2f}% of the base's {base:.4g})" if fin(base) and base else ""
                parts.append(
                    f"{g.model} · {g.task} `{r.config}` {_pm(r, scale)} {unit}{rel}, held-out {_held(r, scale)}"
                )
            n = len({(g.model, g.task) for g, _ in conf})
            out.append(
                f"  - on {kind}: yes in {n} of {len(done)} model × task finished{pending}: " + "; ".join(parts) + "."
            )
        else:
            best = [(g, r) for g in done for r in g.ranked if r.gain > 0 and fin(r.p_holm)]
            line = (
                f"  - on {kind}: no by the pre-registered rule, in all {len(done)} model × task finished "
                f"({_pairs(done)}){pending}"
            )
            if best:
                g, r = min(best, key=lambda x: (x[1].p_holm, -x[1].gain))
                scale, unit = _unit(g)
                line += (
                    f"; the closest on search (smallest Holm p), {g.model} · {g.task} `{r.config}` "
                    f"{_pm(r, scale)} {unit} on search "
                    f"(Holm p {_p(r.p_holm)}), re-measured {_held(r, scale)} on held-out items"
                )
            out.append(line + ".")
        held = [(g, r) for g in done for r in _heldout_only(g)]
        if held:
            out.append(
                f"    - {'also' if conf else 'but'} significant on held-out items alone (selected on search, then Holm "
                f"across the task's re-measured configurations), {plural(len(held), 'configuration')}: "
                + "; ".join(_both_stages(g, r) for g, r in held)
                + ". Not confirmed by the pre-registered rule, which also asks for a Holm-significant search gain; "
                + f"a select-then-test design counts {'it as a held-out gain' if len(held) == 1 else 'them as held-out gains'}."
                + _bonferroni_all(groups, held)
            )
    better = [r for g in groups for r in g.rows if r.better]
    healed = [r for r in better if r.design in HEALED]
    if better:
        out.append(
            f"  - of the {plural(len(better), 'configuration')} better on search anywhere, "
            f"{plural(len(healed), 'is a healed repeat', 'are healed repeats')} (damped or sub-stepped); "
            f"{plural(len(better) - len(healed), 'repeats', 'repeat')} layers at full strength."
        )
    return out


def _verdict_counts(rows: list[ResultRow]) -> str:
    w, b = sum(r.worse for r in rows), sum(r.better for r in rows)
    return f"{w} worse, {b} better, {len(rows) - w - b} without a significant difference"


def _answer_layers(groups: list[Group]) -> list[str]:
    out = []
    singles = [r for g in groups for _k, r in _singles(g)]
    if singles:
        out.append(f"  - a whole layer repeated once: {len(singles)} measured, {_verdict_counts(singles)}.")
    for g in groups:
        rows = _singles(g)
        if rows:
            scale, unit = _unit(g)
            k, r = max(rows, key=lambda x: x[1].gain)
            which = "best" if r.gain > 0 else "least harmful"
            out.append(
                f"  - {g.model} · {g.task}: the {which} single layer is {k} (depth {k / (g.n_layers() or 1):.2f}): "
                f"{_pm(r, scale)} {unit} ({_verdict(r, g)})."
            )
    early_sets = [
        (
            "single layers in the first layers (depth < 0.15), attention only, repeated once",
            [r for g in groups for (k, s), r in g.subs.items() if s == "attn" and k / (g.n_layers() or 1) < EARLY],
        ),
        (
            "single layers in the first layers (depth < 0.15), whole, repeated once",
            [r for g in groups for (k, s), r in g.subs.items() if s == "block" and k / (g.n_layers() or 1) < EARLY],
        ),
        (
            "blocks starting at layer 0, repeated once",
            [r for g in groups for (i, j), r in g.blocks.items() if i == 0 and j > 0],
        ),
    ]
    for name, rows in early_sets:
        rows = [r for r in rows if fin(r.gain)]
        if not rows:
            continue
        conf = [r for r in rows if r.confirmed]
        tail = (
            f"{len(conf)} confirmed on held-out items ({', '.join(f'`{r.config}` ({r.model} · {r.task})' for r in conf)})"
            if conf
            else "none confirmed on held-out items"
        )
        out.append(f"  - {name}: {len(rows)} measured, {_verdict_counts(rows)}; {tail}.")
    return out


def _answer_repeats(groups: list[Group]) -> list[str]:
    curves, worse_one = [], 0
    for g in groups:
        for pts in g.repeat_curves()[1].values():
            if len(pts) >= 2:
                curves.append([row.gain for _, row in pts])
                worse_one += pts[0][0] == 1 and pts[0][1].worse
    if not curves:
        return []
    best_one = sum(c.index(max(c)) == 0 for c in curves)
    falling = sum(all(b < a for a, b in zip(c, c[1:])) for c in curves)
    longest = max(len(c) for c in curves)
    return [
        f"  - over {len(curves)} layer curves (r = 1 to {longest} extra copies): the best count is r = 1 in "
        f"{best_one}, and the gain falls with every extra copy in {falling}; a single extra copy is itself "
        f"significantly worse than the base in {worse_one}."
    ]


def _answer_size(groups: list[Group], params: dict[str, int]) -> list[str]:
    out = []
    for task, scale, unit, per in _by_size(groups, params):
        parts = [
            f"{g.model} {100 * sum(r.worse for r in rows) / max(1, len(rows)):.0f}% worse, "
            + _median_single(median, scale, "median single layer")
            + ", best "
            + (f"{scale * g.ranked[0].gain:+.2f}" if g.ranked else "— (none run in full yet)")
            for g, rows, median in per
        ]
        out.append(f"  - {task} ({unit}), smallest first: " + "; ".join(parts) + ".")
    return out or ["  - needs two or more models measured on one task."]


def _answer_proxy(groups: list[Group]) -> list[str]:
    """Per model, bits-per-byte task and benchmark: over the configurations both measured on the full budget, the
    one bits per byte ranks first, its benchmark gain, the benchmark's own first, and the rank correlation."""
    out = []
    for m, p, a, common, pf, af, rho, pv in _proxy_pairs(groups):
        if len(common) < MIN_RANKED:
            continue
        pick = max(common, key=lambda c: (pf[c].gain, c))
        top = max(common, key=lambda c: (af[c].gain, c))
        scale, unit = _unit(a)
        out.append(
            f"  - {m}, {p.task} vs {a.task}, over the {len(common)} configurations both measured in full: "
            f"{p.task} ranks `{pick}` first, which scores {_pm(af[pick], scale)} {unit} on {a.task} "
            f"({_verdict(af[pick], a)}); {a.task}'s own first is `{top}` {_pm(af[top], scale)}; Spearman rho "
            f"{rho:+.2f} (p {_p(pv)})."
        )
    out += _answer_selected(groups)
    return out or ["  - needs a bits-per-byte task and a benchmark measured on one model."]


def _answer_selected(groups: list[Group], from_benchmark: bool = False) -> list[str]:
    """Per selecting task and benchmark: how the selector's first pick (of those measured there) scores on the
    benchmark, and the verdicts of all its picks measured there."""
    out = []
    for m, p, a, picks, got in _selected(groups, from_benchmark):
        if not got:
            continue
        scale, unit = _unit(a)
        rp, ra = got[0]
        counts = _verdict_counts([r for _, r in got])
        out.append(
            f"  - {m}: the configuration {p.task} selects first{'' if rp is picks[0] else ' (of those measured)'}, "
            f"`{rp.config}`, scores {_pm(ra, scale)} {unit} on {a.task} ({_verdict(ra, a)}); of its {len(picks)} "
            f"selected, {len(got)} measured on {a.task}: {counts}."
        )
    return out


def _answer_curse(groups: list[Group]) -> list[str]:
    out = []
    for kind, gs in _by_kind(groups):
        pts = [(g, *g.shrinkage()) for g in gs]
        pts = [(g, n, s, h) for g, n, s, h, _ in pts if n]
        if not pts:
            continue
        scale, unit = _unit(pts[0][0])
        n = sum(x[1] for x in pts)
        s = sum(x[1] * x[2] for x in pts) / n
        h = sum(x[1] * x[3] for x in pts) / n
        out.append(
            f"  - {kind}: the {plural(n, 'configuration')} re-measured on held-out items "
            f"{'averages' if n == 1 else 'average'} {scale * s:+.2f} {unit} on "
            f"search and {scale * h:+.2f} on held-out items (shrinkage {scale * (s - h):+.2f})."
        )
    return out


def _answers_lines(
    groups: list[Group], studies: list[dict], params: dict[str, int], complete: bool = False
) -> list[str]:
    """One plain answer per question, each a sentence built from the rows (the sections below give the detail);
    "so far" until every model × task the specs name is done."""
    lines = ["## The answers" if complete else "## The answers so far", ""]
    lines += ["- **Does repeating layers help?**", *_answer_help(groups)]
    lines += ["- **Which layers help or hurt?**", *(_answer_layers(groups) or ["  - no single-layer repeats yet."])]
    lines += ["- **How many repeats?**", *(_answer_repeats(groups) or ["  - no repeat curves yet."])]
    lines += ["- **How does it change with size?**", *_answer_size(groups, params)]
    lines += ["- **Does bits per byte pick what the benchmarks pick?**", *_answer_proxy(groups)]
    lines += [
        "- **Does what one benchmark selects carry to the others?**",
        *(_answer_selected(groups, from_benchmark=True) or ["  - needs the swept benchmark's picks on another."]),
    ]
    ceiling = [x.replace("- ", "  - ", 1) for x in _ceiling_lines(studies) if x.startswith("- ")]
    lines += ["- **How much could a per-input plan win?**", *(ceiling or ["  - needs an accuracy benchmark."])]
    lines += ["- **How much does selection overstate?**", *(_answer_curse(groups) or ["  - nothing re-measured yet."])]
    return [*lines, ""]


def _figures(groups: list[Group], fig_dir: Path | None, link_dir: str) -> dict[str, list[str]]:
    """Draw the findings' figures into `fig_dir` (none when it is None); Markdown image lines by section."""
    from frankenlm.report import figures as F

    if fig_dir is None:
        return {}
    fig_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}

    def save(section: str, fig, name: str, alt: str) -> None:
        if fig is None:
            return
        (fig_dir / f"{name}.png").write_bytes(F.png_bytes(fig))
        out.setdefault(section, []).append(f"![{alt}]({link_dir}/{name}.png)")

    for task in dict.fromkeys(g.task for g in groups):
        save("size", F.fig_sizes([g for g in groups if g.task == task]), f"sizes-{task}", f"gain vs depth, {task}")
    panels = [
        (k, _unit(gs[0])[0], "accuracy points" if _is_acc(gs[0]) else _unit(gs[0])[1], gs)
        for k, gs in _by_kind(groups)
        if gs
    ]
    save("curse", F.fig_curse(panels), "winners-curse", "search vs held-out gain of every re-measured configuration")
    for g in groups:
        slug = f"{g.model}-{g.task}"
        save("repeats", F.fig_repeats(g), f"repeats-{slug}", f"repeat curves, {g.model} · {g.task}")
        save("layers", F.fig_sublayers(g), f"sublayers-{slug}", f"sublayer repeats, {g.model} · {g.task}")
        save("healed", F.fig_scales(g), f"scales-{slug}", f"damped repeats, {g.model} · {g.task}")
        if _scan(g):
            save("blocks", F.fig_heatmap(g), f"blocks-{slug}", f"block scan, {g.model} · {g.task}")
    return out


def _cell(text: str) -> str:
    """Generated text as one Markdown table cell (pipes escaped, line breaks shown as ⏎)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ").strip() or "(nothing)"


def _showcase_lines(confirmed: list[tuple[Group, ResultRow]], showcase: list[dict], command: str) -> list[str]:
    """Each shown configuration's exports (reloaded in transformers) and generations beside the base's."""
    shown = {(e["model"], e["task"], e["config"]): e for e in showcase}
    lines: list[str] = []
    for g, r in confirmed:
        e = shown.get((g.model, g.task, r.config))
        if e is None:
            lines += [f"- {g.model} · {g.task} · `{r.config}`: not showcased yet (`{command} --showcase`)", ""]
            continue
        checks = "; ".join(
            f"{fmt}: not written ({x['skipped']})"
            if "skipped" in x
            else f"{fmt} ({x['bytes'] / 2**20:,.0f} MiB) loaded in transformers: max |Δ logit| "
            f"{x['max_abs_logit_diff']:.1e} from the zero-copy frankenmodel, greedy text "
            f"{'identical' if x['same_generations'] else 'DIFFERENT'}"
            for fmt, x in e["exports"].items()
        )
        lines += [
            f"### {g.model} · {g.task} · `{r.config}`",
            "",
            f"Exports ({e['dtype']}): {checks}.",
            "",
            f"Greedy continuations ({e['max_new_tokens']} tokens) of the first held-out items:",
            "",
            "| item | prompt (its end) | base | frankenmodel |",
            "|---|---|---|---|",
        ]
        for x in e["generations"]:
            end = x["prompt"][-120:]
            lines.append(
                f"| {x['item_id']} | {'…' if len(x['prompt']) > 120 else ''}{_cell(end)} | {_cell(x['base'])} | "
                f"{_cell(x['frankenmodel'])} |"
            )
        lines.append("")
    return lines


def findings_markdown(
    run_dirs: list[Path],
    sources: list[str] | None = None,
    fig_dir: Path | None = None,
    link_dir: str = FIGURES,
    showcase: list[dict] | None = None,
) -> str:
    """The document (see the module docstring) for the studies in `run_dirs` (named `sources` in its header),
    with its figures drawn into `fig_dir` and linked as `link_dir/NAME.png`, and the `showcase` entries
    (`frankenlm.cli.showcase`) of its confirmed configurations."""
    groups: list[Group] = []
    studies: list[dict] = []
    for d in run_dirs:
        res = read_results(Path(d))
        groups.extend(res.groups())
        studies.append(res.study)
    params = {m["name"]: int(m["params"]) for st in studies for m in st.get("models") or [] if m.get("params")}
    figs = _figures(groups, fig_dir, link_dir)
    models = list(dict.fromkeys(g.model for g in groups))
    command = "frankenlm findings " + " ".join(sources or [str(d) for d in run_dirs])
    coverage, complete = _coverage_lines(run_dirs, groups, studies)
    lines = [
        "# Findings",
        "",
        f"Generated by `{command}` from the studies' results; do not edit by hand. Gains are paired differences against the base model "
        "on the same items (positive = better), with 95% CIs; p-values are Holm-adjusted across one model's "
        "configurations on one task; *confirmed* means Holm-significant on the search items and a held-out CI "
        "above 0 (the pre-registered rule); *better on held-out items* means a held-out gain with its CI above 0 "
        "and its p-value Holm-adjusted across the task's re-measured configurations below 0.05, whatever the "
        "search verdict (the select-then-test reading, reported beside the confirmed ones). The CIs are each "
        "configuration's own, not corrected, so an interval can exclude 0 while the "
        "Holm verdict is *no significant difference*. *Stopped early* marks a configuration that racing dropped "
        "after a slice of the search items as clearly worse than the base and the leaders (on accuracy, by the "
        "gold choice's log-likelihood margin); its gain is over those items only.",
        "",
        f"Models covered: {', '.join(models) or 'none yet'}.",
        "",
        *coverage,
        *_answers_lines(groups, studies, params, complete),
        "## Does any configuration help?",
        "",
    ]
    confirmed = [(g, r) for g in groups for r in g.rows if r.confirmed]
    if confirmed:
        for g, r in confirmed:
            scale, unit = _unit(g)
            lines.append(
                f"- {g.model} · {g.task}: `{r.config}` {_pm(r, scale)} {unit} on search (Holm p {_p(r.p_holm)}), "
                f"held-out {_held(r, scale)}; export: `{r.export_command}`{_elsewhere(groups, g, r)}"
            )
    else:
        lines.append("No configuration improves any measured task with a held-out confirmation.")
    held_only = [(g, r) for g in groups for r in _heldout_only(g)]
    if held_only:
        lines += [
            "",
            "Significant on held-out items alone: selected on search, where the gain was not Holm-significant "
            "(so not confirmed by the pre-registered rule), then Holm-significant across the task's re-measured "
            "configurations on held-out items:",
            "",
        ]
        lines += [
            f"- {_both_stages(g, r)}; export: `{r.export_command}`{_elsewhere(groups, g, r)}" for g, r in held_only
        ]
    if confirmed or held_only:
        lines += ["", "## The configurations that help on held-out items, exported and generating", ""]
        lines += _showcase_lines(confirmed + held_only, showcase or [], command.split(" --out")[0])
    lines += ["", "## Per model and task", ""]
    for m in models:
        lines.append(f"### {m}")
        lines.append("")
        lines += [_group_summary(g) for g in groups if g.model == m]
        lines.append("")
    lines += ["## Which layers help or hurt (single-layer repeats, normalised depth)", ""]
    for g in groups:
        if not g.layer_reps and not g.subs:
            continue
        lines += [f"### {g.model} · {g.task}", "", *_layers_table(g), ""]
        depth = g.n_layers() or 1
        early = [r for r in g.rows if not r.is_base and r.sub_key and r.sub_key[0] / depth < EARLY]
        if early:
            scale, unit = _unit(g)
            parts = [f"{r.sub_key[0]}.{r.sub_key[1]} {_pm(r, scale)} ({_verdict(r, g)})" for r in early]
            lines += [f"First layers (depth < {EARLY}), one extra copy: " + "; ".join(parts) + f" ({unit}).", ""]
    lines += [*figs.get("layers", []), "", "## How many repeats", ""]
    for g in groups:
        rep = _repeats_lines(g)
        if rep:
            lines += [f"- {g.model} · {g.task}:", *rep]
    lines += ["", *figs.get("repeats", [])]
    blocks = [x for g in groups if (x := _blocks_line(g))]
    if blocks:
        lines += [
            "",
            "## Repeated blocks (the strided (i, j) scan)",
            "",
            "Each block of consecutive layers i..j run a second time, undamped (the RYS scan); gains on search "
            "items with their 95% CIs and Holm verdicts across the task's configurations.",
            "",
            *blocks,
            "",
            *figs.get("blocks", []),
        ]
    if figs.get("healed"):
        lines += ["", "## Healed (damped) repeats", "", *figs["healed"]]
    lines += [
        "",
        "## How the picture changes with model size",
        "",
        *(_size_lines(groups, params) or ["(needs two or more models measured on one task)"]),
        "",
        *figs.get("size", []),
    ]
    lines += [
        "",
        "## Is bits per byte a usable proxy for the benchmarks?",
        "",
        *(_proxy_lines(groups) or ["(needs a perplexity task and a benchmark in one study)"]),
        "",
    ]
    lines += [
        "## The per-item ceiling",
        "",
        *(_ceiling_lines(studies) or ["(needs an accuracy benchmark)"]),
        "",
        "## How much selection overstates (the winner's curse)",
        "",
        *([x.replace("  - ", "- ", 1) for x in _answer_curse(groups)] or ["(nothing re-measured yet)"]),
        "",
        *figs.get("curse", []),
        "",
        "## Gain per extra FLOP",
        "",
        *_flop_lines(groups),
    ]
    lines += ["", "## Compute", "", *(_compute_lines(studies) or ["(no unit records)"])]
    lines += ["", "## Limits", "", *_limits_lines(models), "", *_arithmetic_lines(run_dirs), ""]
    return "\n".join(lines)


def _flop_lines(groups: list[Group]) -> list[str]:
    """Per model × task, the Pareto front of gain against extra FLOPs, each point with its CI and verdict."""
    lines = [
        "The configurations that no cheaper one beats on search (full-budget, extra FLOPs per token over the "
        "base's), with their 95% CIs and verdicts: a front point is chosen for its own estimate, so only a "
        "confirmed one is a gain.",
        "",
    ]
    for g in groups:
        front = g.pareto()
        scale, unit = _unit(g)
        if front:
            pts = "; ".join(
                f"`{r.config}` {_pm(r, scale)} ({_verdict(r, g)}) at +{g.cost(r):.1f}% FLOPs" for r in front
            )
            lines.append(f"- {g.model} · {g.task} Pareto front ({unit}): {pts}")
        else:
            lines.append(f"- {g.model} · {g.task}: no configuration beats the base at any extra cost")
    return lines


def _limits_lines(models: list[str]) -> list[str]:
    """What small quantized models and these item counts cannot show; each zoo model's quantization."""
    from frankenlm.model.zoo import ZOO

    quant = [f"{m}: {ZOO[m].quantization}" for m in models if m in ZOO]
    return [
        "The models are small quantized checkpoints, run dequantized"
        + (f" ({'; '.join(quant)})" if quant else "")
        + ". A gain on a quantized model may partly repair quantization damage rather than show what repetition "
        "does to the full-precision model, and a size contrast is confounded with quantization wherever the "
        "models' quantizations differ. Benchmark items are zero-shot; the item counts bound the detectable effects "
        "(see `findings/sizing-*.txt`, from `frankenlm study --spec findings/protocol.json --dry-run`)."
    ]


def _arithmetic_lines(run_dirs: list[Path]) -> list[str]:
    """The dtype and arithmetic kind the studies' units were computed with (`frankenlm.model.arithmetic`)."""
    import json

    from frankenlm.study.runner import manifest_arithmetic
    from frankenlm.study.spec import StudySpec

    made, in_fp32 = [], []
    for d in run_dirs:
        sp, mp = Path(d) / "spec.json", Path(d) / "manifest.json"
        if sp.is_file() and mp.is_file():
            spec = StudySpec.from_json(sp.read_text(encoding="utf-8"), source=str(sp))
            kind = manifest_arithmetic(json.loads(mp.read_text(encoding="utf-8"))) or "an unrecorded GPU"
            lower = [t.name for t in spec.tasks if spec.task_dtype(t.name) != "float32"]
            if lower:
                made.append(f"{spec.dtype} with {kind} arithmetic")
            in_fp32 += [t.name for t in spec.tasks if spec.task_dtype(t.name) == "float32"]
    if not made and not in_fp32:
        return []
    parts = [f"{', '.join(dict.fromkeys(in_fp32))} in float32 (on CPUs of any kind)"] if in_fp32 else []
    if made:
        other = "the other tasks" if in_fp32 else "every task"
        parts.append(f"{other} in {' and '.join(dict.fromkeys(made))} (their fp32 re-checks in float32)")
    return [
        f"Units were computed: {'; '.join(parts)}. Reduced-precision numbers depend on the machine's matmul kernels: "
        "recomputed on a CPU without bf16 instructions, one stored unit's gain moved by 0.6 milli-bits per byte, "
        "and an fp32 unit's by 4e-7 (passages by at most 0.005 nats: `benchmarks/check_reproduction.py`), so "
        "bf16 search numbers reproduce on a machine of their kind, and float32 numbers on any CPU."
    ]


def write_findings(
    run_dirs: list[Path], out: Path, sources: list[str] | None = None, showcase: list[dict] | None = None
) -> Path:
    """Write the document to `out` and its figures to the `findings/` folder beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    named = [*(sources or [str(d) for d in run_dirs]), "--out", str(out)]
    text = findings_markdown(run_dirs, named, fig_dir=out.parent / FIGURES, showcase=showcase)
    out.write_text(text, encoding="utf-8")
    return out
