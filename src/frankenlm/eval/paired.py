"""Paired comparison of two models' per-item results on one task metric: gain (positive = better), CI, p-value.

Items are matched by `item_id` (only items both have count). A ratio metric (perplexities, bits per byte) is
compared as a difference of ratios with a paired bootstrap CI and a paired permutation test on the per-item NLLs;
a mean metric as a paired mean difference with a bootstrap CI, tested with exact McNemar when every value is
0/1 and a paired permutation test otherwise. Per-item results are dicts `{"item_id", "metrics", "extras"}`
(what `ItemResult` holds and what a study's store keeps).

This is the arithmetic of `frankenlm.study.analysis.compare` (same resampling, same seeds, same numbers), kept in
`eval` so that `frankenlm eval` does not depend on the study layer.
"""

from __future__ import annotations

import math

import numpy as np

from frankenlm.eval import stats
from frankenlm.eval.tasks import RatioMetric, get_task


def ratio_spec(task_name: str, metric: str) -> tuple[str, str] | None:
    """(denominator extra, stats formula name) of a ratio metric, None for a mean metric."""
    for m in get_task(task_name).metrics:
        if m.name == metric and isinstance(m, RatioMetric):
            return m.denominator or "_one", ("bits_per_byte" if m.kind == "bits" else "token_perplexity")
    return None


def _ratio_arrays(items: list[dict], denom: str) -> tuple[np.ndarray, np.ndarray]:
    nll = np.array([r["extras"]["nll"] for r in items], float)
    den = np.array([r["extras"].get(denom, 1) for r in items], float)
    return nll, den


def align(base: list[dict], other: list[dict]) -> tuple[list[dict], list[dict]]:
    """The items both lists have, in `other`'s order, as (base's, other's)."""
    by_id = {r["item_id"]: r for r in base}
    other = [r for r in other if r["item_id"] in by_id]
    return [by_id[r["item_id"]] for r in other], other


def compare(
    task: str,
    metric: str,
    higher_is_better: bool,
    base: list[dict],
    cfg: list[dict],
    level: float = 0.95,
    n_resamples: int = 2000,
) -> dict:
    """Paired comparison of `cfg` with `base` on the items both have.

    Returns n_items, n_tokens, base_value, value, gain (positive = `cfg` better), ci_low, ci_high (of the gain)
    and p_value; NaNs when fewer than two items are shared.
    """
    base, cfg = align(base, cfg)
    n = len(cfg)
    out = {"n_items": n, "n_tokens": int(sum(r["extras"].get("n_tokens", 0) or 0 for r in cfg))}
    if n < 2:
        return {
            **out,
            "base_value": math.nan,
            "value": math.nan,
            "gain": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
        }
    spec = ratio_spec(task, metric)
    if spec is not None:
        nb, den = _ratio_arrays(base, spec[0])
        nc, _ = _ratio_arrays(cfg, spec[0])
        # stat(a) - stat(b) with a = base, b = config: positive when the config's ratio metric is lower
        iv = stats.paired_ratio_diff_ci(spec[1], nb, nc, den, level=level, n_resamples=n_resamples)
        if higher_is_better:
            iv = stats.Interval(-iv.estimate, -iv.high, -iv.low, iv.level)
        p = stats.paired_permutation_test(nb - nc, n_resamples=5000)
        bv, cv = stats.ratio_metric(spec[1], nb, den), stats.ratio_metric(spec[1], nc, den)
    else:
        xb = np.array([r["metrics"][metric] for r in base], float)
        xc = np.array([r["metrics"][metric] for r in cfg], float)
        iv = stats.paired_diff_mean_ci(xc, xb, level=level, n_resamples=n_resamples)
        if not higher_is_better:
            iv = stats.Interval(-iv.estimate, -iv.high, -iv.low, iv.level)
        binary = set(np.unique(np.concatenate([xb, xc]))) <= {0.0, 1.0}
        p = stats.mcnemar_exact(xc > 0.5, xb > 0.5).pvalue if binary else stats.paired_permutation_test(xc - xb)
        bv, cv = float(xb.mean()), float(xc.mean())
    return {
        **out,
        "base_value": bv,
        "value": cv,
        "gain": iv.estimate,
        "ci_low": iv.low,
        "ci_high": iv.high,
        "p_value": float(p),
    }


def choice_margin(extras: dict, normalized: bool) -> float:
    """The gold choice's log-likelihood minus the best wrong choice's (per character when `normalized`, as
    acc_norm compares them): positive exactly when the item is answered right (ties aside), and continuous."""
    lls = np.asarray(extras["logprobs"], float)
    if normalized:
        lls = lls / np.asarray(extras["choice_chars"], float)
    gold = int(extras["gold"])
    return float(lls[gold] - np.delete(lls, gold).max())


RACING_SIGNALS = {"acc": "margin", "acc_norm": "margin_norm"}


def racing_signal(metric: str, items: list[dict]) -> str | None:
    """The continuous per-item statistic racing decides on for `metric`, or None to race on the metric itself.

    Accuracy is 0/1 per item, so its paired intervals stay wide: multiple-choice accuracies race on the change in
    the gold choice's margin over the best wrong choice (`choice_margin`), whose sign is the item's correctness."""
    name = RACING_SIGNALS.get(metric)
    ok = name is not None and items and all(len(r["extras"].get("logprobs") or ()) >= 2 for r in items)
    return name if ok else None


def racing_compare(
    task: str, metric: str, higher_is_better: bool, base: list[dict], cfg: list[dict], level: float, n_resamples: int
) -> dict:
    """`compare` on the statistic racing uses for `metric` (see `racing_signal`); gain positive = better."""
    signal = racing_signal(metric, base) if racing_signal(metric, cfg) else None
    if signal is None:
        return compare(task, metric, higher_is_better, base, cfg, level=level, n_resamples=n_resamples)
    base, cfg = align(base, cfg)
    if len(cfg) < 2:
        return {"gain": math.nan, "ci_low": math.nan, "ci_high": math.nan, "signal": signal}
    norm = signal == "margin_norm"
    xb = np.array([choice_margin(r["extras"], norm) for r in base])
    xc = np.array([choice_margin(r["extras"], norm) for r in cfg])
    iv = stats.paired_diff_mean_ci(xc, xb, level=level, n_resamples=n_resamples)
    return {"gain": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "signal": signal}
