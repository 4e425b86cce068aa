"""Statistics for comparing a frankenmodel against its base model item by item.

Both models are scored on the *same* items (documents, questions), so every comparison here is paired:
bootstrap intervals resample item indices jointly for the two models, McNemar's test uses the discordant
pairs, and the permutation test flips the sign of per-item differences.

Perplexity-type metrics are ratios of sums over items (``sum(nll) / sum(denominator)``), never means of
per-item perplexities; `ratio_metric` computes them and `paired_ratio_diff_ci` bootstraps their difference
by recomputing the ratio on every resample.

Only what scipy lacks is written here: exact McNemar uses `scipy.stats.binomtest`, Benjamini-Hochberg uses
`scipy.stats.false_discovery_control`. The bootstrap is our own (rather than `scipy.stats.bootstrap`) because
its statistics take dicts of per-item columns, and because the BCa jackknife here is evaluated in bounded
chunks, so n of several thousand items costs neither an n-by-n matrix nor one Python call per row when the
statistic is vectorised.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy import stats as sps

from frankenlm.errors import FrankenError

__all__ = [
    "Interval",
    "McNemarResult",
    "RATIO_METRICS",
    "mean_and_se",
    "ratio_metric",
    "ratio_metric_se",
    "paired_bootstrap",
    "paired_diff_mean_ci",
    "paired_ratio_diff_ci",
    "mcnemar_exact",
    "paired_permutation_test",
    "holm",
    "benjamini_hochberg",
]

Data = Mapping[str, np.ndarray] | np.ndarray

# Keep the temporary (rows x n) arrays of the bootstrap / permutation loops around this many elements.
_CHUNK_ELEMENTS = 1_000_000
# n at or below which the sign-flip permutation test enumerates all 2**n sign vectors.
_EXACT_PERMUTATION_MAX_N = 16


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval at confidence `level` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float

    def excludes_zero(self) -> bool:
        """True when zero lies strictly outside [low, high], i.e. the difference is significant at 1-level."""
        return bool(self.low > 0.0 or self.high < 0.0)


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test. b01: items model a got wrong and b right; b10: a right and b wrong."""

    b01: int
    b10: int
    pvalue: float


# ------------------------------------------------------------------------------------------- validation


