"""The study report: one self-contained HTML page (figures embedded as PNG data URIs), its figure files and the
CSV of every table, written from a run directory's ``results.csv`` and ``study.json``.

A pure function of those two files: it never loads or runs a model, and the same inputs give the same bytes.

Gains are read as the analysis wrote them: signed so that positive = better than the base, in the metric's units.
A configuration counts as an improvement only when its search CI excludes 0 with Holm significance at 5% AND its
held-out CI excludes 0 in the same direction; the written answers never say "improves" otherwise.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from frankenlm.errors import FrankenError

__all__ = ["write_report", "REPORT_NAME", "FIGURE_DIR", "TABLE_DIR", "TOP_N"]

REPORT_NAME = "report.html"
FIGURE_DIR = "figures"
TABLE_DIR = "tables"
TOP_N = 10
ALPHA = 0.05
DPI = 100
DESIGN_ORDER = ("repeat-block", "repeat-layer", "sublayer", "search", "custom")
DESIGN_COLORS = {"repeat-block": "#4c72b0", "repeat-layer": "#dd8452", "sublayer": "#55a868", "search": "#c44e52",
                 "custom": "#8172b3"}  # fmt: skip
SUBLAYER_STYLE = {"attn": ("#4c72b0", "o", "attention only"), "mlp": ("#dd8452", "s", "MLP only"),
                  "block": ("#333333", "^", "whole block")}  # fmt: skip


# ------------------------------------------------------------------------------------------------ parsing


def _f(x: Any) -> float:
    """A float, or NaN for anything empty or unparsable."""
    if x is None:
        return math.nan
    if isinstance(x, (int, float)):
        return float(x)
    s = str(x).strip()
    if not s:
        return math.nan
    try:
        return float(s)
    except ValueError:
        return math.nan


def _i(x: Any) -> int | None:
    v = _f(x)
    return int(round(v)) if math.isfinite(v) else None


def _b(x: Any) -> bool | None:
    s = str(x).strip().lower() if x is not None else ""
    if s in ("1", "1.0", "true", "yes", "y", "t"):
        return True
    if s in ("0", "0.0", "false", "no", "n", "f"):
        return False
    return None


def _fin(*xs: float) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


@dataclass
class _Row:
    model: str
    depth: int | None
    config: str
    design: str
    i: int | None
    j: int | None
    layer: int | None
    repeats: int | None
    sublayer: str
    task: str
    metric: str
    hib: bool
    base_value: float
    value: float
    gain: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    significant: bool
    n_items: int | None
    n_tokens: int | None
    stopped_early: bool
    heldout_gain: float
    heldout_ci_low: float
    heldout_ci_high: float
    heldout_p: float
    fp32_gain: float
    extra_flops: float
    flops_ratio: float
    effective_params: float
    kv_bytes: float
    export_command: str

    @classmethod
    def parse(cls, d: dict) -> "_Row":
        g = lambda k: d.get(k) if d.get(k) is not None else ""  # noqa: E731
        p_holm = _f(g("p_holm"))
        sig = _b(g("significant"))
        if sig is None:  # flag absent: fall back to the Holm-adjusted p-value
            sig = math.isfinite(p_holm) and p_holm < ALPHA
        design = str(g("design")).strip() or "custom"
        sub = str(g("sublayer")).strip().lower() or "block"
        return cls(
            model=str(g("model")).strip(), depth=_i(g("depth")), config=str(g("config")).strip(), design=design,
            i=_i(g("i")), j=_i(g("j")), layer=_i(g("layer")), repeats=_i(g("repeats")), sublayer=sub,
            task=str(g("task")).strip(), metric=str(g("metric")).strip() or "metric",
            hib=bool(_b(g("higher_is_better"))), base_value=_f(g("base_value")), value=_f(g("value")),
            gain=_f(g("gain")), ci_low=_f(g("ci_low")), ci_high=_f(g("ci_high")), p_value=_f(g("p_value")),
            p_holm=p_holm, significant=bool(sig), n_items=_i(g("n_items")), n_tokens=_i(g("n_tokens")),
            stopped_early=bool(_b(g("stopped_early"))), heldout_gain=_f(g("heldout_gain")),
            heldout_ci_low=_f(g("heldout_ci_low")), heldout_ci_high=_f(g("heldout_ci_high")),
            heldout_p=_f(g("heldout_p")), fp32_gain=_f(g("fp32_gain")), extra_flops=_f(g("extra_flops_per_token")),
            flops_ratio=_f(g("flops_ratio")), effective_params=_f(g("effective_params")),
            kv_bytes=_f(g("kv_bytes_per_token")), export_command=str(g("export_command")).strip(),
        )  # fmt: skip

    # A gain "counts" only with Holm significance, a search CI that excludes 0, and the same on held-out items.
    @property
    def better(self) -> bool:
        return self.significant and _fin(self.gain, self.ci_low) and self.gain > 0 and self.ci_low > 0

    @property
    def worse(self) -> bool:
        return self.significant and _fin(self.gain, self.ci_high) and self.gain < 0 and self.ci_high < 0

    @property
    def remeasured(self) -> bool:
        return _fin(self.heldout_gain)

    @property
    def confirmed(self) -> bool:
        return (self.better and _fin(self.heldout_gain, self.heldout_ci_low)
                and self.heldout_gain > 0 and self.heldout_ci_low > 0)  # fmt: skip

    @property
    def extra_flops_pct(self) -> float:
        return 100.0 * (self.flops_ratio - 1.0) if _fin(self.flops_ratio) else math.nan

    def repeated_layers(self) -> list[int]:
        """The layers this configuration runs more than once (from its design parameters, else its plan)."""
        if self.design == "repeat-block" and self.i is not None and self.j is not None:
            return list(range(self.i, self.j + 1))
        if self.design in ("repeat-layer", "sublayer") and self.layer is not None:
            return [self.layer]
        try:
            from frankenlm.model.plan import parse_plan

            counts = Counter(ref.layer for ref in parse_plan(self.config))
        except Exception:  # noqa: BLE001 - any unparsable plan text simply names no layers
            return []
        return sorted(k for k, n in counts.items() if n > 1)

    def describe(self) -> str:
        """The design parameters in words."""
        if self.design == "repeat-block" and self.i is not None and self.j is not None:
            what = f"layer {self.i}" if self.i == self.j else f"block {self.i}–{self.j}"
            extra = f" (+{self.repeats} passes)" if self.repeats and self.repeats > 1 else ""
            return f"repeat {what}{extra}"
        if self.design == "repeat-layer" and self.layer is not None:
            r = self.repeats or 1
            return f"repeat layer {self.layer} (+{r} cop{'y' if r == 1 else 'ies'})"
        if self.design == "sublayer" and self.layer is not None:
            part = {"attn": "attention only", "mlp": "MLP only"}.get(self.sublayer, "whole block")
            return f"repeat layer {self.layer}, {part}"
        layers = self.repeated_layers()
        return f"{self.design}: repeats {_ranges(layers)}" if layers else self.design

    def centre(self) -> float:
        """Centre of the repeated layers (layer units), NaN when none."""
        layers = self.repeated_layers()
        return (min(layers) + max(layers)) / 2.0 if layers else math.nan


def _ranges(layers: Iterable[int]) -> str:
    """[3, 4, 5, 9] -> 'layers 3–5, 9'; [7] -> 'layer 7'."""
    ks = sorted(set(layers))
    if not ks:
        return "no layer"
    parts, start, prev = [], ks[0], ks[0]
    for k in ks[1:] + [None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if k is not None:
            start = prev = k
    return ("layer " if len(ks) == 1 else "layers ") + ", ".join(parts)


@dataclass
class _Group:
    """One model × task (primary metric): the base row and every configuration."""

    model: str
    task: str
    metric: str
    hib: bool
    depth: int | None
    base: _Row | None
    rows: list[_Row]
    by_text: dict[str, _Row] = field(default_factory=dict)
    blocks: dict[tuple[int, int], _Row] = field(default_factory=dict)
    layer_reps: dict[tuple[int, int], _Row] = field(default_factory=dict)
    subs: dict[tuple[int, str], _Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.rows:
            self.by_text.setdefault(r.config, r)
            if r.design == "repeat-block" and r.i is not None and r.j is not None and (r.repeats or 1) == 1:
                self.blocks.setdefault((r.i, r.j), r)
            elif r.design == "repeat-layer" and r.layer is not None and r.sublayer == "block":
                self.layer_reps.setdefault((r.layer, r.repeats or 1), r)
            elif r.design == "sublayer" and r.layer is not None:
                self.subs.setdefault((r.layer, r.sublayer), r)

    @property
    def slug(self) -> str:
        return _slug(f"{self.model}-{self.task}")

    @property
    def title(self) -> str:
        return f"{self.model} · {self.task} ({self.metric})"

    def has(self, design: str) -> bool:
        return any(r.design == design for r in self.rows)

    def _equivalent(self, make) -> _Row | None:
        """A row with the same canonical plan text (the sweep deduplicates identical plans across designs)."""
        if not self.depth:
            return None
        try:
            return self.by_text.get(str(make()))
        except Exception:  # noqa: BLE001
            return None

    def block(self, i: int, j: int) -> _Row | None:
        from frankenlm.model.plan import repeat_block_plan

        return self.blocks.get((i, j)) or self._equivalent(lambda: repeat_block_plan(i, j, self.depth))

    def layer_rep(self, k: int, r: int) -> _Row | None:
        from frankenlm.model.plan import repeat_layer_plan

        return self.layer_reps.get((k, r)) or self._equivalent(lambda: repeat_layer_plan(k, self.depth, extra=r))

    def sub(self, k: int, s: str) -> _Row | None:
        from frankenlm.model.plan import repeat_layer_plan

        if s == "block":
            return self.subs.get((k, s)) or self.layer_rep(k, 1)
        return self.subs.get((k, s)) or self._equivalent(lambda: repeat_layer_plan(k, self.depth, 1, sublayer=s))

    def n_layers(self) -> int:
        if self.depth:
            return self.depth
        ks = [x for r in self.rows for x in (r.i, r.j, r.layer) if x is not None]
        return max(ks) + 1 if ks else 0


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def _load(run_dir: Path) -> tuple[list[_Row], dict]:
    results = run_dir / "results.csv"
    if not results.is_file():
        raise FrankenError(f"{results} does not exist: run the study (or its analysis) before writing the report")
    with open(results, newline="", encoding="utf-8") as fh:
        rows = [_Row.parse(d) for d in csv.DictReader(fh)]
    study: dict = {}
    sp = run_dir / "study.json"
    if sp.is_file():
        try:
            study = json.loads(sp.read_text(encoding="utf-8")) or {}
        except json.JSONDecodeError as e:
            raise FrankenError(f"{sp} is not valid JSON ({e})") from None
        if not isinstance(study, dict):
            raise FrankenError(f"{sp} must hold a JSON object")
    return [r for r in rows if r.model and r.task], study


def _groups(rows: list[_Row], study: dict) -> list[_Group]:
    models = [m.get("name") for m in study.get("models") or [] if isinstance(m, dict)]
    depths = {m.get("name"): _i(m.get("depth")) for m in study.get("models") or [] if isinstance(m, dict)}
    tasks = {t.get("name"): t for t in study.get("tasks") or [] if isinstance(t, dict)}
    order_m = list(dict.fromkeys([*models, *(r.model for r in rows)]))
    order_t = list(dict.fromkeys([*tasks, *(r.task for r in rows)]))
    out = []
    for m in order_m:
        for t in order_t:
            rs = [r for r in rows if r.model == m and r.task == t]
            if not rs:
                continue
            primary = (tasks.get(t) or {}).get("primary_metric")
            metrics = list(dict.fromkeys(r.metric for r in rs))
            metric = primary if primary in metrics else metrics[0]
            rs = [r for r in rs if r.metric == metric]
            base = next((r for r in rs if r.design == "base"), None)
            depth = depths.get(m) or next((r.depth for r in rs if r.depth), None)
            hib = rs[0].hib if "higher_is_better" not in (tasks.get(t) or {}) else bool(tasks[t]["higher_is_better"])
            cfgs = [r for r in rs if r.design != "base"]
            out.append(_Group(m, t, metric, hib, depth, base, cfgs))
    return out


# ------------------------------------------------------------------------------------------ formatting


def _digits(g: _Group) -> int:
    vals = [abs(x) for r in g.rows for x in (r.gain, r.ci_low, r.ci_high) if _fin(x) and x != 0]
    if not vals:
        return 4
    m = float(np.median(vals))
    return int(min(7, max(3, 2 - math.floor(math.log10(m)))))


def _num(x: float, d: int = 4, signed: bool = True) -> str:
    if not _fin(x):
        return "—"
    return f"{x:+.{d}f}" if signed else f"{x:.{d}f}"


def _ci(lo: float, hi: float, d: int) -> str:
    return f"[{_num(lo, d)}, {_num(hi, d)}]" if _fin(lo, hi) else "—"


def _gci(g: float, lo: float, hi: float, d: int) -> str:
    return f"{_num(g, d)} {_ci(lo, hi, d)}" if _fin(g) else "—"


def _p(p: float) -> str:
    if not _fin(p):
        return "—"
    return "&lt;0.0001" if p < 1e-4 else f"{p:.3g}"


def _si(x: float, unit: str = "") -> str:
    if not _fin(x):
        return "—"
    for s, v in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= v:
            return f"{x / v:.3g} {s}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _bytes(x: float) -> str:
    if not _fin(x):
        return "—"
    for s, v in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= v:
            return f"{x / v:.3g} {s}"
    return f"{x:.0f} B"


def _pct(x: float, d: int = 1) -> str:
    return f"{x:+.{d}f}%" if _fin(x) else "—"


def _duration(seconds: float) -> str:
    if not _fin(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _gain_sense(g: _Group) -> str:
    return f"positive = better ({'higher' if g.hib else 'lower'} {g.metric})"


# --------------------------------------------------------------------------------------------- figures


class _Figures:
    """Saves figures to RUN_DIR/figures and returns <figure> HTML with the same PNG bytes embedded."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / FIGURE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):  # stale figures from an earlier report
            old.unlink()
        self.names: list[str] = []

    def add(self, fig, name: str, caption: str, alt: str) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        data = buf.getvalue()
        (self.dir / f"{name}.png").write_bytes(data)
        self.names.append(name)
        w, h = (int(round(v)) for v in fig.get_size_inches() * DPI)
        b64 = base64.b64encode(data).decode("ascii")
        return (f'<figure id="fig-{_e(name)}"><img src="data:image/png;base64,{b64}" width="{w}" height="{h}" '
                f'alt="{_e(alt)}"><figcaption>{caption} <span class="file">({FIGURE_DIR}/{_e(name)}.png)</span>'
                f"</figcaption></figure>")  # fmt: skip


