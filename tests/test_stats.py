"""Tests for frankenlm.eval.stats against hand-computed values, brute force, and simulation with known truth."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from frankenlm.errors import FrankenError
from frankenlm.eval.stats import (
    Interval,
    McNemarResult,
    benjamini_hochberg,
    holm,
    mcnemar_exact,
    mean_and_se,
    paired_bootstrap,
    paired_diff_mean_ci,
    paired_permutation_test,
    paired_ratio_diff_ci,
    ratio_metric,
    ratio_metric_se,
)

LN2 = math.log(2.0)


def _pairs_from_counts(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given 2x2 table (first index: a correct, second: b correct)."""
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return a, b


# ------------------------------------------------------------------------------------------ Interval


def test_interval_excludes_zero() -> None:
    assert Interval(0.5, 0.1, 0.9, 0.95).excludes_zero()
    assert Interval(-0.5, -0.9, -0.1, 0.95).excludes_zero()
    assert not Interval(0.1, -0.1, 0.3, 0.95).excludes_zero()
    assert not Interval(0.1, 0.0, 0.3, 0.95).excludes_zero()


# ---------------------------------------------------------------------------------------- mean / se


def test_mean_and_se_by_hand() -> None:
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    # deviations -1.5, -0.5, 0.5, 1.5 -> sum of squares 5, var = 5/3, se = sqrt(5/3)/sqrt(4)
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5.0 / 3.0) / 2.0)
    m1, se1 = mean_and_se([7.0])
    assert m1 == 7.0 and math.isnan(se1)


# ------------------------------------------------------------------------------------------- McNemar


def test_mcnemar_textbook_table() -> None:
    # b01 (a wrong, b right) = 1, b10 (a right, b wrong) = 9; concordant cells do not matter.
    a, b = _pairs_from_counts(n11=30, n10=9, n01=1, n00=12)
    res = mcnemar_exact(a, b)
    expected = 2 * (math.comb(10, 0) + math.comb(10, 1)) / 2**10
    assert expected == 0.021484375
    assert res == McNemarResult(b01=1, b10=9, pvalue=pytest.approx(expected))
    # Swapping the models swaps the counts, not the two-sided p-value.
    swapped = mcnemar_exact(b, a)
    assert (swapped.b01, swapped.b10) == (9, 1)
    assert swapped.pvalue == pytest.approx(expected)


def test_mcnemar_other_counts_and_ints() -> None:
    a, b = _pairs_from_counts(n11=5, n10=8, n01=2, n00=5)
    res = mcnemar_exact(a.astype(int), b.astype(int))  # 0/1 ints are accepted
    expected = 2 * (math.comb(10, 0) + math.comb(10, 1) + math.comb(10, 2)) / 2**10
    assert (res.b01, res.b10) == (2, 8)
    assert res.pvalue == pytest.approx(expected)  # 0.109375


def test_mcnemar_equal_discordant_counts_gives_one() -> None:
    a, b = _pairs_from_counts(n11=4, n10=3, n01=3, n00=4)
    res = mcnemar_exact(a, b)
    assert (res.b01, res.b10) == (3, 3)
    assert res.pvalue == pytest.approx(1.0)


def test_mcnemar_no_discordant_pairs_gives_one() -> None:
    a, b = _pairs_from_counts(n11=7, n10=0, n01=0, n00=3)
    assert mcnemar_exact(a, b) == McNemarResult(b01=0, b10=0, pvalue=1.0)


# ---------------------------------------------------------------------------- multiple comparisons


def test_holm_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    expected = [0.03, 0.06, 0.06, 0.02]
    np.testing.assert_allclose(holm(p), expected)


def test_holm_clips_at_one_and_is_monotone() -> None:
    # sorted: 0.6 (x2 = 1.2 -> 1), 0.7 (x1 = 0.7 -> running max 1.2 -> 1)
    np.testing.assert_allclose(holm([0.7, 0.6]), [1.0, 1.0])
    rng = np.random.default_rng(3)
    p = rng.random(20) ** 3
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)


def test_bh_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted p * m / rank: 0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04;
    # running minimum from the largest rank down leaves them unchanged.
    expected = [0.02, 0.04, 0.04, 0.02]
    np.testing.assert_allclose(benjamini_hochberg(p), expected)
    # A case where the step-up minimum matters: 0.02*3/1 = 0.06, 0.03*3/2 = 0.045, 0.04*3/3 = 0.04
    np.testing.assert_allclose(benjamini_hochberg([0.03, 0.02, 0.04]), [0.04, 0.04, 0.04])


def test_nan_pvalues_pass_through() -> None:
    p = [0.01, float("nan"), 0.04]
    # adjusted over m = 2 non-NaN values
    np.testing.assert_allclose(holm(p), [0.02, np.nan, 0.04])
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, np.nan, 0.04])
    assert np.all(np.isnan(holm([np.nan, np.nan])))
    assert np.all(np.isnan(benjamini_hochberg([np.nan])))