def _as_1d_float(x: ArrayLike, name: str, *, allow_empty: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise FrankenError(f"{name} must be a 1-D array of numbers: {e}") from None
    if arr.ndim != 1:
        raise FrankenError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise FrankenError(f"{name} is empty; need at least one item")
    return arr


def _require_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise FrankenError(f"{name} contains NaN or infinite values")


def _as_1d_bool(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise FrankenError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise FrankenError(f"{name} is empty; need at least one item")
    if arr.dtype != np.bool_:
        try:
            ok = np.isin(arr, (0, 1)).all()
        except TypeError:
            ok = False
        if not ok:
            raise FrankenError(f"{name} must hold booleans or 0/1 values")
        arr = arr.astype(bool)
    return arr


def _check_level(level: float) -> None:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise FrankenError(f"level must be strictly between 0 and 1, got {level!r}")


def _check_n_resamples(n_resamples: int) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise FrankenError(f"n_resamples must be a positive integer, got {n_resamples!r}")


def _check_same_length(arrays: Mapping[str, np.ndarray]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise FrankenError(f"arrays must have the same length (one entry per item), got {lengths}")
    return next(iter(lengths.values()))


# ---------------------------------------------------------------------------------------- basic summary


def mean_and_se(x: ArrayLike) -> tuple[float, float]:
    """Mean and standard error of the mean (sample sd with ddof=1, over sqrt(n)); se is NaN when n < 2."""
    arr = _as_1d_float(x, "x")
    _require_finite(arr, "x")
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, float("nan")
    return mean, float(arr.std(ddof=1) / math.sqrt(arr.size))


# ---------------------------------------------------------------------------------------- ratio metrics

# name -> (what the denominator counts, transform of r = sum(nll) / sum(denominator))
_LN2 = math.log(2.0)
RATIO_METRICS: dict[str, str] = {
    "token_perplexity": "tokens",
    "word_perplexity": "words",
    "byte_perplexity": "bytes",
    "bits_per_byte": "bytes",
}


def _check_metric_name(name: str) -> None:
    if name not in RATIO_METRICS:
        valid = ", ".join(f"{k} (denominator: {v})" for k, v in RATIO_METRICS.items())
        raise FrankenError(f"unknown ratio metric {name!r}; valid: {valid}")


def _transform(name: str, r: np.ndarray | float) -> np.ndarray | float:
    """Map the mean nll per denominator unit (nats) to the named metric."""
    if name == "bits_per_byte":
        return r / _LN2
    return np.exp(r)


def _transform_derivative(name: str, r: float) -> float:
    if name == "bits_per_byte":
        return 1.0 / _LN2
    return math.exp(r)


def _ratio_inputs(name: str, nll: ArrayLike, denom: ArrayLike, label: str = "") -> tuple[np.ndarray, np.ndarray]:
    _check_metric_name(name)
    nll_arr = _as_1d_float(nll, f"nll{label}")
    den_arr = _as_1d_float(denom, f"denom{label} ({RATIO_METRICS[name]})")
    _check_same_length({f"nll{label}": nll_arr, f"denom{label}": den_arr})
    _require_finite(nll_arr, f"nll{label}")
    _require_finite(den_arr, f"denom{label}")
    if np.any(den_arr < 0):
        raise FrankenError(f"denom{label} ({RATIO_METRICS[name]}) must be non-negative counts")
    if den_arr.sum() <= 0:
        raise FrankenError(f"denom{label} ({RATIO_METRICS[name]}) sums to zero; the metric is undefined")
    return nll_arr, den_arr


def ratio_metric(name: str, nll: ArrayLike, denom: ArrayLike) -> float:
    """A perplexity-type metric from per-item summed NLL (nats) and per-item denominator counts.

    - ``token_perplexity``: exp(sum(nll) / sum(tokens))
    - ``word_perplexity``:  exp(sum(nll) / sum(words))
    - ``byte_perplexity``:  exp(sum(nll) / sum(bytes))
    - ``bits_per_byte``:    sum(nll) / (ln 2 * sum(bytes))
    """
    nll_arr, den_arr = _ratio_inputs(name, nll, denom)
    return float(_transform(name, nll_arr.sum() / den_arr.sum()))


def ratio_metric_se(name: str, nll: ArrayLike, denom: ArrayLike) -> float:
    """Standard error of `ratio_metric` by the delta method, treating items as i.i.d. draws.

    With r = sum(nll)/sum(denom), Var(r) ~= sum((nll_i - r*denom_i)^2) / (n-1) / n / mean(denom)^2
    (the usual linearisation of a ratio estimator), then se(f(r)) = |f'(r)| * se(r) with f = exp for
    perplexities and f(r) = r/ln2 for bits per byte. NaN when n < 2.
    """
    nll_arr, den_arr = _ratio_inputs(name, nll, denom)
    n = nll_arr.size
    if n < 2:
        return float("nan")
    r = nll_arr.sum() / den_arr.sum()
    resid = nll_arr - r * den_arr
    se_r = math.sqrt(float(resid @ resid) / (n - 1) / n) / float(den_arr.mean())
    return float(abs(_transform_derivative(name, float(r))) * se_r)


def _vectorised_ratio(name: str, nll_key: str = "nll", denom_key: str = "denom") -> Callable[[Any], Any]:
    def stat(cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return _transform(name, cols[nll_key].sum(axis=-1) / cols[denom_key].sum(axis=-1))

    return stat


# ------------------------------------------------------------------------------------------- bootstrap


def _prepare_pair(a: Data, b: Data) -> tuple[Data, Data, int]:
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise FrankenError("a and b must both be arrays or both be dicts of per-item columns")
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping)
        if not a or not b:
            raise FrankenError("a and b must each hold at least one column")
        a2 = {k: _as_1d_float(v, f"a[{k!r}]") for k, v in a.items()}
        b2 = {k: _as_1d_float(v, f"b[{k!r}]") for k, v in b.items()}
        n = _check_same_length({**{f"a[{k!r}]": v for k, v in a2.items()}, **{f"b[{k!r}]": v for k, v in b2.items()}})
        return a2, b2, n
    a1 = _as_1d_float(a, "a")
    b1 = _as_1d_float(b, "b")
    n = _check_same_length({"a": a1, "b": b1})
    return a1, b1, n


def _take(data: Data, idx: np.ndarray) -> Data:
    if isinstance(data, Mapping):
        return {k: v[idx] for k, v in data.items()}
    return data[idx]


def _as_scalar(value: Any, what: str) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise FrankenError(f"stat must return a scalar on {what}, got shape {arr.shape}")
    return float(arr.reshape(()))


def _diff_on_rows(stat: Callable[[Any], Any], a: Data, b: Data, idx: np.ndarray, vectorized: bool) -> np.ndarray:
    """stat(a[row]) - stat(b[row]) for every row of the index matrix `idx`."""
    if vectorized:
        out = np.asarray(stat(_take(a, idx)), dtype=np.float64) - np.asarray(stat(_take(b, idx)), dtype=np.float64)
        if out.shape != (idx.shape[0],):
            raise FrankenError(
                f"vectorized stat must return one value per row (shape {(idx.shape[0],)}), got shape {out.shape}"
            )
        return out
    return np.array(
        [_as_scalar(stat(_take(a, row)), "a resample") - _as_scalar(stat(_take(b, row)), "a resample") for row in idx],
        dtype=np.float64,
    )


def _jackknife(stat: Callable[[Any], Any], a: Data, b: Data, n: int, vectorized: bool) -> np.ndarray:
    """Leave-one-out values of stat(a) - stat(b), evaluated in bounded chunks of rows."""
    rows = max(1, _CHUNK_ELEMENTS // max(n - 1, 1))
    base = np.arange(n - 1)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, rows):
        i = np.arange(start, min(n, start + rows))
        # row for left-out item i: 0..i-1, i+1..n-1
        idx = base[None, :] + (base[None, :] >= i[:, None])
        out[start : start + len(i)] = _diff_on_rows(stat, a, b, idx, vectorized)
    return out


def paired_bootstrap(
    stat: Callable[[Any], Any],
    a: Data,
    b: Data,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: Literal["percentile", "bca"] = "percentile",
    vectorized: bool = False,
) -> Interval:
    """Paired bootstrap interval for stat(a) - stat(b), resampling item indices jointly for a and b.

    `a` and `b` are 1-D arrays with one entry per item, or dicts of such columns (all of one length n); for
    dicts `stat` receives a dict of resampled columns, so e.g. bits per byte is recomputed from per-document
    nll and byte counts on every resample. The estimate is stat(a) - stat(b) on the full data.

    With ``vectorized=True`` `stat` must also accept arrays (or dicts of arrays) with a leading resample
    axis, shape (rows, n), and return shape (rows,) -- e.g. ``lambda x: x.mean(axis=-1)``; this is much
    faster for large n. Resamples are drawn with ``numpy.random.default_rng(seed)``, as (rows x n) index
    matrices in chunks. ``method="bca"`` gives the bias-corrected and accelerated interval (jackknife
    acceleration); ``"percentile"`` the plain percentile interval.
    """
    _check_level(level)
    _check_n_resamples(n_resamples)
    if method not in ("percentile", "bca"):
        raise FrankenError(f"method must be 'percentile' or 'bca', got {method!r}")
    a, b, n = _prepare_pair(a, b)
    if n < 2:
        raise FrankenError(f"the bootstrap needs at least 2 items, got {n}")

    estimate = _as_scalar(stat(a), "the full data a") - _as_scalar(stat(b), "the full data b")
    if not math.isfinite(estimate):
        raise FrankenError(f"stat(a) - stat(b) is not finite on the full data ({estimate})")

    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    boot = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows):
        k = min(rows, n_resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        boot[start : start + k] = _diff_on_rows(stat, a, b, idx, vectorized)
    if not np.all(np.isfinite(boot)):
        bad = int(np.sum(~np.isfinite(boot)))
        raise FrankenError(f"stat gave a non-finite difference on {bad} of {n_resamples} bootstrap resamples")

    alpha = 1.0 - level
    probs = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if method == "bca" and np.ptp(boot) > 0:
        # Bias correction from the share of resamples below the estimate (ties count half), clipped so a
        # one-sided bootstrap distribution gives a finite z0.
        share = (np.sum(boot < estimate) + 0.5 * np.sum(boot == estimate)) / n_resamples
        share = float(np.clip(share, 0.5 / n_resamples, 1.0 - 0.5 / n_resamples))
        z0 = special.ndtri(share)
        jack = _jackknife(stat, a, b, n, vectorized)
        dev = jack.mean() - jack
        denom = 6.0 * float(np.sum(dev**2)) ** 1.5
        accel = float(np.sum(dev**3)) / denom if denom > 0 else 0.0
        z = special.ndtri(probs)
        probs = special.ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.quantile(boot, probs)
    return Interval(estimate=float(estimate), low=float(low), high=float(high), level=float(level))


def _mean_last_axis(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=-1)


def paired_diff_mean_ci(
    a: ArrayLike,
    b: ArrayLike,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: Literal["percentile", "bca"] = "percentile",
) -> Interval:
    """Paired bootstrap interval for mean(a) - mean(b): per-item scores such as 0/1 accuracy."""
    a_arr = _as_1d_float(a, "a")
    b_arr = _as_1d_float(b, "b")
    _require_finite(a_arr, "a")
    _require_finite(b_arr, "b")
    return paired_bootstrap(
        _mean_last_axis, a_arr, b_arr, n_resamples=n_resamples, level=level, seed=seed, method=method, vectorized=True
    )


def paired_ratio_diff_ci(
    metric_name: str,
    nll_a: ArrayLike,
    nll_b: ArrayLike,
    denom: ArrayLike,
    *,
    denom_b: ArrayLike | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: Literal["percentile", "bca"] = "percentile",
) -> Interval:
    """Paired bootstrap interval for metric(a) - metric(b) of a ratio metric, recomputed on each resample.

    Both models score the same items, so bytes and words -- which do not depend on the tokenizer -- are one
    shared `denom`, and bits per byte / byte or word perplexity compare models with different tokenizers.
    ``token_perplexity`` divides by each model's own token count: it is only comparable when the token
    counts are equal (same tokenizer); pass ``denom_b`` for model b's counts if they differ (the interval is
    then of the two token perplexities, which do not measure the same thing).
    """
    nll_a_arr, den_a = _ratio_inputs(metric_name, nll_a, denom, "_a")
    nll_b_arr, den_b = _ratio_inputs(metric_name, nll_b, denom if denom_b is None else denom_b, "_b")
    return paired_bootstrap(
        _vectorised_ratio(metric_name),
        {"nll": nll_a_arr, "denom": den_a},
        {"nll": nll_b_arr, "denom": den_b},
        n_resamples=n_resamples,
        level=level,
        seed=seed,
        method=method,
        vectorized=True,
    )


# ---------------------------------------------------------------------------------------------- tests


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> McNemarResult:
    """Exact two-sided McNemar test on paired correctness: binomial test of b10 out of b01 + b10 at p=1/2.

    The p-value is 1.0 when there are no discordant pairs.
    """
    a = _as_1d_bool(a_correct, "a_correct")
    b = _as_1d_bool(b_correct, "b_correct")
    _check_same_length({"a_correct": a, "b_correct": b})
    b01 = int(np.sum(~a & b))
    b10 = int(np.sum(a & ~b))
    if b01 + b10 == 0:
        return McNemarResult(b01=0, b10=0, pvalue=1.0)
    p = sps.binomtest(b10, b01 + b10, 0.5, alternative="two-sided").pvalue
    return McNemarResult(b01=b01, b10=b10, pvalue=float(min(1.0, p)))


def paired_permutation_test(d: ArrayLike, *, n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value for H0: per-item paired differences `d` are symmetric about 0.

    The test statistic is |sum(d)| (equivalently |mean(d)|). For n <= 16 all 2**n sign vectors are
    enumerated (exact p-value); otherwise `n_resamples` random sign vectors are drawn with
    ``numpy.random.default_rng(seed)`` and p = (count + 1) / (n_resamples + 1).

    For a ratio metric with a shared denominator, metric_a - metric_b is a monotone function of
    sum(nll_a) - sum(nll_b) = sum(d) with d = nll_a - nll_b (per item), so this test on those d tests the
    difference of bits per byte / perplexity as well.
    """
    arr = _as_1d_float(d, "d")
    _require_finite(arr, "d")
    _check_n_resamples(n_resamples)
    n = arr.size
    observed = abs(float(arr.sum()))
    # Treat sums within rounding of the observed one as ties (>=), so exact ties are not lost to float error.
    tol = 1e-9 * max(1.0, float(np.abs(arr).sum()))
    threshold = observed - tol
    if n <= _EXACT_PERMUTATION_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)), dtype=np.float64)
        sums = np.abs(signs @ arr)
        return float(np.mean(sums >= threshold))
    rng = np.random.default_rng(seed)
    total = float(arr.sum())
    rows = max(1, _CHUNK_ELEMENTS // n)
    count = 0
    for start in range(0, n_resamples, rows):
        k = min(rows, n_resamples - start)
        flip = rng.random((k, n)) < 0.5  # True where the sign is flipped to -1
        sums = np.abs(total - 2.0 * (flip @ arr))
        count += int(np.sum(sums >= threshold))
    return (count + 1) / (n_resamples + 1)


# ------------------------------------------------------------------------------- multiple comparisons


def _pvalues(pvalues: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_1d_float(pvalues, "pvalues")
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise FrankenError("pvalues must lie in [0, 1] (NaN allowed)")
    return p, ok


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), in the input order, clipped at 1.

    NaN p-values are passed through as NaN; the adjustment is over the m non-NaN ones.
    """
    p, ok = _pvalues(pvalues)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = (m - np.arange(m)) * q[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adj = np.empty(m)
    adj[order] = adj_sorted
    out[ok] = adj
    return out


def benjamini_hochberg(pvalues: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), via scipy.stats.false_discovery_control.

    NaN p-values are passed through as NaN; the adjustment is over the non-NaN ones.
    """
    p, ok = _pvalues(pvalues)
    out = np.full(p.shape, np.nan)
    if ok.any():
        out[ok] = sps.false_discovery_control(p[ok], method="bh")
    return out