def _new_fig(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _yerr(rows: list[_Row]) -> np.ndarray:
    lo = [max(r.gain - r.ci_low, 0.0) if _fin(r.gain, r.ci_low) else 0.0 for r in rows]
    hi = [max(r.ci_high - r.gain, 0.0) if _fin(r.gain, r.ci_high) else 0.0 for r in rows]
    return np.array([lo, hi])


def _zero_line(ax) -> None:
    ax.axhline(0.0, color="#777777", lw=0.8, zorder=0)


def _diverging_ticks(lo: float, hi: float) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    neg = [t for t in MaxNLocator(4).tick_values(lo, 0.0) if lo <= t <= 0.0]
    pos = [t for t in MaxNLocator(4).tick_values(0.0, hi) if 0.0 <= t <= hi]
    return sorted({round(t, 12) for t in [*neg, *pos, 0.0]})


def _fig_heatmap(g: _Group):
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
    I, J = sorted(starts | diag), sorted(ends | diag)
    cells = {(a, b): r for a, i in enumerate(I) for b, j in enumerate(J)
             if j >= i and (r := g.block(i, j)) is not None and _fin(r.gain)}  # fmt: skip
    if not cells:
        return None
    grid = np.full((len(I), len(J)), np.nan)
    valid = np.array([[j >= i for j in J] for i in I], bool)
    for (a, b), r in cells.items():
        grid[a, b] = r.gain
    kept = [r.gain for r in cells.values() if not r.stopped_early] or [r.gain for r in cells.values()]
    lo, hi = min(kept), max(kept)
    eps = 0.05 * max(abs(lo), abs(hi)) or 1e-9
    lo, hi = min(lo, -eps), max(hi, eps)
    all_g = [r.gain for r in cells.values()]
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (min(all_g) < lo, max(all_g) > hi), "neither")
    fig, (ax,) = _new_fig(7.6, 6.6)
    ax.set_facecolor("white")
    notrun = np.where(valid & np.isnan(grid), 1.0, np.nan)
    ax.imshow(notrun, cmap="Greys", vmin=0, vmax=4, interpolation="nearest", origin="upper", aspect="auto")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=colormaps["RdBu"], norm=TwoSlopeNorm(0.0, lo, hi),
                   interpolation="nearest", origin="upper", aspect="auto")  # fmt: skip
    cell_pt = 4.8 * 72 / max(len(I), len(J), 1)  # approximate cell side in points
    sig = [(a, b) for (a, b), r in cells.items() if r.significant and not r.stopped_early]
    stop = [(a, b) for (a, b), r in cells.items() if r.stopped_early]
    conf = [(a, b) for (a, b), r in cells.items() if r.confirmed]
    if sig:
        ax.scatter([b for _, b in sig], [a for a, _ in sig], s=(0.28 * cell_pt) ** 2, c="black", marker="o", lw=0)
    if stop:
        ax.scatter([b for _, b in stop], [a for a, _ in stop], s=(0.55 * cell_pt) ** 2, c="#555555", marker="x",
                   lw=max(0.5, cell_pt / 18))  # fmt: skip
    if conf:
        ax.scatter([b for _, b in conf], [a for a, _ in conf], s=(0.95 * cell_pt) ** 2, facecolors="none",
                   edgecolors="#f0a000", marker="s", lw=max(1.0, cell_pt / 10))  # fmt: skip
    ax.set_xlim(-0.5, len(J) - 0.5)
    ax.set_ylim(len(I) - 0.5, -0.5)
    for axis, vals in ((ax.xaxis, J), (ax.yaxis, I)):
        step = max(1, int(math.ceil(len(vals) / 15)))
        axis.set_ticks(range(0, len(vals), step), [str(v) for v in vals[::step]])
    ax.set_xlabel("j = last layer of the repeated block")
    ax.set_ylabel("i = first layer of the repeated block")
    ax.set_title(f"{g.model} · {g.task}: block i..j run twice", fontsize=11)
    cb = fig.colorbar(im, ax=ax, extend=extend, shrink=0.85)
    cb.set_ticks(_diverging_ticks(lo, hi))
    cb.set_label(f"gain in {g.metric} vs base ({_gain_sense(g)})")
    handles = [Line2D([], [], ls="", marker="o", color="black", ms=4, label="significant (Holm 5%)"),
               Line2D([], [], ls="", marker="x", color="#555555", ms=6, label="early-stopped (first slice only)"),
               Line2D([], [], ls="", marker="s", mfc="none", mec="#f0a000", ms=8, mew=1.5,
                      label="confirmed on held-out"),
               Patch(facecolor=colormaps["Greys"](0.25), label="not run")]  # fmt: skip
    ax.legend(handles=handles, loc="lower left", fontsize=8, frameon=True)
    return fig


