"""The report's figures, drawn with matplotlib (never pyplot: no global state) from typed result rows.

Each `fig_*` returns a Figure, or None when the group has nothing to draw; `Figures.add` saves it to
RUN_DIR/figures and returns the <figure> HTML with the same PNG bytes embedded. Figures plot the verdicts the
rows carry (significant, early-stopped, confirmed, on the Pareto front); they decide none.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np

from frankenlm.report.fmt import esc as _e
from frankenlm.report.fmt import gain_sense as _gain_sense
from frankenlm.study.results import Group, ResultRow
from frankenlm.study.results import fin as _fin

FIGURE_DIR = "figures"
DPI = 100
DESIGN_ORDER = ("repeat-block", "repeat-layer", "sublayer", "search", "custom")
DESIGN_COLORS = {
    "repeat-block": "#4c72b0",
    "repeat-layer": "#dd8452",
    "sublayer": "#55a868",
    "search": "#c44e52",
    "custom": "#8172b3",
}
CONFIRMED_COLOUR = "#f0a000"  # rings and squares: confirmed (Holm on search, held-out CI above 0)
HELDOUT_COLOUR = "#8a2be2"  # ... and better on held-out items alone
SUBLAYER_STYLE = {
    "attn": ("#4c72b0", "o", "attention only"),
    "mlp": ("#dd8452", "s", "MLP only"),
    "block": ("#333333", "^", "whole block"),
}


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (DPI, no software stamp: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


class Figures:
    """Saves figures to RUN_DIR/figures and returns <figure> HTML with the same PNG bytes embedded."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / FIGURE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):  # stale figures from an earlier report
            old.unlink()
        self.names: list[str] = []

    def add(self, fig, name: str, caption: str, alt: str) -> str:
        data = png_bytes(fig)
        (self.dir / f"{name}.png").write_bytes(data)
        self.names.append(name)
        w, h = (int(round(v)) for v in fig.get_size_inches() * DPI)
        b64 = base64.b64encode(data).decode("ascii")
        return (
            f'<figure id="fig-{_e(name)}"><img src="data:image/png;base64,{b64}" width="{w}" height="{h}" '
            f'alt="{_e(alt)}"><figcaption>{caption} <span class="file">({FIGURE_DIR}/{_e(name)}.png)</span>'
            f"</figcaption></figure>"
        )