# ---------------------------------------------------------------------------------- permutation test


def _brute_force_sign_flip(d: np.ndarray) -> float:
    observed = abs(sum(d))
    hits = 0
    total = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        s = sum(si * di for si, di in zip(signs, d))
        hits += abs(s) >= observed - 1e-9
        total += 1
    return hits / total


def test_permutation_small_by_hand() -> None:
    # signed sums of (1, 2, 3): +-6, +-4, +-2, 0, 0 -> |sum| >= 6 in 2 of 8
    assert paired_permutation_test([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # ties: |sum| >= 4 only for all-plus and all-minus
    assert paired_permutation_test([1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)
    assert paired_permutation_test([0.0, 0.0, 0.0]) == pytest.approx(1.0)


def test_permutation_exact_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    for n in (5, 9, 12):
        d = rng.normal(0.4, 1.0, size=n)
        assert paired_permutation_test(d) == pytest.approx(_brute_force_sign_flip(d))


def test_permutation_monte_carlo_close_to_exact() -> None:
    n = 18  # above the exact-enumeration limit, small enough to enumerate here
    d = np.random.default_rng(5).normal(0.35, 1.0, size=n)
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    sums = np.abs((1 - 2 * bits) @ d)
    exact = float(np.mean(sums >= abs(d.sum()) - 1e-9))
    assert 0.02 < exact < 0.5  # a p-value where Monte Carlo error is visible
    B = 20000
    mc = paired_permutation_test(d, n_resamples=B, seed=1)
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / B) + 1 / B
    # the +1 correction: never zero
    assert paired_permutation_test(np.full(40, 1.0), n_resamples=99) == pytest.approx(1 / 100)


def test_permutation_applies_to_ratio_metric_difference() -> None:
    # With a shared denominator, sign-flipping d = nll_a - nll_b is the same as permuting model labels per item.
    rng = np.random.default_rng(2)
    nll_a = rng.gamma(4, 10, size=10)
    nll_b = nll_a + rng.normal(0.5, 2.0, size=10)
    assert paired_permutation_test(nll_a - nll_b) == pytest.approx(_brute_force_sign_flip(nll_a - nll_b))


# ------------------------------------------------------------------------------------- ratio metrics


def test_ratio_metric_by_hand() -> None:
    nll = [2.0, 4.0]
    assert ratio_metric("bits_per_byte", nll, [3, 5]) == pytest.approx(6.0 / (LN2 * 8.0))
    assert ratio_metric("byte_perplexity", nll, [3, 5]) == pytest.approx(math.exp(6.0 / 8.0))
    assert ratio_metric("token_perplexity", nll, [1, 2]) == pytest.approx(math.exp(2.0))
    assert ratio_metric("word_perplexity", nll, [2, 2]) == pytest.approx(math.exp(1.5))
    # per-item sums, not the mean of per-item ratios (which would be (2/3 + 4/5)/2)
    assert ratio_metric("bits_per_byte", [1.0, 9.0], [1, 9]) == pytest.approx(1.0 / LN2)


def test_ratio_metric_se_by_hand_constant_denominator() -> None:
    # With every denominator 2, r = mean(nll)/2 and se(r) = se(nll)/2 exactly.
    nll = [1.0, 2.0, 3.0, 4.0]
    se_nll = math.sqrt(5.0 / 3.0) / 2.0
    r = 2.5 / 2.0
    assert ratio_metric_se("bits_per_byte", nll, [2, 2, 2, 2]) == pytest.approx(se_nll / 2.0 / LN2)
    assert ratio_metric_se("byte_perplexity", nll, [2, 2, 2, 2]) == pytest.approx(math.exp(r) * se_nll / 2.0)
    assert math.isnan(ratio_metric_se("bits_per_byte", [1.0], [3]))


def test_ratio_metric_se_matches_sampling_spread() -> None:
    # Delta-method se should match the spread of the metric over repeated samples.
    rng = np.random.default_rng(7)
    values, ses = [], []
    for _ in range(400):
        nbytes = rng.integers(100, 2000, size=150)
        nll = nbytes * (0.8 + rng.normal(0.0, 0.2, size=150))
        values.append(ratio_metric("bits_per_byte", nll, nbytes))
        ses.append(ratio_metric_se("bits_per_byte", nll, nbytes))
    assert np.mean(ses) == pytest.approx(np.std(values, ddof=1), rel=0.12)


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_deterministic_and_vectorized_path_agrees() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    b = a + rng.normal(0.1, 0.5, size=300)
    i1 = paired_diff_mean_ci(a, b, n_resamples=400, seed=3)
    i2 = paired_diff_mean_ci(a, b, n_resamples=400, seed=3)
    assert i1 == i2
    assert i1.estimate == pytest.approx(a.mean() - b.mean())
    assert i1.low < i1.estimate < i1.high and i1.level == 0.95
    assert paired_diff_mean_ci(a, b, n_resamples=400, seed=4) != i1
    # Same seed draws the same index matrix, so a plain scalar stat gives the same interval.
    for method in ("percentile", "bca"):
        slow = paired_bootstrap(np.mean, a, b, n_resamples=400, seed=3, method=method)
        fast = paired_diff_mean_ci(a, b, n_resamples=400, seed=3, method=method)
        assert slow.low == pytest.approx(fast.low) and slow.high == pytest.approx(fast.high)


def test_dict_stat_recomputes_ratio_per_resample() -> None:
    rng = np.random.default_rng(1)
    nbytes = rng.integers(50, 500, size=120)
    nll_a = nbytes * (0.7 + rng.normal(0, 0.1, size=120))
    nll_b = nll_a + nbytes * rng.normal(0.02, 0.02, size=120)

    def bpb(cols: dict[str, np.ndarray]) -> float:
        return ratio_metric("bits_per_byte", cols["nll"], cols["bytes"])

    slow = paired_bootstrap(bpb, {"nll": nll_a, "bytes": nbytes}, {"nll": nll_b, "bytes": nbytes}, n_resamples=300)
    fast = paired_ratio_diff_ci("bits_per_byte", nll_a, nll_b, nbytes, n_resamples=300)
    expected = (nll_a.sum() - nll_b.sum()) / (LN2 * nbytes.sum())
    assert slow.estimate == pytest.approx(expected) and fast.estimate == pytest.approx(expected)
    assert slow.low == pytest.approx(fast.low) and slow.high == pytest.approx(fast.high)
    assert fast.high < 0  # b has more nll per byte, so a - b < 0
    # separate token counts for b
    tok_a = rng.integers(20, 200, size=120)
    tok_b = tok_a + 5
    iv = paired_ratio_diff_ci("token_perplexity", nll_a, nll_b, tok_a, denom_b=tok_b, n_resamples=200)
    assert iv.estimate == pytest.approx(math.exp(nll_a.sum() / tok_a.sum()) - math.exp(nll_b.sum() / tok_b.sum()))


def test_bca_matches_scipy_bootstrap() -> None:
    # Skewed per-item differences, where BCa moves away from the percentile interval.
    rng = np.random.default_rng(21)
    n = 80
    b = rng.normal(size=n)
    a = b + rng.exponential(1.0, size=n) ** 2
    ours = paired_diff_mean_ci(a, b, n_resamples=20000, seed=0, method="bca")
    perc = paired_diff_mean_ci(a, b, n_resamples=20000, seed=0, method="percentile")
    ref = sps.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=20000,
        method="BCa",
        rng=np.random.default_rng(1),
    ).confidence_interval
    tol = 0.02
    assert ours.low == pytest.approx(ref.low, abs=tol)
    assert ours.high == pytest.approx(ref.high, abs=tol)
    assert abs(ours.high - perc.high) > 3 * tol  # the check above can tell BCa from percentile


def _coverage(make, truth: float, n_sims: int, ci) -> float:
    hits = 0
    for s in range(n_sims):
        rng = np.random.default_rng(1000 + s)
        iv = ci(*make(rng), seed=s)
        hits += iv.low <= truth <= iv.high
    return hits / n_sims


def test_coverage_normal_pairs() -> None:
    def make(rng):
        x = rng.normal(size=200)  # shared item difficulty
        return 0.3 + x + rng.normal(0, 0.8, 200), x + rng.normal(0, 0.8, 200)

    cov = _coverage(make, 0.3, 200, lambda a, b, seed: paired_diff_mean_ci(a, b, n_resamples=500, seed=seed))
    assert 0.90 <= cov <= 0.99


def test_coverage_correlated_bernoulli_pairs() -> None:
    # a ~ Bern(0.7); b copies a with prob 0.8, else is an independent Bern(0.5):
    # P(b=1) = 0.8*0.7 + 0.2*0.5 = 0.66, so the true accuracy difference is 0.04.
    def make(rng):
        a = rng.random(200) < 0.7
        b = np.where(rng.random(200) < 0.8, a, rng.random(200) < 0.5)
        return a.astype(float), b.astype(float)

    for method in ("percentile", "bca"):
        ci = lambda a, b, seed, method=method: paired_diff_mean_ci(a, b, n_resamples=500, seed=seed, method=method)  # noqa: E731
        cov = _coverage(make, 0.04, 200, ci)
        assert 0.90 <= cov <= 0.99, method


def test_coverage_bits_per_byte_difference() -> None:
    # nll_i = bytes_i * (rate + h_i) + sqrt(bytes_i) * noise with mean-zero h, noise: the population
    # bits per byte is rate / ln 2, so the true difference is (0.9 - 0.85) / ln 2.
    truth = (0.9 - 0.85) / LN2

    def make(rng):
        nbytes = rng.integers(100, 3000, size=200)
        h = rng.normal(0.0, 0.25, size=200)  # shared document difficulty
        nll_a = nbytes * (0.9 + h) + np.sqrt(nbytes) * rng.normal(0, 1.5, size=200)
        nll_b = nbytes * (0.85 + h) + np.sqrt(nbytes) * rng.normal(0, 1.5, size=200)
        return nll_a, nll_b, nbytes

    def ci(nll_a, nll_b, nbytes, seed):
        return paired_ratio_diff_ci("bits_per_byte", nll_a, nll_b, nbytes, n_resamples=500, seed=seed)

    cov = _coverage(make, truth, 200, ci)
    assert 0.90 <= cov <= 0.99


def test_pairing_narrows_interval() -> None:
    rng = np.random.default_rng(9)
    n = 400
    x = rng.normal(0, 1.0, size=n)
    a = x + rng.normal(0, 0.1, size=n) + 0.05
    b = x + rng.normal(0, 0.1, size=n)
    paired = paired_diff_mean_ci(a, b, n_resamples=1000)
    assert paired.excludes_zero()
    # Unpaired bootstrap: resample a and b independently.
    r = np.random.default_rng(0)
    unpaired = a[r.integers(0, n, (1000, n))].mean(axis=1) - b[r.integers(0, n, (1000, n))].mean(axis=1)
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert lo < 0 < hi  # the same effect is invisible without pairing
    assert (paired.high - paired.low) < 0.2 * (hi - lo)
    # and the paired width matches the normal theory width 2 * 1.96 * sd(a - b) / sqrt(n)
    assert paired.high - paired.low == pytest.approx(2 * 1.96 * np.std(a - b, ddof=1) / math.sqrt(n), rel=0.15)


def test_large_n_runs() -> None:
    rng = np.random.default_rng(4)
    n = 5000
    a = (rng.random(n) < 0.6).astype(float)
    b = (rng.random(n) < 0.55).astype(float)
    iv = paired_diff_mean_ci(a, b)  # n_resamples = 2000
    assert iv.low < a.mean() - b.mean() < iv.high
    assert iv.excludes_zero()


def test_degenerate_identical_models() -> None:
    a = np.array([1.0, 0.0, 1.0, 1.0])
    for method in ("percentile", "bca"):
        iv = paired_diff_mean_ci(a, a.copy(), n_resamples=100, method=method)
        assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
        assert not iv.excludes_zero()


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call",
    [
        lambda: mean_and_se([]),
        lambda: paired_diff_mean_ci([], []),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, 2.0, 3.0]),
        lambda: paired_diff_mean_ci([1.0], [2.0]),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, float("nan")]),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, 2.0], level=0.0),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, 2.0], level=1.0),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, 2.0], level=95),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, 2.0], n_resamples=0),
        lambda: paired_diff_mean_ci([1.0, 2.0], [1.0, 2.0], method="basic"),
        lambda: paired_bootstrap(np.mean, {"x": np.ones(3)}, np.ones(3)),
        lambda: paired_bootstrap(np.mean, {"x": np.ones(3), "y": np.ones(4)}, {"x": np.ones(3)}),
        lambda: paired_bootstrap(lambda x: x, np.ones(3), np.ones(3)),  # stat not scalar
        lambda: ratio_metric("perplexity", [1.0], [1]),
        lambda: ratio_metric("bits_per_byte", [1.0, 2.0], [1]),
        lambda: ratio_metric("bits_per_byte", [1.0, 2.0], [0, 0]),
        lambda: ratio_metric("bits_per_byte", [1.0, 2.0], [-1, 3]),
        lambda: ratio_metric_se("bits_per_byte", [], []),
        lambda: paired_ratio_diff_ci("bits_per_byte", [1.0, 2.0], [1.0], [1, 2]),
        lambda: paired_ratio_diff_ci("token_perplexity", [1.0, 2.0], [1.0, 2.0], [1, 2], denom_b=[1]),
        lambda: mcnemar_exact([True, False], [True]),
        lambda: mcnemar_exact([], []),
        lambda: mcnemar_exact([0, 2], [1, 1]),
        lambda: paired_permutation_test([]),
        lambda: paired_permutation_test([1.0, 2.0], n_resamples=-5),
        lambda: holm([]),
        lambda: holm([0.5, 1.2]),
        lambda: benjamini_hochberg([-0.1]),
        lambda: holm([[0.1, 0.2]]),
    ],
)
def test_bad_input_raises(call) -> None:
    with pytest.raises(FrankenError):
        call()