def _repeat_curves(g: _Group) -> tuple[list[int], dict[int, list[tuple[int, _Row]]]]:
    src = [r for r in g.rows if r.design == "repeat-layer" and r.layer is not None]
    layers = sorted({r.layer for r in src})
    # r = 1 is also a 1-layer block (or a sublayer 'block' repeat): deduplicated plans keep one design's name
    counts = sorted({r.repeats or 1 for r in src} | {1})
    curves = {}
    for k in layers:
        pts = [(c, row) for c in counts if (row := g.layer_rep(k, c)) is not None and _fin(row.gain)]
        if pts:
            curves[k] = pts
    return counts, curves


def _fig_repeats(g: _Group):
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    counts, curves = _repeat_curves(g)
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
    ax2.errorbar(xs, [r.gain for r in rows], yerr=_yerr(rows), color="#333333", marker="", ls="", lw=0.8,
                 capsize=2, zorder=1)  # fmt: skip
    colors = [cmap(norm(k)) for k in xs]
    ax2.scatter(xs, [r.gain for r in rows], c=colors, s=36, zorder=2,
                edgecolors=["black" if r.significant else "none" for r in rows], linewidths=1.2)  # fmt: skip
    for k, c, r in best:
        ax2.annotate(f"r={c}", (k, r.ci_high if _fin(r.ci_high) else r.gain), textcoords="offset points",
                     xytext=(0, 4), ha="center", fontsize=7)  # fmt: skip
    _zero_line(ax2)
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("layer")
    ax2.set_ylabel(f"best gain in {g.metric}")
    ax2.set_title("best gain per layer (label: its repeat count; black edge: significant)", fontsize=10)
    fig.suptitle(f"{g.model} · {g.task}: single-layer repeats", fontsize=11)
    return fig


def _fig_sublayers(g: _Group):
    layers = sorted({r.layer for r in g.rows if r.design == "sublayer" and r.layer is not None})
    series = {s: [(k, r) for k in layers if (r := g.sub(k, s)) is not None and _fin(r.gain)]
              for s in ("attn", "mlp", "block")}  # fmt: skip
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
        ax.errorbar(xs, [r.gain for r in rows], yerr=_yerr(rows), ls="", marker=marker, color=color, ms=5,
                    capsize=2, label=label)  # fmt: skip
        sig = [(x, r.gain) for x, r in zip(xs, rows) if r.significant and not r.stopped_early]
        if sig:
            ax.scatter(*zip(*sig), s=90, facecolors="none", edgecolors=color, linewidths=1.0)
    _zero_line(ax)
    ax.set_xticks(layers if len(layers) <= 32 else layers[:: math.ceil(len(layers) / 32)])
    ax.set_xlabel("layer repeated once")
    ax.set_ylabel(f"gain in {g.metric} ({_gain_sense(g)})")
    ax.set_title(f"{g.model} · {g.task}: attention-only vs MLP-only vs whole-block repeat\n(95% CI; ring = "
                 "significant after Holm)", fontsize=10)  # fmt: skip
    ax.legend(fontsize=8)
    return fig