def _new_fig(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _yerr(rows: list[ResultRow], heldout: bool = False) -> np.ndarray:
    """The rows' 95% CIs (search, or held-out) as error-bar lengths below and above the gain (0 where unknown)."""
    stats = [
        (r.heldout_gain, r.heldout_ci_low, r.heldout_ci_high) if heldout else (r.gain, r.ci_low, r.ci_high)
        for r in rows
    ]
    lo = [max(g - low, 0.0) if _fin(g, low) else 0.0 for g, low, _ in stats]
    hi = [max(high - g, 0.0) if _fin(g, high) else 0.0 for g, _, high in stats]
    return np.array([lo, hi])


def _held_mark(r: ResultRow) -> tuple[str, str] | None:
    """(colour, gid) of the ring or square marking `r` as confirmed or better on held-out items alone, else None."""
    if r.confirmed:
        return CONFIRMED_COLOUR, "confirmed"
    if r.heldout_better:
        return HELDOUT_COLOUR, "heldout-alone"
    return None


def _zero_line(ax) -> None:
    ax.axhline(0.0, color="#777777", lw=0.8, zorder=0)


def _diverging_ticks(lo: float, hi: float) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    neg = [t for t in MaxNLocator(4).tick_values(lo, 0.0) if lo <= t <= 0.0]
    pos = [t for t in MaxNLocator(4).tick_values(0.0, hi) if 0.0 <= t <= hi]
    return sorted({round(t, 12) for t in [*neg, *pos, 0.0]})


CLIP_PERCENTILE = 90.0  # heatmap colours: |gain| beyond CLIP_FENCE x this percentile (per sign) is clipped
CLIP_FENCE = 3.0


def robust_limits(gains: list[float], q: float = CLIP_PERCENTILE, fence: float = CLIP_FENCE) -> tuple[float, float]:
    """(lo < 0 < hi) of a diverging colour scale that a few catastrophic values cannot saturate. Per sign, the
    values beyond `fence` times the q-th percentile of |gain| are outliers; the side ends at the largest |gain|
    that is not one (so without outliers nothing is clipped). A side with no or tiny values gets 5% of the other
    side's range. Gains beyond the limits are drawn in the end colour (and marked by the heatmap)."""

    def side(xs: np.ndarray) -> float:
        if not len(xs):
            return 0.0
        cut = fence * float(np.percentile(xs, q))
        return float(max(x for x in xs if x <= cut)) if cut > 0 else float(xs.max())

    ln = side(np.abs([x for x in gains if x < 0]))
    lp = side(np.array([x for x in gains if x > 0]))
    eps = 0.05 * max(ln, lp) or 1e-9
    return -max(ln, eps), max(lp, eps)


def fig_heatmap(g: Group):
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # Axes are the block starts and ends that were measured (a strided scan leaves no empty rows), plus the
    # diagonal cells that the sweep measured under another design (the same plan as a single-layer repeat).
    src = [(r.i, r.j) for r in g.rows if r.design == "repeat-block" and r.i is not None and r.j is not None]
    if not src:
        return None
    starts, ends = {i for i, _ in src}, {j for _, j in src}
    diag = {k for k in starts | ends if g.block(k, k) is not None}
    starts_ax, ends_ax = sorted(starts | diag), sorted(ends | diag)
    cells = {
        (a, b): r
        for a, i in enumerate(starts_ax)
        for b, j in enumerate(ends_ax)
        if j >= i and (r := g.block(i, j)) is not None and _fin(r.gain)
    }
    if not cells:
        return None
    grid = np.full((len(starts_ax), len(ends_ax)), np.nan)
    valid = np.array([[j >= i for j in ends_ax] for i in starts_ax], bool)
    for (a, b), r in cells.items():
        grid[a, b] = r.gain
    all_g = [r.gain for r in cells.values()]
    lo, hi = robust_limits(all_g)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (min(all_g) < lo, max(all_g) > hi), "neither"
    )
    fig, (ax,) = _new_fig(7.6, 6.6)
    ax.set_facecolor("white")
    notrun = np.where(valid & np.isnan(grid), 1.0, np.nan)
    ax.imshow(notrun, cmap="Greys", vmin=0, vmax=4, interpolation="nearest", origin="upper", aspect="auto")
    im = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=colormaps["RdBu"],
        norm=TwoSlopeNorm(0.0, lo, hi),
        interpolation="nearest",
        origin="upper",
        aspect="auto",
    )
    cell_pt = 4.8 * 72 / max(len(starts_ax), len(ends_ax), 1)  # approximate cell side in points
    sig = [(a, b) for (a, b), r in cells.items() if r.significant and not r.stopped_early]
    stop = [(a, b) for (a, b), r in cells.items() if r.stopped_early]
    marks = {(a, b): m for (a, b), r in cells.items() if (m := _held_mark(r))}
    held = [c for c, m in marks.items() if m[1] == "heldout-alone"]
    clipped = [(a, b) for (a, b), r in cells.items() if not lo <= r.gain <= hi]
    if clipped:  # beyond the colour scale: drawn in its end colour and marked
        ax.scatter(
            [b for _, b in clipped],
            [a for a, _ in clipped],
            s=(0.5 * cell_pt) ** 2,
            facecolors="none",
            edgecolors="white",
            marker="D",
            lw=max(0.6, cell_pt / 16),
            gid="clipped",
        )
    if sig:
        ax.scatter([b for _, b in sig], [a for a, _ in sig], s=(0.28 * cell_pt) ** 2, c="black", marker="o", lw=0)
    if stop:
        ax.scatter(
            [b for _, b in stop],
            [a for a, _ in stop],
            s=(0.55 * cell_pt) ** 2,
            c="#555555",
            marker="x",
            lw=max(0.5, cell_pt / 18),
        )
    for colour, gid in dict.fromkeys(marks.values()):
        cells_ = [c for c, m in marks.items() if m[1] == gid]
        ax.scatter(
            [b for _, b in cells_],
            [a for a, _ in cells_],
            s=(0.95 * cell_pt) ** 2,
            facecolors="none",
            edgecolors=colour,
            marker="s",
            lw=max(1.0, cell_pt / 10),
            gid=gid,
        )
    ax.set_xlim(-0.5, len(ends_ax) - 0.5)
    ax.set_ylim(len(starts_ax) - 0.5, -0.5)
    for axis, vals in ((ax.xaxis, ends_ax), (ax.yaxis, starts_ax)):
        step = max(1, int(math.ceil(len(vals) / 15)))
        axis.set_ticks(range(0, len(vals), step), [str(v) for v in vals[::step]])
    ax.set_xlabel("j = last layer of the repeated block")
    ax.set_ylabel("i = first layer of the repeated block")
    ax.set_title(f"{g.model} · {g.task}: block i..j run twice", fontsize=11)
    cb = fig.colorbar(im, ax=ax, extend=extend, shrink=0.85)
    cb.set_ticks(_diverging_ticks(lo, hi))
    clip_note = f"\n◇ clipped: |gain| > {CLIP_FENCE:g}× its side's {CLIP_PERCENTILE:g}th percentile" if clipped else ""
    cb.set_label(f"gain in {g.metric} vs base ({_gain_sense(g)}){clip_note}", fontsize=8)
    handles = [
        Line2D([], [], ls="", marker="o", color="black", ms=4, label="significant (Holm 5%)"),
        Line2D([], [], ls="", marker="x", color="#555555", ms=6, label="early-stopped (racing)"),
        Line2D(
            [], [], ls="", marker="s", mfc="none", mec=CONFIRMED_COLOUR, ms=8, mew=1.5, label="confirmed on held-out"
        ),
        Patch(facecolor=colormaps["Greys"](0.25), label="not run"),
    ]
    if held:
        handles.insert(
            3,
            Line2D(
                [],
                [],
                ls="",
                marker="s",
                mfc="none",
                mec=HELDOUT_COLOUR,
                ms=8,
                mew=1.5,
                label="better on held-out alone",
            ),
        )
    if clipped:
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="D",
                mfc="#b2182b",
                mec="white",
                ms=6,
                mew=1.2,
                label=f"beyond the colour scale ({len(clipped)})",
            )
        )
    ax.legend(handles=handles, loc="lower left", fontsize=8, frameon=True)
    return fig


