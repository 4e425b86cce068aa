"""The report's written answers and per-group summary lines, generated from the typed rows' verdicts.

A configuration "improves" only when its row is `confirmed` (Holm-significant on search with a CI excluding 0,
and a held-out CI excluding 0 in the same direction); these texts never say "improves" otherwise. They count
and quote verdicts; they compute none.
"""

from __future__ import annotations

import math
from collections import Counter

from frankenlm.report.figures import scale_series, scale_target
from frankenlm.report.fmt import TOP_N, describe, title
from frankenlm.report.fmt import ci as _ci
from frankenlm.report.fmt import digits as _digits
from frankenlm.report.fmt import esc as _e
from frankenlm.report.fmt import gain_sense as _gain_sense
from frankenlm.report.fmt import gci as _gci
from frankenlm.report.fmt import nbytes as _bytes
from frankenlm.report.fmt import num as _num
from frankenlm.report.fmt import pct as _pct
from frankenlm.report.fmt import plural as _plural
from frankenlm.report.fmt import ranges as _ranges
from frankenlm.report.fmt import si as _si
from frankenlm.study.results import Group, ResultRow
from frankenlm.study.results import fin as _fin


def _answer_layers(g: Group) -> str:
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
        top = g.ranked[:TOP_N]
        best = ""
        if top:
            b = top[0]
            verdict = (
                "itself significantly worse than the base" if b.worse else "not a significant improvement after Holm"
            )
            best = (
                f" The highest search estimate is {_num(b.gain, d)} (95% CI {_ci(b.ci_low, b.ci_high, d)}) for "
                f"{_e(describe(b))} (<code>{_e(b.config)}</code>), {verdict}."
            )
        return (
            f"No configuration improves {_e(g.metric)} significantly on the search items "
            f"({n} configurations, Holm-corrected at 5%).{best}{tail}"
        )
    re_ = [r for r in better if r.remeasured]
    if not conf:
        if not re_:
            return (
                f"{_plural(len(better), 'configuration')} {'is' if len(better) == 1 else 'are'} significantly "
                f"better on the search items, but none was re-measured on held-out items, so no improvement is "
                f"confirmed.{tail}"
            )
        b = max(re_, key=lambda r: r.gain)
        fail = (
            "the only one re-measured on held-out items does not survive the held-out check"
            if len(re_) == 1
            else f"none of the {len(re_)} configurations re-measured on held-out items survives the held-out check"
        )
        return (
            f"{_plural(len(better), 'configuration')} {'is' if len(better) == 1 else 'are'} significantly better "
            f"on the search items, but {fail} ({'' if len(re_) == 1 else 'e.g. '}{_e(describe(b))}: search "
            f"{_num(b.gain, d)}, held-out {_gci(b.heldout_gain, b.heldout_ci_low, b.heldout_ci_high, d)})"
            + (f"; {len(better) - len(re_)} were not re-measured" if len(better) > len(re_) else "")
            + f". No improvement is confirmed.{tail}"
        )
    b = conf[0]
    lead = (
        f"{_plural(len(conf), 'configuration')} of {n} {'improves' if len(conf) == 1 else 'improve'} "
        f"{_e(g.metric)} (significant on search after Holm, confirmed on held-out items). "
    )
    best = (
        f"The best by held-out gain is {_e(describe(b))} (plan <code>{_e(b.config)}</code>): search "
        f"{_gci(b.gain, b.ci_low, b.ci_high, d)}, held-out "
        f"{_gci(b.heldout_gain, b.heldout_ci_low, b.heldout_ci_high, d)}."
    )
    counts = Counter(k for r in conf for k in r.repeated_layers)
    most = ""
    if len(conf) > 1 and counts:
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        most = (
            " The layers most often repeated in confirmed configurations: "
            + ", ".join(f"layer {k} ({c}×)" for k, c in items)
            + "."
        )
    others = ""
    if len(conf) > 1:
        others = (
            " Next: " + "; ".join(f"{_e(describe(r))} (held-out {_num(r.heldout_gain, d)})" for r in conf[1:4]) + "."
        )
    failed = sum(r.remeasured for r in better) - len(conf)
    unmeasured = len(better) - len(conf) - failed
    extra = (
        f" {_plural(failed, 'other significant search result')} did not survive the held-out check." if failed else ""
    )
    if unmeasured:
        extra += (
            f" {_plural(unmeasured, 'other significant search result')} "
            f"{'was' if unmeasured == 1 else 'were'} not re-measured on held-out items."
        )
    return lead + best + most + others + extra + tail