def _pareto(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points not dominated in (lower cost, higher gain), cheapest first; the base (0, 0) anchors the front."""
    front, best = [], -math.inf
    for x, y, r in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y, r))
            best = y
    return front


def _cost_axis(g: _Group) -> tuple[str, Any]:
    if any(_fin(r.flops_ratio) for r in g.rows):
        return "extra FLOPs per token (% of base)", lambda r: r.extra_flops_pct
    return "extra FLOPs per token (GFLOP)", lambda r: r.extra_flops / 1e9 if _fin(r.extra_flops) else math.nan


def _fig_cost(g: _Group):
    from matplotlib.lines import Line2D

    label, cost = _cost_axis(g)
    pts = [(cost(r), r.gain, r) for r in g.rows if _fin(cost(r), r.gain)]
    if not pts:
        return None
    kept = [p for p in pts if not p[2].stopped_early]
    front = [p for p in _pareto([(0.0, 0.0, None), *kept]) if p[2] is not None]
    fig, (ax,) = _new_fig(8.6, 5.2)
    designs = [d for d in [*DESIGN_ORDER, *sorted({r.design for _, _, r in pts})] if d in {r.design for *_, r in pts}]
    for d in dict.fromkeys(designs):
        color = DESIGN_COLORS.get(d, "#777777")
        plain = [p for p in kept if p[2].design == d and not p[2].better]
        good = [p for p in kept if p[2].design == d and p[2].better]
        for k, sel in enumerate((plain, good)):
            if sel:
                ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=18, alpha=0.7, color=color,
                           edgecolors="black" if k else "none", linewidths=0.9 if k else 0,
                           label=d if k == 0 or not plain else None)  # fmt: skip
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
            ax.scatter([p[0] for p in inside], [p[1] for p in inside], s=14, marker="x", color="#999999", lw=0.8,
                       label="early-stopped")  # fmt: skip
        for sel, y, m in ((above, yhi, "^"), (below, ylo, "v")):
            if sel:
                ax.scatter([p[0] for p in sel], [y] * len(sel), s=22, marker=m, color="#999999", clip_on=False,
                           label=f"early-stopped, off scale ({'above' if m == '^' else 'below'})")  # fmt: skip
    elif stopped:
        ax.scatter([p[0] for p in stopped], [p[1] for p in stopped], s=14, marker="x", color="#999999", lw=0.8,
                   label="early-stopped")  # fmt: skip
    if front:
        fx = [0.0] + [p[0] for p in front]
        fy = [0.0] + [p[1] for p in front]
        ax.step(fx, fy, where="post", color="#c00000", lw=1.2, label="Pareto front")
        rows = [p[2] for p in front]
        ax.errorbar([p[0] for p in front], [p[1] for p in front], yerr=_yerr(rows), ls="", color="#c00000",
                    capsize=2, lw=0.8)  # fmt: skip
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=60, facecolors="none", edgecolors="#c00000",
                   lw=1.2)  # fmt: skip
    ax.scatter([0.0], [0.0], marker="*", s=120, c="black", zorder=5, label="base")
    _zero_line(ax)
    ax.set_xlabel(label)
    ax.set_ylabel(f"gain in {g.metric} ({_gain_sense(g)})")
    ax.set_title(f"{g.model} · {g.task}: quality vs cost (black edge: significantly better on search)",
                 fontsize=10)  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="significantly better (search)"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig


def _is_bpb(metric: str) -> bool:
    m = metric.lower()
    return m in ("bits_per_byte", "bpb") or "bits_per_byte" in m


def _fig_sizes(groups: list[_Group]):
    from matplotlib import colormaps

    singles, blocks = {}, {}
    for g in groups:
        n = g.n_layers()
        if not n:
            continue
        s = [(((k + 0.5) / n), r) for k in range(n) if (r := g.layer_rep(k, 1)) is not None and _fin(r.gain)]
        b = [(((r.centre() + 0.5) / n), r) for r in g.rows
             if r.design == "repeat-block" and _fin(r.gain, r.centre()) and not r.stopped_early]  # fmt: skip
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
            ax.errorbar([x for x, _ in pts], [r.gain for r in rows], yerr=_yerr(rows), marker="o", ms=4, lw=1.2,
                        capsize=2, color=colors(models.index(m) % 10), label=m)  # fmt: skip
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


# ---------------------------------------------------------------------------------------------- tables


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


def _html_table(headers: list[str], body: list[list[str]], csv_path: str | None = None, cls: str = "",
                sub: list[str] | None = None) -> str:
    """A table; `sub` adds a full-width second line under each row (e.g. a long command)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    rows = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
        + (f'<tr class="sub"><td></td><td colspan="{len(headers) - 1}">{sub[k]}</td></tr>' if sub else "")
        for k, r in enumerate(body))  # fmt: skip
    note = f'<p class="file">CSV: {_e(csv_path)}</p>' if csv_path else ""
    return (f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f"</div>{note}")


def _top_rows(g: _Group) -> list[_Row]:
    ok = [r for r in g.rows if not r.stopped_early and _fin(r.gain)]
    return sorted(ok, key=lambda r: (-r.gain, r.config))[:TOP_N]


def _shrinkage(g: _Group) -> tuple[int, float, float, float]:
    """Over configs re-measured on held-out items: count, mean search gain, mean held-out gain, mean shrinkage."""
    re_ = [r for r in g.rows if r.remeasured and _fin(r.gain)]
    if not re_:
        return 0, math.nan, math.nan, math.nan
    s = float(np.mean([r.gain for r in re_]))
    h = float(np.mean([r.heldout_gain for r in re_]))
    return len(re_), s, h, float(np.mean([r.gain - r.heldout_gain for r in re_]))


def _top_table(run_dir: Path, g: _Group) -> str:
    top = _top_rows(g)
    if not top:
        return '<p class="omit">No configuration has a full-budget search estimate, so there is no top table.</p>'
    d = _digits(g)
    csv_rows, body, cmds = [], [], []
    for rank, r in enumerate(top, 1):
        shrink = r.gain - r.heldout_gain if r.remeasured else math.nan
        csv_rows.append({
            "rank": rank, "model": g.model, "task": g.task, "metric": g.metric, "config": r.config,
            "design": r.design, "params": r.describe(), "gain": r.gain, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "p_holm": r.p_holm, "significant": int(r.significant), "heldout_gain": r.heldout_gain,
            "heldout_ci_low": r.heldout_ci_low, "heldout_ci_high": r.heldout_ci_high, "shrinkage": shrink,
            "confirmed": int(r.confirmed), "fp32_gain": r.fp32_gain, "extra_flops_per_token": r.extra_flops,
            "extra_flops_pct": r.extra_flops_pct, "kv_bytes_per_token": r.kv_bytes,
            "export_command": r.export_command,
        })  # fmt: skip
        verdict = ('<span class="ok">confirmed</span>' if r.confirmed else
                   ('<span class="warn">not confirmed</span>' if r.better and r.remeasured else ""))
        body.append([
            str(rank), f"<code>{_e(r.config)}</code>", _e(r.describe()),
            _gci(r.gain, r.ci_low, r.ci_high, d) + (" <b>*</b>" if r.better else ""), _p(r.p_holm),
            _gci(r.heldout_gain, r.heldout_ci_low, r.heldout_ci_high, d) + (f"<br>{verdict}" if verdict else ""),
            _num(shrink, d), _num(r.fp32_gain, d),
            f"{_pct(r.extra_flops_pct)}<br><span class=small>{_si(r.extra_flops, 'FLOP')}</span>",
        ])  # fmt: skip
        cmds.append(f"export: <code class=cmd>{_e(r.export_command)}</code>" if r.export_command
                    else "export: —")  # fmt: skip
    path = _write_csv(run_dir, f"top_{g.slug}", csv_rows)
    headers = ["#", "config", "design", "search gain [95% CI]", "p (Holm)", "held-out gain [95% CI]",
               "shrinkage", "fp32 gain", "extra FLOPs/token"]  # fmt: skip
    n, s, h, k = _shrinkage(g)
    if n:
        wc = (f"Winner's curse: across the {_plural(n, 'configuration')} re-measured on held-out items, the mean "
              f"search gain is {_num(s, d)} and the mean held-out gain {_num(h, d)}: a mean shrinkage of "
              f"{_num(k, d)} {_e(g.metric)} from search to held-out.")  # fmt: skip
    else:
        wc = "No configuration was re-measured on held-out items, so the shrinkage from search to held-out is unknown."
    return (f"<h3>Top configurations by search gain</h3>"
            f'<p class="small">Early-stopped configurations excluded; at most {TOP_N}. Gains in {_e(g.metric)}, '
            f"{_e(_gain_sense(g))}. <b>*</b> = significantly better on search (Holm 5%, CI excludes 0). "
            f"Shrinkage = search gain − held-out gain.</p>"
            + _html_table(headers, body, path, "top", sub=cmds) + f'<p class="note">{wc}</p>')  # fmt: skip


