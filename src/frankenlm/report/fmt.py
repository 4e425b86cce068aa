"""Formatting shared by the report's figures, prose and page: numbers with CIs, p-values, SI units, durations,
HTML escaping, and a configuration's design parameters in words. Renders only; decides nothing."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from frankenlm.study.results import Group, ResultRow, fin, slug

TOP_N = 10  # rows of each top table


def group_slug(g: Group) -> str:
    return slug(f"{g.model}-{g.task}")


def title(g: Group) -> str:
    return f"{g.model} · {g.task} ({g.metric})"


def ranges(layers: Iterable[int]) -> str:
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


def digits(g: Group) -> int:
    vals = [abs(x) for r in g.rows for x in (r.gain, r.ci_low, r.ci_high) if fin(x) and x != 0]
    if not vals:
        return 4
    m = float(np.median(vals))
    return int(min(7, max(3, 2 - math.floor(math.log10(m)))))


def num(x: float, d: int = 4, signed: bool = True) -> str:
    if not fin(x):
        return "—"
    return f"{x:+.{d}f}" if signed else f"{x:.{d}f}"


def ci(lo: float, hi: float, d: int) -> str:
    return f"[{num(lo, d)}, {num(hi, d)}]" if fin(lo, hi) else "—"


def gci(g: float, lo: float, hi: float, d: int) -> str:
    return f"{num(g, d)} {ci(lo, hi, d)}" if fin(g) else "—"


def pval(p: float) -> str:
    if not fin(p):
        return "—"
    return "&lt;0.0001" if p < 1e-4 else f"{p:.3g}"


def si(x: float, unit: str = "") -> str:
    if not fin(x):
        return "—"
    for s, v in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= v:
            return f"{x / v:.3g} {s}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def nbytes(x: float) -> str:
    if not fin(x):
        return "—"
    for s, v in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= v:
            return f"{x / v:.3g} {s}"
    return f"{x:.0f} B"


def pct(x: float, d: int = 1) -> str:
    return f"{x:+.{d}f}%" if fin(x) else "—"


def duration(seconds: float) -> str:
    if not fin(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def gain_sense(g: Group) -> str:
    return f"positive = better ({'higher' if g.higher_is_better else 'lower'} {g.metric})"


def describe(r: ResultRow) -> str:
    """The design parameters in words."""
    p = r.params or {}
    if "scale" in p and (p.get("layer") is not None or p.get("i") is not None):
        where = (
            f"layer {p['layer']}"
            if p.get("layer") is not None
            else (f"layer {p['i']}" if p["i"] == p.get("j") else f"block {p['i']}–{p.get('j')}")
        )
        branch = {"attn": " attention", "mlp": " MLP"}.get(str(p.get("branch", "both")), "")
        return f"{r.design}: repeat {where},{branch} ×{p['scale']:.3g}"
    if r.design == "repeat-block" and r.i is not None and r.j is not None:
        what = f"layer {r.i}" if r.i == r.j else f"block {r.i}–{r.j}"
        extra = f" (+{r.repeats} passes)" if r.repeats and r.repeats > 1 else ""
        return f"repeat {what}{extra}"
    if r.design == "repeat-layer" and r.layer is not None:
        n = r.repeats or 1
        return f"repeat layer {r.layer} (+{n} cop{'y' if n == 1 else 'ies'})"
    if r.design == "sublayer" and r.layer is not None:
        part = {"attn": "attention only", "mlp": "MLP only"}.get(r.sublayer, "whole block")
        return f"repeat layer {r.layer}, {part}"
    return f"{r.design}: repeats {ranges(r.repeated_layers)}" if r.repeated_layers else r.design