def _answer_counts(g: Group) -> str:
    d = _digits(g)
    counts, curves = g.repeat_curves()
    if not curves:
        return "The repeat-layer design wasn't run, so the repeat count can't be answered from curves."
    if len(counts) < 2:
        return f"Only r = {counts[0]} extra copy was measured per layer, so there is no curve over repeat counts."
    best_at: Counter = Counter()
    steps = Counter()
    all_neg = 0
    per_layer = {}
    # racing stops configurations that are clearly worse; when it stopped all of them, their estimates from the
    # slices seen before stopping (wider CIs) still show the shape of the curve, and are labelled as such
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
    text = (
        "Every repeat-layer configuration was stopped early as clearly worse than the base, so these "
        "estimates come from the search slices seen before racing stopped them (wider CIs). "
        if only_stopped
        else ""
    )
    text += (
        f"Repeat-layer curves cover {_plural(L, 'layer')} with r = {min(counts)}..{max(counts)} extra copies. "
        f"The count with the highest gain (point estimate) is {dist}."
    )
    T = sum(steps.values())
    if T:
        text += (
            f" From r to r+1 copies, the gain at r+1 lies above the 95% CI of r in {steps['above']} of {T} "
            f"steps, within it in {steps['within']}, and below it in {steps['below']}."
        )
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
            text += (
                f", and r = {c_best + 1} stays within its CI: no detectable benefit from more copies "
                f"(diminishing returns)."
            )
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


def block_lengths(g: Group) -> str | None:
    """Whether block length decides the verdict of `g`'s repeated (i, j) blocks: the share of significantly
    worse blocks at the shortest and longest length, and the length from which every block is worse (None
    without block repeats)."""
    blocks = g.block_rows()
    if not blocks:
        return None
    by_len: dict[int, list[ResultRow]] = {}
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
    share = (
        f"the share of significantly worse blocks is {100 * frac[first]:.0f}% at length {first} and "
        f"{100 * frac[last]:.0f}% at length {last}"
    )
    if not any(frac.values()):
        return f"No repeated block is significantly worse at any length ({first}–{last} layers)."
    if lstar is None:
        return f"Among repeated blocks, no block length makes every block significantly worse ({share})."
    if lstar == first:
        return "Every repeated block of every length is significantly worse: no length threshold."
    return (
        f"Every repeated block of {lstar} or more layers is significantly worse, while shorter "
        f"ones are not all worse: a length threshold at {lstar} layers ({share})."
    )


def _answer_threshold(g: Group) -> str:
    parts = []
    n = g.n_layers()
    singles = [(k, r) for k in range(n) if (r := g.layer_rep(k, 1)) is not None and _fin(r.gain)]
    if len(singles) >= 3:
        xs = [k for k, _ in singles]
        for word, flags in (
            ("significantly worse", [r.worse for _, r in singles]),
            ("significantly better", [r.better for _, r in singles]),
        ):
            hits = [k for k, f in zip(xs, flags) if f]
            if not hits:
                parts.append(f"No single-layer repeat is {word} (of {len(xs)} layers).")
                continue
            if len(hits) == len(xs):
                parts.append(
                    f"Every single-layer repeat measured ({len(xs)} layers) is {word}: no threshold "
                    f"within the range measured."
                )
                continue
            t = _threshold(xs, flags)
            rel = f" (relative depth {t[1] / n:.2f})" if t and n else ""
            if t and t[0] == "before":
                parts.append(
                    f"Repeating any single layer before layer {t[1]} ({_ranges(hits)}) is {word}; from "
                    f"layer {t[1]} on, none is: a threshold at layer {t[1]}{rel}."
                )
            elif t:
                parts.append(
                    f"From layer {t[1]} on, every single-layer repeat is {word} ({_ranges(hits)}); "
                    f"before it, none is: a threshold at layer {t[1]}{rel}."
                )
            else:
                parts.append(
                    f"Single-layer repeats that are {word}: {_ranges(hits)}; these are not all the "
                    "layers on one side of a cut-off, so there is no clean positional threshold."
                )
    if (blocks := block_lengths(g)) is not None:
        parts.append(blocks)
    if not parts:
        return "Neither single-layer nor block repeats were measured across enough layers to look for a threshold."
    return " ".join(parts)