# --------------------------------------------------------------------------------------------- answers


def _answer_layers(g: _Group) -> str:
    d = _digits(g)
    rows = [r for r in g.rows if _fin(r.gain)]
    n = len(rows)
    if not n:
        return f"No configuration has a {_e(g.metric)} estimate."
    better = [r for r in rows if r.better]
    worse = [r for r in rows if r.worse]
    conf = sorted([r for r in rows if r.confirmed], key=lambda r: (-r.heldout_gain, r.config))
    tail = f" {_plural(len(worse), 'configuration')} of {n} are significantly worse than the base." if worse else ""
    if not better:
        top = _top_rows(g)
        best = ""
        if top:
            b = top[0]
            verdict = ("itself significantly worse than the base" if b.worse
                       else "not a significant improvement after Holm")
            best = (f" The highest search estimate is {_num(b.gain, d)} (95% CI {_ci(b.ci_low, b.ci_high, d)}) for "
                    f"{_e(b.describe())} (<code>{_e(b.config)}</code>), {verdict}.")  # fmt: skip
        return (f"No configuration improves {_e(g.metric)} significantly on the search items "
                f"({n} configurations, Holm-corrected at 5%).{best}{tail}")  # fmt: skip
    re_ = [r for r in better if r.remeasured]
    if not conf:
        if not re_:
            return (f"{_plural(len(better), 'configuration')} {'is' if len(better) == 1 else 'are'} significantly "
                    f"better on the search items, but none was re-measured on held-out items, so no improvement is "
                    f"confirmed.{tail}")  # fmt: skip
        b = max(re_, key=lambda r: r.gain)
        fail = ("the only one re-measured on held-out items does not survive the held-out check" if len(re_) == 1
                else f"none of the {len(re_)} configurations re-measured on held-out items survives the held-out check")
        return (f"{_plural(len(better), 'configuration')} {'is' if len(better) == 1 else 'are'} significantly better "
                f"on the search items, but {fail} ({'' if len(re_) == 1 else 'e.g. '}{_e(b.describe())}: search "
                f"{_num(b.gain, d)}, held-out {_gci(b.heldout_gain, b.heldout_ci_low, b.heldout_ci_high, d)})"
                + (f"; {len(better) - len(re_)} were not re-measured" if len(better) > len(re_) else "")
                + f". No improvement is confirmed.{tail}")  # fmt: skip
    b = conf[0]
    lead = (f"{_plural(len(conf), 'configuration')} of {n} {'improves' if len(conf) == 1 else 'improve'} "
            f"{_e(g.metric)} (significant on search after Holm, confirmed on held-out items). ")  # fmt: skip
    best = (f"The best by held-out gain is {_e(b.describe())} (plan <code>{_e(b.config)}</code>): search "
            f"{_gci(b.gain, b.ci_low, b.ci_high, d)}, held-out "
            f"{_gci(b.heldout_gain, b.heldout_ci_low, b.heldout_ci_high, d)}.")  # fmt: skip
    counts = Counter(k for r in conf for k in r.repeated_layers())
    most = ""
    if len(conf) > 1 and counts:
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        most = (" The layers most often repeated in confirmed configurations: "
                + ", ".join(f"layer {k} ({c}×)" for k, c in items) + ".")  # fmt: skip
    others = ""
    if len(conf) > 1:
        others = " Next: " + "; ".join(f"{_e(r.describe())} (held-out {_num(r.heldout_gain, d)})"
                                       for r in conf[1:4]) + "."
    failed = sum(r.remeasured for r in better) - len(conf)
    unmeasured = len(better) - len(conf) - failed
    extra = (f" {_plural(failed, 'other significant search result')} did not survive the held-out check."
             if failed else "")
    if unmeasured:
        extra += (f" {_plural(unmeasured, 'other significant search result')} "
                  f"{'was' if unmeasured == 1 else 'were'} not re-measured on held-out items.")
    return lead + best + most + others + extra + tail


def _answer_counts(g: _Group) -> str:
    d = _digits(g)
    counts, curves = _repeat_curves(g)
    if not curves:
        return "The repeat-layer design wasn't run, so the repeat count can't be answered from curves."
    if len(counts) < 2:
        return f"Only r = {counts[0]} extra copy was measured per layer, so there is no curve over repeat counts."
    best_at: Counter = Counter()
    steps = Counter()
    all_neg = 0
    per_layer = {}
    # racing stops configurations that are clearly worse; when it stopped all of them, their first-slice
    # estimates (wider CIs) are still informative about the shape of the curve, and are labelled as such
    only_stopped = not any(not r.stopped_early for pts in curves.values() for _, r in pts)
    for k, pts in curves.items():
        ok = [(c, r) for c, r in pts if only_stopped or not r.stopped_early]
        if not ok:
            continue
        c_best, r_best = max(ok, key=lambda p: (p[1].gain, -p[0]))
        best_at[c_best] += 1
        per_layer[k] = (c_best, r_best, ok)
        all_neg += all(r.gain < 0 for _, r in ok)
        for (c0, r0), (c1, r1) in zip(ok, ok[1:]):
            if c1 != c0 + 1 or not _fin(r0.ci_low, r0.ci_high):
                continue
            steps["above" if r1.gain > r0.ci_high else "below" if r1.gain < r0.ci_low else "within"] += 1
    if not per_layer:
        return "Every repeat-layer configuration was early-stopped, so the repeat count can't be answered."
    L = len(per_layer)
    dist = ", ".join(f"r = {c} for {_plural(n, 'layer')}" for c, n in sorted(best_at.items()))
    text = ("Every repeat-layer configuration was stopped early as clearly worse than the base, so these "
            "estimates come from the first slice of tokens only (wider CIs). " if only_stopped else "")
    text += (f"Repeat-layer curves cover {_plural(L, 'layer')} with r = {min(counts)}..{max(counts)} extra copies. "
            f"The count with the highest gain (point estimate) is {dist}.")  # fmt: skip
    T = sum(steps.values())
    if T:
        text += (f" From r to r+1 copies, the gain at r+1 lies above the 95% CI of r in {steps['above']} of {T} "
                 f"steps, within it in {steps['within']}, and below it in {steps['below']}.")  # fmt: skip
    if all_neg:
        text += f" For {all_neg} of {L} layers every count measured has a point estimate below the base (gain &lt; 0)."
    k, (c_best, r_best, ok) = max(per_layer.items(), key=lambda kv: (kv[1][1].gain, -kv[0]))
    curve = ", ".join(f"r = {c}: {_gci(r.gain, r.ci_low, r.ci_high, d)}" for c, r in ok)
    text += f" Layer {k} has the highest gain ({curve}); its best count is r = {c_best}"
    nxt = next((r for c, r in ok if c == c_best + 1), None)
    if r_best.gain <= 0:
        text += ", and even that is not above the base: no repeat count of this layer has a positive gain."
    elif c_best == max(c for c, _ in ok):
        text += ", the largest count measured, so more copies were not tested."
    elif nxt is not None and _fin(r_best.ci_low, r_best.ci_high):
        if nxt.gain < r_best.ci_low:
            text += f", and r = {c_best + 1} falls below its CI: more copies lower the gain after r = {c_best}."
        elif nxt.gain <= r_best.ci_high:
            text += (f", and r = {c_best + 1} stays within its CI: no detectable benefit from more copies "
                     f"(diminishing returns).")  # fmt: skip
        else:
            text += "."
    else:
        text += "."
    if not r_best.confirmed:
        text += " (These are point estimates; none is a confirmed improvement unless listed in the first answer.)"
    return text