def fig_repeats(g: Group):
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    counts, curves = g.repeat_curves()
    if not curves:
        return None
    n = max(g.n_layers(), 1)
    cmap, norm = colormaps["viridis"], Normalize(0, max(n - 1, 1))
    fig, (ax1, ax2) = _new_fig(12.5, 4.8, ncols=2)
    many = len(curves) > 8
    for idx, (k, pts) in enumerate(sorted(curves.items())):
        color = cmap(norm(k))
        rows = [p[1] for p in pts]
        xs = np.array([0] + [c for c, _ in pts], float) + (idx - (len(curves) - 1) / 2) * min(0.05, 0.4 / len(curves))
        ys = [0.0] + [r.gain for r in rows]
        err = np.concatenate([np.zeros((2, 1)), _yerr(rows)], axis=1)
        ax1.errorbar(xs, ys, yerr=err, color=color, marker="o", ms=4, lw=1.2, capsize=2, label=f"layer {k}")
        for x, r in zip(xs[1:], rows):
            if r.stopped_early:
                ax1.plot([x], [r.gain], marker="x", color="#333333", ms=7, ls="")
            elif r.significant:
                ax1.plot([x], [r.gain], marker="o", mfc="none", mec="black", ms=7, ls="")
    _zero_line(ax1)
    ax1.set_xticks([0, *counts])
    ax1.set_xlabel("extra copies r of the layer (0 = base model)")
    ax1.set_ylabel(f"gain in {g.metric} ({_gain_sense(g)})")
    ax1.set_title("gain vs repeat count, one line per layer (95% CI)", fontsize=10)
    if many:
        fig.colorbar(ScalarMappable(norm, cmap), ax=ax1, label="layer", shrink=0.8)
    else:
        ax1.legend(fontsize=8, ncol=2)
    best = []
    for k, pts in sorted(curves.items()):
        ok = [p for p in pts if not p[1].stopped_early] or pts
        c, r = max(ok, key=lambda p: (p[1].gain, -p[0]))
        best.append((k, c, r))
    xs = [k for k, _, _ in best]
    rows = [r for _, _, r in best]
    ax2.errorbar(
        xs, [r.gain for r in rows], yerr=_yerr(rows), color="#333333", marker="", ls="", lw=0.8, capsize=2, zorder=1
    )
    colors = [cmap(norm(k)) for k in xs]
    ax2.scatter(
        xs,
        [r.gain for r in rows],
        c=colors,
        s=36,
        zorder=2,
        edgecolors=["black" if r.significant else "none" for r in rows],
        linewidths=1.2,
    )
    for k, c, r in best:
        ax2.annotate(
            f"r={c}",
            (k, r.ci_high if _fin(r.ci_high) else r.gain),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=7,
        )
    _zero_line(ax2)
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("layer")
    ax2.set_ylabel(f"best gain in {g.metric}")
    ax2.set_title("best gain per layer (label: its repeat count; black edge: significant)", fontsize=10)
    fig.suptitle(f"{g.model} · {g.task}: single-layer repeats", fontsize=11)
    return fig