def _answer_sizes(groups: list[Group]) -> list[str]:
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
            top = g.ranked[:TOP_N]
            desc = ""
            if top:
                b = top[0]
                rel = f", relative depth {(b.centre + 0.5) / n:.2f}" if n and _fin(b.centre) else ""
                desc = (
                    f"; highest search estimate {_num(b.gain, d)} {_ci(b.ci_low, b.ci_high, d)} for "
                    f"{_e(describe(b))}{rel}"
                )
            singles = [
                (k, r)
                for k in range(n)
                if (r := g.layer_rep(k, 1)) is not None and _fin(r.gain) and not r.stopped_early
            ]
            srel = ""
            if len(singles) >= 2:
                k, r = max(singles, key=lambda p: (p[1].gain, -p[0]))
                srel = f"; best single-layer repeat at layer {k} of {n} (relative depth {(k + 0.5) / n:.2f})"
            bits.append(
                f"{_e(g.model)} ({n} layers): {_plural(len(rows), 'configuration')}, "
                f"{100 * worse / len(rows):.0f}% significantly worse, {conf} confirmed improvement"
                f"{'' if conf == 1 else 's'}{desc}{srel}"
            )
        if len(bits) >= 2:
            out.append(
                f"<b>{_e(t)}</b> ({_e(gs[0].metric)}): "
                + "; ".join(bits)
                + f". With {len(bits)} model sizes this describes these models only, not a trend."
            )
    return out


def _answer_cost(g: Group) -> str:
    d = _digits(g)
    rows = [r for r in g.rows if _fin(r.gain)]
    if not rows:
        return "No configuration was measured."
    pct = [r.extra_flops_pct for r in rows if _fin(r.extra_flops_pct)]
    base_kv = g.base.kv_bytes_per_token if g.base else math.nan
    base_p = g.base.effective_params if g.base else math.nan
    rng = f"Extra FLOPs per token range from {_pct(min(pct))} to {_pct(max(pct))} of the base. " if pct else ""
    conf = sorted([r for r in rows if r.confirmed], key=lambda r: (-r.heldout_gain, r.config))
    if conf:
        b, what = conf[0], "The best confirmed configuration,"
    else:
        top = g.ranked[:TOP_N]
        if not top:
            return rng + "Repeated layers reuse the stored weights: zero extra parameter bytes."
        b, what = top[0], "Nothing is confirmed; for reference, the configuration with the highest search estimate,"
    kv = _bytes(b.kv_bytes_per_token)
    if _fin(b.kv_bytes_per_token, base_kv) and base_kv > 0:
        kv += f" per token ({_pct(100 * (b.kv_bytes_per_token / base_kv - 1))} vs the base's {_bytes(base_kv)})"
    else:
        kv += " per token"
    ep = _si(b.effective_params)
    if _fin(b.effective_params, base_p) and base_p > 0:
        ep += f" ({_pct(100 * (b.effective_params / base_p - 1))})"
    front = g.pareto()
    return (
        rng + f"{what} {_e(describe(b))} with search gain {_num(b.gain, d)}, costs "
        f"{_pct(b.extra_flops_pct)} FLOPs per token ({_si(b.extra_flops_per_token, 'FLOP')}), a KV cache of {kv}, "
        f"{ep} "
        f"effective parameters per token, and zero extra parameter bytes (repeated layers reuse the stored "
        f"weights). "
        + (
            f"{_plural(len(front), 'configuration')} lie{'s' if len(front) == 1 else ''} on the quality-vs-cost "
            f"Pareto front."
            if front
            else "No configuration beats the base at any cost, so the quality-vs-cost Pareto front is the base alone."
        )
    )


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
                parts.append(
                    f"{label}: Spearman ρ = {c['rho']:+.2f} over {c['n']} layers (p = {c['p_value']:.2g}, "
                    f"{sig}; {strength} {'positively' if c['rho'] > 0 else 'negatively'} related to the gain)"
                )
            if parts:
                out.append(
                    f"<b>{_e(model)} · {_e(task)}</b>: " + "; ".join(parts) + ". The search design ranks "
                    "candidate layers by lowest block influence."
                )
            else:
                out.append(
                    f"<b>{_e(model)} · {_e(task)}</b>: fewer than 3 single-layer repeats measured, so the "
                    "signals could not be checked."
                )
    return out