def _threshold(xs: list[int], flags: list[bool]) -> tuple[str, int] | None:
    """('before', t) if the flag holds exactly for x < t, ('from', t) if exactly for x >= t, else None."""
    n, k = len(flags), sum(flags)
    if k == 0 or k == n:
        return None
    if all(flags[:k]) and not any(flags[k:]):
        return "before", xs[k]
    if not any(flags[: n - k]) and all(flags[n - k :]):
        return "from", xs[n - k]
    return None


def _answer_threshold(g: _Group) -> str:
    parts = []
    n = g.n_layers()
    singles = [(k, r) for k in range(n) if (r := g.layer_rep(k, 1)) is not None and _fin(r.gain)]
    if len(singles) >= 3:
        xs = [k for k, _ in singles]
        for word, flags in (("significantly worse", [r.worse for _, r in singles]),
                            ("significantly better", [r.better for _, r in singles])):  # fmt: skip
            hits = [k for k, f in zip(xs, flags) if f]
            if not hits:
                parts.append(f"No single-layer repeat is {word} (of {len(xs)} layers).")
                continue
            if len(hits) == len(xs):
                parts.append(f"Every single-layer repeat measured ({len(xs)} layers) is {word}: no threshold "
                             f"within the range measured.")  # fmt: skip
                continue
            t = _threshold(xs, flags)
            rel = f" (relative depth {t[1] / n:.2f})" if t and n else ""
            if t and t[0] == "before":
                parts.append(f"Repeating any single layer before layer {t[1]} ({_ranges(hits)}) is {word}; from "
                             f"layer {t[1]} on, none is: a threshold at layer {t[1]}{rel}.")  # fmt: skip
            elif t:
                parts.append(f"From layer {t[1]} on, every single-layer repeat is {word} ({_ranges(hits)}); "
                             f"before it, none is: a threshold at layer {t[1]}{rel}.")  # fmt: skip
            else:
                parts.append(f"Single-layer repeats that are {word}: {_ranges(hits)}; these are not all the "
                             "layers on one side of a cut-off, so there is no clean positional threshold.")
    blocks = [r for r in g.rows if r.design == "repeat-block" and r.i is not None and r.j is not None
              and _fin(r.gain)]  # fmt: skip
    if blocks:
        by_len: dict[int, list[_Row]] = {}
        for r in blocks:
            by_len.setdefault(r.j - r.i + 1, []).append(r)
        lengths = sorted(by_len)
        frac = {L: sum(r.worse for r in by_len[L]) / len(by_len[L]) for L in lengths}
        lstar = None
        for L in reversed(lengths):
            if frac[L] < 1.0:
                break
            lstar = L
        first, last = lengths[0], lengths[-1]
        share = (f"the share of significantly worse blocks is {100 * frac[first]:.0f}% at length {first} and "
                 f"{100 * frac[last]:.0f}% at length {last}")  # fmt: skip
        if not any(frac.values()):
            parts.append(f"No repeated block is significantly worse at any length ({first}–{last} layers).")
        elif lstar is None:
            parts.append(f"Among repeated blocks, no block length makes every block significantly worse ({share}).")
        elif lstar == first:
            parts.append("Every repeated block of every length is significantly worse: no length threshold.")
        else:
            parts.append(f"Every repeated block of {lstar} or more layers is significantly worse, while shorter "
                         f"ones are not all worse: a length threshold at {lstar} layers ({share}).")  # fmt: skip
    if not parts:
        return "Neither single-layer nor block repeats were measured across enough layers to look for a threshold."
    return " ".join(parts)


def _answer_sizes(groups: list[_Group]) -> list[str]:
    out = []
    tasks = list(dict.fromkeys(g.task for g in groups))
    for t in tasks:
        gs = [g for g in groups if g.task == t]
        if len(gs) < 2:
            continue
        bits = []
        for g in gs:
            d, n = _digits(g), g.n_layers()
            rows = [r for r in g.rows if _fin(r.gain)]
            if not rows:
                continue
            worse = sum(r.worse for r in rows)
            conf = sum(r.confirmed for r in rows)
            top = _top_rows(g)
            desc = ""
            if top:
                b = top[0]
                rel = f", relative depth {(b.centre() + 0.5) / n:.2f}" if n and _fin(b.centre()) else ""
                desc = (f"; highest search estimate {_num(b.gain, d)} {_ci(b.ci_low, b.ci_high, d)} for "
                        f"{_e(b.describe())}{rel}")
            singles = [(k, r) for k in range(n) if (r := g.layer_rep(k, 1)) is not None and _fin(r.gain)
                       and not r.stopped_early]  # fmt: skip
            srel = ""
            if len(singles) >= 2:
                k, r = max(singles, key=lambda p: (p[1].gain, -p[0]))
                srel = f"; best single-layer repeat at layer {k} of {n} (relative depth {(k + 0.5) / n:.2f})"
            bits.append(f"{_e(g.model)} ({n} layers): {_plural(len(rows), 'configuration')}, "
                        f"{100 * worse / len(rows):.0f}% significantly worse, {conf} confirmed improvement"
                        f"{'' if conf == 1 else 's'}{desc}{srel}")  # fmt: skip
        if len(bits) >= 2:
            out.append(f"<b>{_e(t)}</b> ({_e(gs[0].metric)}): " + "; ".join(bits) +
                       f". With {len(bits)} model sizes this describes these models only, not a trend.")  # fmt: skip
    return out


def _answer_cost(g: _Group) -> str:
    d = _digits(g)
    rows = [r for r in g.rows if _fin(r.gain)]
    if not rows:
        return "No configuration was measured."
    pct = [r.extra_flops_pct for r in rows if _fin(r.extra_flops_pct)]
    base_kv = g.base.kv_bytes if g.base else math.nan
    base_p = g.base.effective_params if g.base else math.nan
    rng = f"Extra FLOPs per token range from {_pct(min(pct))} to {_pct(max(pct))} of the base. " if pct else ""
    conf = sorted([r for r in rows if r.confirmed], key=lambda r: (-r.heldout_gain, r.config))
    if conf:
        b, what = conf[0], "The best confirmed configuration,"
    else:
        top = _top_rows(g)
        if not top:
            return rng + "Repeated layers reuse the stored weights: zero extra parameter bytes."
        b, what = top[0], "Nothing is confirmed; for reference, the configuration with the highest search estimate,"
    kv = _bytes(b.kv_bytes)
    if _fin(b.kv_bytes, base_kv) and base_kv > 0:
        kv += f" per token ({_pct(100 * (b.kv_bytes / base_kv - 1))} vs the base's {_bytes(base_kv)})"
    else:
        kv += " per token"
    ep = _si(b.effective_params)
    if _fin(b.effective_params, base_p) and base_p > 0:
        ep += f" ({_pct(100 * (b.effective_params / base_p - 1))})"
    label, cost = _cost_axis(g)
    front = [p for p in _pareto([(0.0, 0.0, None)] + [(cost(r), r.gain, r) for r in rows
                                                      if not r.stopped_early and _fin(cost(r))]) if p[2] is not None]
    return (rng + f"{what} {_e(b.describe())} with search gain {_num(b.gain, d)}, costs "
            f"{_pct(b.extra_flops_pct)} FLOPs per token ({_si(b.extra_flops, 'FLOP')}), a KV cache of {kv}, {ep} "
            f"effective parameters per token, and zero extra parameter bytes (repeated layers reuse the stored "
            f"weights). "
            + (f"{_plural(len(front), 'configuration')} lie{'s' if len(front) == 1 else ''} on the quality-vs-cost "
               f"Pareto front." if front else "No configuration beats the base at any cost, so the quality-vs-cost "
               "Pareto front is the base alone."))  # fmt: skip