def fig_sublayers(g: Group):
    layers = sorted({r.layer for r in g.rows if r.design == "sublayer" and r.layer is not None})
    series = {
        s: [(k, r) for k in layers if (r := g.sub(k, s)) is not None and _fin(r.gain)] for s in ("attn", "mlp", "block")
    }
    if not any(series.values()):
        return None
    fig, (ax,) = _new_fig(min(14.0, max(7.0, 0.45 * len(layers) + 3)), 4.6)
    for off, s in zip((-0.22, 0.0, 0.22), ("attn", "mlp", "block")):
        pts = series[s]
        if not pts:
            continue
        color, marker, label = SUBLAYER_STYLE[s]
        rows = [r for _, r in pts]
        xs = np.array([k for k, _ in pts], float) + off
        ax.errorbar(
            xs,
            [r.gain for r in rows],
            yerr=_yerr(rows),
            ls="",
            marker=marker,
            color=color,
            ms=5,
            capsize=2,
            label=label,
        )
        sig = [(x, r.gain) for x, r in zip(xs, rows) if r.significant and not r.stopped_early]
        if sig:
            ax.scatter(*zip(*sig), s=90, facecolors="none", edgecolors=color, linewidths=1.0)
    _zero_line(ax)
    ax.set_xticks(layers if len(layers) <= 32 else layers[:: math.ceil(len(layers) / 32)])
    ax.set_xlabel("layer repeated once")
    ax.set_ylabel(f"gain in {g.metric} ({_gain_sense(g)})")
    ax.set_title(
        f"{g.model} · {g.task}: attention-only vs MLP-only vs whole-block repeat\n(95% CI; ring = "
        "significant after Holm)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return fig


def cost_label(g: Group) -> str:
    return "extra FLOPs per token (% of base)" if g.cost_in_percent else "extra FLOPs per token (GFLOP)"


def _stopped_marks(ax, pts) -> None:
    """Early-stopped configurations: grey crosses at their (cost, gain)."""
    ax.scatter(
        [p[0] for p in pts], [p[1] for p in pts], s=14, marker="x", color="#999999", lw=0.8, label="early-stopped"
    )


def fig_cost(g: Group):
    from matplotlib.lines import Line2D

    label, cost = cost_label(g), g.cost
    pts = [(cost(r), r.gain, r) for r in g.rows if _fin(cost(r), r.gain)]
    if not pts:
        return None
    kept = [p for p in pts if not p[2].stopped_early]
    front = [(cost(r), r.gain, r) for r in g.pareto()]
    fig, (ax,) = _new_fig(8.6, 5.2)
    designs = [d for d in [*DESIGN_ORDER, *sorted({r.design for _, _, r in pts})] if d in {r.design for *_, r in pts}]
    for d in dict.fromkeys(designs):
        color = DESIGN_COLORS.get(d, "#777777")
        plain = [p for p in kept if p[2].design == d and not p[2].better]
        good = [p for p in kept if p[2].design == d and p[2].better]
        for k, sel in enumerate((plain, good)):
            if sel:
                ax.scatter(
                    [p[0] for p in sel],
                    [p[1] for p in sel],
                    s=18,
                    alpha=0.7,
                    color=color,
                    edgecolors="black" if k else "none",
                    linewidths=0.9 if k else 0,
                    label=d if k == 0 or not plain else None,
                )
    ys = [0.0] + [p[1] for p in kept]
    ylo, yhi = min(ys), max(ys)
    pad = 0.08 * (yhi - ylo) or 1e-6
    ylo, yhi = ylo - pad, yhi + pad
    stopped = [p for p in pts if p[2].stopped_early]
    if stopped and kept:
        inside = [p for p in stopped if ylo <= p[1] <= yhi]
        above = [p for p in stopped if p[1] > yhi]
        below = [p for p in stopped if p[1] < ylo]
        ax.set_ylim(ylo, yhi)
        if inside:
            _stopped_marks(ax, inside)
        for sel, y, m in ((above, yhi, "^"), (below, ylo, "v")):
            if sel:
                ax.scatter(
                    [p[0] for p in sel],
                    [y] * len(sel),
                    s=22,
                    marker=m,
                    color="#999999",
                    clip_on=False,
                    label=f"early-stopped, off scale ({'above' if m == '^' else 'below'})",
                )
    elif stopped:
        _stopped_marks(ax, stopped)
    if front:
        fx = [0.0] + [p[0] for p in front]
        fy = [0.0] + [p[1] for p in front]
        ax.step(fx, fy, where="post", color="#c00000", lw=1.2, label="Pareto front")
        rows = [p[2] for p in front]
        ax.errorbar(
            [p[0] for p in front], [p[1] for p in front], yerr=_yerr(rows), ls="", color="#c00000", capsize=2, lw=0.8
        )
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=60, facecolors="none", edgecolors="#c00000", lw=1.2)
    ax.scatter([0.0], [0.0], marker="*", s=120, c="black", zorder=5, label="base")
    _zero_line(ax)
    ax.set_xlabel(label)
    ax.set_ylabel(f"gain in {g.metric} ({_gain_sense(g)})")
    ax.set_title(f"{g.model} · {g.task}: quality vs cost (black edge: significantly better on search)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="significantly better (search)"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig


def _is_bpb(metric: str) -> bool:
    m = metric.lower()
    return m in ("bits_per_byte", "bpb") or "bits_per_byte" in m


def fig_sizes(groups: list[Group]):
    from matplotlib import colormaps

    singles, blocks = {}, {}
    for g in groups:
        n = g.n_layers()
        if not n:
            continue
        s = [(((k + 0.5) / n), r) for k in range(n) if (r := g.layer_rep(k, 1)) is not None and _fin(r.gain)]
        b = [
            (((r.centre + 0.5) / n), r)
            for r in g.rows
            if r.design == "repeat-block" and _fin(r.gain, r.centre) and not r.stopped_early
        ]
        if s:
            singles[g.model] = s
        if b:
            blocks[g.model] = b
    panels = [p for p in (singles, blocks) if len(p) > 1]
    if not panels:
        return None
    fig, axes = _new_fig(6.3 * len(panels), 4.8, ncols=len(panels))
    colors = colormaps["tab10"]
    models = list(dict.fromkeys(g.model for g in groups))
    ax_i = 0
    if len(singles) > 1:
        ax = axes[ax_i]
        ax_i += 1
        for m, pts in singles.items():
            rows = [r for _, r in pts]
            ax.errorbar(
                [x for x, _ in pts],
                [r.gain for r in rows],
                yerr=_yerr(rows),
                marker="o",
                ms=4,
                lw=1.2,
                capsize=2,
                color=colors(models.index(m) % 10),
                label=m,
            )
        _zero_line(ax)
        ax.set_xlabel("relative depth of the repeated layer ((layer + ½) / depth)")
        ax.set_title("single layer repeated once (95% CI)", fontsize=10)
    if len(blocks) > 1:
        ax = axes[ax_i]
        edges = np.linspace(0, 1, 11)
        for m, pts in blocks.items():
            c = colors(models.index(m) % 10)
            ax.scatter([x for x, _ in pts], [r.gain for _, r in pts], s=6, alpha=0.25, color=c)
            xs, ys = [], []
            for a, b in zip(edges[:-1], edges[1:]):
                sel = [r.gain for x, r in pts if a <= x < b or (b == 1 and x == 1)]
                if sel:
                    xs.append((a + b) / 2)
                    ys.append(max(sel))
            ax.plot(xs, ys, marker="o", ms=4, color=c, lw=1.4, label=f"{m} (best per tenth of depth)")
        _zero_line(ax)
        ax.set_xlabel("relative depth of the block centre")
        ax.set_title("repeated blocks (dots: every block; line: best)", fontsize=10)
    for ax in axes:
        ax.set_xlim(0, 1)
        ax.set_ylabel(f"gain in {groups[0].metric} ({_gain_sense(groups[0])})")
        ax.legend(fontsize=8)
    fig.suptitle(f"model size: {groups[0].task} ({groups[0].metric})", fontsize=11)
    return fig


def scale_target(r: ResultRow) -> tuple[str, str] | None:
    """(what is repeated, branch) of a damped repeat — from its design parameters ('layer' or 'i', 'j';
    'scale'; 'branch' = both | attn | mlp) — or None for a row without a branch scale."""
    p = r.params or {}
    if not _fin(p.get("scale")):
        return None
    if p.get("layer") is not None:
        what = f"layer {p['layer']}"
    elif p.get("i") is not None and p.get("j") is not None:
        what = f"layer {p['i']}" if p["i"] == p["j"] else f"block {p['i']}–{p['j']}"
    else:
        return None
    return what, str(p.get("branch") or "both")


def scale_series(g: Group) -> dict[tuple[str, str], list[tuple[float, ResultRow]]]:
    """Per (repeated layer/block, branch): its (scale, row) points with a finite gain, by scale. The undamped
    repeat (scale 1) joins each series when the group measured it (same layer or block, design parameters)."""
    out: dict[tuple[str, str], list[tuple[float, ResultRow]]] = {}
    plain: dict[str, ResultRow] = {}
    for r in g.rows:
        t = scale_target(r)
        if t is not None and _fin(r.gain):
            out.setdefault(t, []).append((float(r.params["scale"]), r))
            p = r.params
            one = g.layer_rep(p["layer"], 1) if p.get("layer") is not None else g.block(p["i"], p["j"])
            if one is not None and _fin(one.gain):
                plain[t[0]] = one
    for (what, _), pts in out.items():
        if what in plain and not any(s == 1.0 for s, _ in pts):
            pts.append((1.0, plain[what]))
        pts.sort(key=lambda p: p[0])
    return dict(sorted(out.items()))


def fig_scales(g: Group):
    """Gain against branch scale, one line per repeated layer/block and branch, with 95% CIs."""
    from matplotlib import colormaps

    series = scale_series(g)
    if not series:
        return None
    fig, (ax,) = _new_fig(8.6, 5.0)
    colors = colormaps["tab10"]
    styles = {"both": "-", "attn": "--", "mlp": ":"}
    targets = list(dict.fromkeys(w for w, _ in series))
    for (what, branch), pts in series.items():
        rows = [r for _, r in pts]
        c = colors(targets.index(what) % 10)
        ax.errorbar(
            [s for s, _ in pts],
            [r.gain for r in rows],
            yerr=_yerr(rows),
            color=c,
            marker="o",
            ms=4,
            lw=1.2,
            ls=styles.get(branch, "-"),
            capsize=2,
            label=f"{what}" + ("" if branch == "both" else f", {branch} only"),
        )
        sig = [(s, r.gain) for s, r in pts if r.significant and not r.stopped_early]
        if sig:
            ax.scatter(*zip(*sig), s=70, facecolors="none", edgecolors=c, linewidths=1.0)
        stop = [(s, r.gain) for s, r in pts if r.stopped_early]
        if stop:
            ax.scatter(*zip(*stop), s=30, marker="x", color="#555555", lw=0.9)
    _zero_line(ax)
    ax.set_xlabel("branch scale of the repeated copy (1 = plain repeat)")
    ax.set_ylabel(f"gain in {g.metric} ({_gain_sense(g)})")
    ax.set_title(
        f"{g.model} · {g.task}: damped repeats (95% CI; ring: significant after Holm; ×: early-stopped)", fontsize=10
    )
    ax.legend(fontsize=8, ncol=2 if len(series) > 6 else 1)
    return fig


def fig_curse(panels: list[tuple[str, float, str, list[Group]]]):
    """The winner's curse: every configuration re-measured on held-out items, its search gain (x) against its
    held-out gain (y), both with 95% CIs, on the diagonal y = x where selection overstates nothing. One panel
    per (title, scale, unit, groups) — gains multiplied by `scale` into `unit` — coloured by model, marked by
    task; a gold ring marks a confirmed configuration, a purple one a held-out-alone gain."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    pts = [
        (title, scale, unit, [(g, r) for g in gs for r in g.rows if r.remeasured and _fin(r.gain, r.heldout_gain)])
        for title, scale, unit, gs in panels
    ]
    pts = [p for p in pts if p[3]]
    if not pts:
        return None
    fig, axes = _new_fig(6.0 * len(pts) + 1.8, 5.4, ncols=len(pts))
    colors, marks = colormaps["tab10"], "osD^vP*X"
    models = list(dict.fromkeys(g.model for *_, gr in pts for g, _ in gr))
    tasks = list(dict.fromkeys(g.task for *_, gr in pts for g, _ in gr))
    for ax, (title, scale, unit, gr) in zip(axes, pts):
        for g, r in gr:
            x, y = scale * r.gain, scale * r.heldout_gain
            xe, ye = scale * _yerr([r]), scale * _yerr([r], heldout=True)
            c = colors(models.index(g.model) % 10)
            ax.errorbar([x], [y], xerr=xe, yerr=ye, color=c, alpha=0.25, lw=0.8, ls="")
            ax.scatter([x], [y], color=c, marker=marks[tasks.index(g.task) % len(marks)], s=22, zorder=3)
            if ring := _held_mark(r):
                ax.scatter([x], [y], s=150, facecolors="none", edgecolors=ring[0], lw=1.6, zorder=4, gid=ring[1])
        lo = min(min(scale * r.gain, scale * r.heldout_gain) for _, r in gr)
        hi = max(max(scale * r.gain, scale * r.heldout_gain) for _, r in gr)
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#888888", lw=0.8, ls="--", zorder=1)
        _zero_line(ax)
        ax.axvline(0.0, color="#888888", lw=0.6)
        ax.set_xlabel(f"search gain ({unit})")
        ax.set_ylabel(f"held-out gain ({unit})")
        below = sum(r.heldout_gain < r.gain for _, r in gr)
        ax.set_title(f"{title}: {below} of {len(gr)} below the diagonal", fontsize=10)
    handles = [Line2D([], [], ls="", marker="o", color=colors(i % 10), label=m) for i, m in enumerate(models)]
    handles += [
        Line2D([], [], ls="", marker=marks[i % len(marks)], color="#555555", label=t) for i, t in enumerate(tasks)
    ]
    handles += [
        Line2D([], [], ls="", marker="o", mfc="none", mec=CONFIRMED_COLOUR, ms=9, mew=1.5, label="confirmed"),
        Line2D(
            [], [], ls="", marker="o", mfc="none", mec=HELDOUT_COLOUR, ms=9, mew=1.5, label="better on held-out alone"
        ),
        Line2D([], [], ls="--", color="#888888", label="held-out = search"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    fig.suptitle("winner's curse: the re-measured configurations, search vs held-out (95% CIs)", fontsize=11)
    return fig