def answer_scales(g: Group) -> str:
    """Damped repeats: per repeated layer/block and branch, the scale with the highest gain, against the plain
    repeat (scale 1) where it was measured."""
    d = _digits(g)
    series = scale_series(g)
    if not series:
        return "No damped repeat was measured."
    parts, better = [], 0
    for (what, branch), pts in series.items():
        ok = [(s, r) for s, r in pts if not r.stopped_early] or pts
        s_best, r_best = max(ok, key=lambda p: (p[1].gain, -abs(p[0] - 1.0)))
        plain = next((r for s, r in pts if s == 1.0), None)
        vs = ""
        if plain is not None and plain is not r_best:
            vs = f" vs the plain repeat's {_num(plain.gain, d)}"
        verdict = " (confirmed)" if r_best.confirmed else " (significantly better)" if r_best.better else ""
        better += r_best.confirmed
        on = "" if branch == "both" else f" ({branch} only)"
        parts.append(
            f"{_e(what)}{on}: best scale {s_best:.3g}, gain "
            f"{_gci(r_best.gain, r_best.ci_low, r_best.ci_high, d)}{verdict}{vs}"
        )
    n = sum(scale_target(r) is not None for pts in series.values() for _, r in pts)  # the plain repeats not counted
    lead = (
        f"{_plural(n, 'damped repeat')} in {_plural(len(series), 'series', 'series')} (repeated layer or "
        f"block × branch); {better} with a confirmed best scale. "
    )
    return lead + "; ".join(parts[:8]) + ("; …" if len(parts) > 8 else "") + "."


def answers(groups: list[Group], study: dict | None = None) -> str:
    def bullets(fn) -> str:
        return "<ul>" + "".join(f"<li><b>{_e(title(g))}</b>: {fn(g)}</li>" for g in groups) + "</ul>"

    qs = [
        ("Which layers are most beneficial to repeat?", bullets(_answer_layers)),
        ("How many times?", bullets(_answer_counts)),
        ("Is there a threshold?", bullets(_answer_threshold)),
    ]
    if len({g.model for g in groups}) > 1:
        sizes = _answer_sizes(groups)
        body = (
            ("<ul>" + "".join(f"<li>{s}</li>" for s in sizes) + "</ul>")
            if sizes
            else "<p>No task was measured on more than one model.</p>"
        )
        qs.append(("Does it depend on model size?", body))
    sig = _answer_signals(study or {})
    if sig:
        qs.append(
            ("Do cheap per-layer signals predict the gains?", "<ul>" + "".join(f"<li>{x}</li>" for x in sig) + "</ul>")
        )
    damped = [g for g in groups if scale_series(g)]
    if damped:
        qs.append(
            (
                "Does scaling the repeated copy help?",
                "<ul>" + "".join(f"<li><b>{_e(title(g))}</b>: {answer_scales(g)}</li>" for g in damped) + "</ul>",
            )
        )
    qs.append(("What does it cost?", bullets(_answer_cost)))
    return "".join(f'<div class="qa"><h3>{q}</h3>{a}</div>' for q, a in qs)


def summary_line(g: Group) -> tuple[str, dict]:
    rows = [r for r in g.rows if _fin(r.gain)]
    designs = Counter(r.design for r in g.rows)
    stats = {
        "model": g.model,
        "task": g.task,
        "metric": g.metric,
        "configs": len(g.rows),
        "with_estimate": len(rows),
        "significantly_better": sum(r.better for r in rows),
        "significantly_worse": sum(r.worse for r in rows),
        "early_stopped": sum(r.stopped_early for r in g.rows),
        "remeasured_heldout": sum(r.remeasured for r in rows),
        "confirmed": sum(r.confirmed for r in rows),
        "fp32_rechecked": sum(_fin(r.fp32_gain) for r in rows),
        "base_value": (g.base.value if g.base and _fin(g.base.value) else g.base.base_value if g.base else math.nan),
    }
    if not _fin(stats["base_value"]):
        stats["base_value"] = next((r.base_value for r in rows if _fin(r.base_value)), math.nan)
    dtxt = ", ".join(f"{_e(k)} {v}" for k, v in designs.items())
    sense = f"gain = {'value − base' if g.higher_is_better else 'base − value'}, {_gain_sense(g)}"
    bv = f"{stats['base_value']:.4f}" if _fin(stats["base_value"]) else "—"
    text = (
        f"Base {_e(g.metric)} = {bv}; {_e(sense)}. {len(g.rows)} configurations ({dtxt}): "
        f"{stats['significantly_better']} significantly better and {stats['significantly_worse']} significantly "
        f"worse on search (Holm 5%), {stats['early_stopped']} early-stopped, {stats['remeasured_heldout']} "
        f"re-measured on held-out, <b>{stats['confirmed']} confirmed</b>, {stats['fp32_rechecked']} re-checked "
        f"in fp32."
    )
    return text, stats