def _answer_signals(study: dict) -> list[str]:
    """Rank correlation between per-layer signals of the base model and measured single-layer-repeat gains."""
    out = []
    for model, tasks in (study.get("signals") or {}).items():
        for task, chk in tasks.items():
            parts = []
            for name, label in (("block_influence", "block influence"), ("angular_distance", "angular distance")):
                c = chk.get(name) or {}
                if c.get("n", 0) < 3 or not _fin(c.get("rho", float("nan"))):
                    continue
                strength = "strongly" if abs(c["rho"]) >= 0.7 else "moderately" if abs(c["rho"]) >= 0.4 else "weakly"
                sig = "significant" if c["p_value"] < 0.05 else "not significant"
                parts.append(f"{label}: Spearman ρ = {c['rho']:+.2f} over {c['n']} layers (p = {c['p_value']:.2g}, "
                             f"{sig}; {strength} {'positively' if c['rho'] > 0 else 'negatively'} related to the gain)")
            if parts:
                out.append(f"<b>{_e(model)} · {_e(task)}</b>: " + "; ".join(parts) + ". The search design ranks "
                           "candidate layers by lowest block influence.")
            else:
                out.append(f"<b>{_e(model)} · {_e(task)}</b>: fewer than 3 single-layer repeats measured, so the "
                           "signals could not be checked.")
    return out


def _answers(groups: list[_Group], study: dict | None = None) -> str:
    def bullets(fn) -> str:
        return "<ul>" + "".join(f"<li><b>{_e(g.title)}</b>: {fn(g)}</li>" for g in groups) + "</ul>"

    qs = [("Which layers are most beneficial to repeat?", bullets(_answer_layers)),
          ("How many times?", bullets(_answer_counts)),
          ("Is there a threshold?", bullets(_answer_threshold))]  # fmt: skip
    if len({g.model for g in groups}) > 1:
        sizes = _answer_sizes(groups)
        body = ("<ul>" + "".join(f"<li>{s}</li>" for s in sizes) + "</ul>") if sizes else \
            "<p>No task was measured on more than one model.</p>"  # fmt: skip
        qs.append(("Does it depend on model size?", body))
    sig = _answer_signals(study or {})
    if sig:
        qs.append(("Do cheap per-layer signals predict the gains?",
                   "<ul>" + "".join(f"<li>{x}</li>" for x in sig) + "</ul>"))
    qs.append(("What does it cost?", bullets(_answer_cost)))
    return "".join(f'<div class="qa"><h3>{q}</h3>{a}</div>' for q, a in qs)


# ---------------------------------------------------------------------------------------------- header


def _header(run_dir: Path, study: dict, groups: list[_Group], rows: list[_Row]) -> str:
    models = [m for m in study.get("models") or [] if isinstance(m, dict)]
    if not models:
        models = [{"name": m, "depth": next((g.depth for g in groups if g.model == m), None)}
                  for m in dict.fromkeys(r.model for r in rows)]  # fmt: skip
    tasks = [t for t in study.get("tasks") or [] if isinstance(t, dict)]
    if not tasks:
        tasks = [{"name": t, "primary_metric": next(g.metric for g in groups if g.task == t)}
                 for t in dict.fromkeys(g.task for g in groups)]  # fmt: skip
    mrows = [{"model": m.get("name"), "depth": m.get("depth"), "params": m.get("params")} for m in models]
    mpath = _write_csv(run_dir, "models", mrows)
    mtable = _html_table(["model", "layers", "parameters"],
                         [[_e(r["model"]), _e(r["depth"] if r["depth"] is not None else "—"),
                           _si(_f(r["params"]))] for r in mrows], mpath)  # fmt: skip
    trows = []
    for t in tasks:
        name = t.get("name")
        full = [r.n_tokens for r in rows
                if r.task == name and not r.stopped_early and r.n_tokens and r.design != "base"]
        trows.append({"task": name, "primary_metric": t.get("primary_metric"),
                      "higher_is_better": t.get("higher_is_better"), "search_items": t.get("search_items"),
                      "heldout_items": t.get("heldout_items"), "search_tokens": t.get("search_tokens"),
                      "median_scored_tokens_per_config": float(np.median(full)) if full else math.nan})  # fmt: skip
    tpath = _write_csv(run_dir, "tasks", trows)
    yn = lambda v: "—" if v is None else ("higher" if _b(v) else "lower")  # noqa: E731
    ttable = _html_table(
        ["task", "primary metric", "better", "search items", "held-out items", "search token budget",
         "scored tokens / config (median)"],
        [[_e(r["task"]), _e(r["primary_metric"] or "—"), yn(r["higher_is_better"]),
          _e(r["search_items"] if r["search_items"] is not None else "—"),
          _e(r["heldout_items"] if r["heldout_items"] is not None else "—"),
          _si(_f(r["search_tokens"])), _si(r["median_scored_tokens_per_config"])] for r in trows], tpath)  # fmt: skip
    meta = []
    meta.append(("Models", ", ".join(_e(m.get("name")) for m in models) or "—"))
    meta.append(("Tasks", ", ".join(_e(t.get("name")) for t in tasks) or "—"))
    meta.append(("Designs", ", ".join(_e(x) for x in study.get("designs") or []) or
                 ", ".join(_e(x) for x in dict.fromkeys(r.design for r in rows if r.design != "base")) or "—"))
    meta.append(("dtype", _e(study.get("dtype") or "—")))
    budgets = ", ".join(f"{_e(t.get('name'))}: {_si(_f(t.get('search_tokens')), 'tokens')}" for t in tasks
                        if _fin(_f(t.get("search_tokens"))))  # fmt: skip
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
        meta.append(("Timings", ", ".join(f"{_e(k)}: {_duration(_f(v)) if _fin(_f(v)) else _e(v)}"
                                          for k, v in timings.items())))  # fmt: skip
    es = study.get("early_stopping")
    n_stop = sum(r.stopped_early for r in rows)
    if isinstance(es, dict):
        es_txt = (", ".join(f"{_e(k)}={_e(v)}" for k, v in es.items())
                  + f" — {n_stop} (model, config, task) rows stopped early")
    else:
        es_txt = "off" if not n_stop else f"{n_stop} rows stopped early"
    meta.append(("Early stopping", es_txt))
    meta.append(("Command", f"<code class=cmd>{_e(study.get('command') or '—')}</code>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta)
    missing = "" if study else '<p class="warn">study.json is missing: header details are derived from results.csv.</p>'
    return f'<dl class="meta">{dl}</dl>{missing}<h3>Models</h3>{mtable}<h3>Tasks</h3>{ttable}'


def _summary_line(g: _Group) -> tuple[str, dict]:
    rows = [r for r in g.rows if _fin(r.gain)]
    designs = Counter(r.design for r in g.rows)
    stats = {"model": g.model, "task": g.task, "metric": g.metric, "configs": len(g.rows),
             "with_estimate": len(rows), "significantly_better": sum(r.better for r in rows),
             "significantly_worse": sum(r.worse for r in rows), "early_stopped": sum(r.stopped_early for r in g.rows),
             "remeasured_heldout": sum(r.remeasured for r in rows), "confirmed": sum(r.confirmed for r in rows),
             "fp32_rechecked": sum(_fin(r.fp32_gain) for r in rows),
             "base_value": (g.base.value if g.base and _fin(g.base.value)
                            else g.base.base_value if g.base else math.nan)}
    if not _fin(stats["base_value"]):
        stats["base_value"] = next((r.base_value for r in rows if _fin(r.base_value)), math.nan)
    dtxt = ", ".join(f"{_e(k)} {v}" for k, v in designs.items())
    sense = (f"gain = {'value − base' if g.hib else 'base − value'}, {_gain_sense(g)}")
    bv = f"{stats['base_value']:.4f}" if _fin(stats["base_value"]) else "—"
    text = (f"Base {_e(g.metric)} = {bv}; {_e(sense)}. {len(g.rows)} configurations ({dtxt}): "
            f"{stats['significantly_better']} significantly better and {stats['significantly_worse']} significantly "
            f"worse on search (Holm 5%), {stats['early_stopped']} early-stopped, {stats['remeasured_heldout']} "
            f"re-measured on held-out, <b>{stats['confirmed']} confirmed</b>, {stats['fp32_rechecked']} re-checked "
            f"in fp32.")  # fmt: skip
    return text, stats


# ------------------------------------------------------------------------------------------------ page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1180px;margin:0 auto;
padding:0 18px 40px;background:#fff}
h1{font-size:24px;margin:22px 0 4px}h2{font-size:19px;margin:30px 0 8px;border-bottom:2px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#666;margin:0 0 12px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:10px 0}
dl.meta dt{font-weight:600;color:#444}dl.meta dd{margin:0}
code{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f4f4f4;padding:1px 3px;
border-radius:3px}
code.cmd{overflow-wrap:anywhere;white-space:pre-wrap}
table.top td:nth-child(3){min-width:120px}
table.top tr.sub td{border-top:none;padding-top:0;font-size:11.5px;color:#555;background:inherit}
table.top tbody tr:nth-child(4n+3),table.top tbody tr:nth-child(4n+4){background:#fafafa}
table.top tbody tr:nth-child(4n+1),table.top tbody tr:nth-child(4n+2){background:#fff}
table.top tr:not(.sub) td{border-bottom:none}
.tw{overflow-x:auto}
table{border-collapse:collapse;margin:6px 0;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f5f8}tbody tr:nth-child(even){background:#fafafa}
table.top td:nth-child(4),table.top td:nth-child(6){white-space:nowrap}
figure{margin:14px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12.5px;color:#555}
.file{color:#888;font-size:11.5px}.small{font-size:12px;color:#555}
.omit{color:#777;font-style:italic}.note{background:#f7f7f2;border-left:3px solid #cc9;padding:5px 9px}
.ok{color:#17692b;font-weight:600}.warn{color:#a05a00;font-weight:600}
.qa ul{margin:4px 0 10px 0;padding-left:20px}.qa li{margin:3px 0}
nav ul{columns:2;font-size:13px;padding-left:20px}
"""


def _omit(what: str, g: _Group) -> str:
    return f'<p class="omit">The {what} design wasn\'t run for {_e(g.title)}, so its figure is omitted.</p>'


def write_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.html (self-contained), RUN_DIR/figures/*.png and RUN_DIR/tables/*.csv from
    RUN_DIR/results.csv and RUN_DIR/study.json. Returns the report's path. Never loads a model."""
    run_dir = Path(run_dir)
    rows, study = _load(run_dir)
    groups = _groups(rows, study)
    figs = _Figures(run_dir)
    tdir = run_dir / TABLE_DIR
    if tdir.is_dir():
        for old in tdir.glob("*.csv"):
            old.unlink()
    import matplotlib

    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                                "svg.hashsalt": "frankenlm", "figure.max_open_warning": 0}):  # fmt: skip
        header = _header(run_dir, study, groups, rows)
        sections, summaries, nav = [], [], []
        for g in groups:
            text, st = _summary_line(g)
            summaries.append(st)
            parts = [f'<section id="g-{_e(g.slug)}"><h2>{_e(g.title)}</h2><p>{text}</p>']
            for design, fn, name, caption in (
                ("repeat-block", _fig_heatmap, "heatmap",
                 "Gain of running block i..j twice, over (i, j); colour in metric units, positive = better (blue). "
                 "Dot: significant after Holm; ×: early-stopped (estimate from the first slice only); orange "
                 "square: confirmed on held-out items; grey: not run."),
                ("repeat-layer", _fig_repeats, "repeat_layer",
                 "Left: gain vs number of extra copies of one layer, with 95% CIs (ring: significant, ×: "
                 "early-stopped). Right: each layer's best gain and the count that gives it."),
                ("sublayer", _fig_sublayers, "sublayer",
                 "Repeating only the attention sublayer, only the MLP sublayer, or the whole block of each layer "
                 "once (95% CIs)."),
            ):  # fmt: skip
                fig = fn(g) if g.has(design) else None
                parts.append(figs.add(fig, f"{g.slug}_{name}", caption, f"{g.title}: {name}") if fig is not None
                             else _omit(design, g))  # fmt: skip
            fig = _fig_cost(g)
            if fig is not None:
                parts.append(figs.add(fig, f"{g.slug}_cost", "Gain vs extra compute per token for every configuration; "
                                      "the red step line is the Pareto front (no configuration is both cheaper and "
                                      "better), with 95% CIs on its points.", f"{g.title}: quality vs cost"))
            else:
                parts.append('<p class="omit">No configuration has both a gain and a FLOPs figure, so the '
                             "quality-vs-cost figure is omitted.</p>")
            parts.append(_top_table(run_dir, g))
            parts.append("</section>")
            sections.append("".join(parts))
            nav.append(f'<li><a href="#g-{_e(g.slug)}">{_e(g.title)}</a></li>')
        size_html = ""
        if len({g.model for g in groups}) > 1:
            chunks = []
            bpb_tasks = [t for t in dict.fromkeys(g.task for g in groups)
                         if any(_is_bpb(g.metric) for g in groups if g.task == t)]  # fmt: skip
            for t in bpb_tasks:
                gs = [g for g in groups if g.task == t]
                fig = _fig_sizes(gs) if len(gs) > 1 else None
                if fig is not None:
                    chunks.append(figs.add(fig, f"sizes_{_slug(t)}", "Gain vs normalised depth, one series per "
                                           "model, in bits per byte (positive = fewer bits).", f"model size: {t}"))
                else:
                    chunks.append(f'<p class="omit">No design was run on more than one model for {_e(t)}, so there '
                                  "is no size comparison for it.</p>")
            if not bpb_tasks:
                chunks.append('<p class="omit">No bits-per-byte task was run, so the model-size figure is omitted.</p>')
            size_html = '<section id="sizes"><h2>Model size</h2>' + "".join(chunks) + "</section>"
            nav.append('<li><a href="#sizes">Model size</a></li>')
        spath = _write_csv(run_dir, "summary", summaries)
        answers = _answers(groups, study) if groups else "<p>results.csv holds no rows.</p>"
    title = f"frankenlm study report — {study.get('preset') or run_dir.name}"
    models_txt = ", ".join(dict.fromkeys(g.model for g in groups)) or "no models"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_e(title)}</h1><p class="sub">{_e(models_txt)} · {_e(study.get('dtype') or 'dtype unknown')}</p>
{header}</header>
<nav><h3>Contents</h3><ul><li><a href="#answers">Answers</a></li>{''.join(nav)}
<li><a href="#method">Method</a></li></ul></nav>
<section id="answers"><h2>Answers</h2>
<p class="small">Generated from the numbers. A configuration counts as an improvement only if its search CI excludes 0
with Holm significance at 5% <em>and</em> its held-out CI excludes 0 in the same direction. Per-group counts:
{_e(spath)}.</p>{answers}</section>
{''.join(sections)}
{size_html}
<section id="method"><h2>Method</h2><p class="small">Each gain is a paired difference against the base model on the same
items, signed so that positive = better, in the metric's units, with a 95% paired CI. p-values are adjusted with
Holm's method across each model's configurations on a task; "significant" means Holm-adjusted p &lt; 0.05. Early-stopped
configurations were dropped after the first slice of search items (clearly worse than the base); their estimates are
wider and they are excluded from the top tables and the Pareto front. The top configurations were re-measured on
held-out items to correct for the winner's curse; shrinkage = search gain − held-out gain. Costs: extra FLOPs per
token over the base, KV-cache bytes per token; repeated layers reuse the base weights (zero extra parameter bytes).
This page is written from results.csv and study.json only.</p></section>
</body></html>
"""
    out = run_dir / REPORT_NAME
    out.write_text(page, encoding="utf-8")
    return out
