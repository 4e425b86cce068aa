"""Paired comparisons from stored per-item results, against hand-computed values."""

import math

import numpy as np
import pytest

from frankenlm.study import analysis
from frankenlm.eval.tasks import get_task


def ppl_items(nll, nbytes):
    return [{"item_id": str(i), "metrics": {}, "extras": {"nll": a, "n_bytes": b, "n_tokens": 10}}
            for i, (a, b) in enumerate(zip(nll, nbytes))]


def test_bits_per_byte_gain_is_positive_when_the_config_is_better():
    base = ppl_items([10.0, 20.0, 30.0, 40.0], [10, 20, 30, 40])
    cfg = ppl_items([9.0, 19.0, 29.5, 38.0], [10, 20, 30, 40])
    c = analysis.compare("lambada_passages", "bits_per_byte", False, base, cfg)
    assert c["base_value"] == pytest.approx(100 / (100 * math.log(2)))
    assert c["value"] == pytest.approx(95.5 / (100 * math.log(2)))
    assert c["gain"] == pytest.approx(4.5 / (100 * math.log(2)))
    assert c["ci_low"] <= c["gain"] <= c["ci_high"]
    assert c["n_items"] == 4 and c["n_tokens"] == 40


def test_items_are_paired_by_id_not_position():
    base = ppl_items([10.0, 20.0, 30.0], [10, 20, 30])
    cfg = list(reversed(ppl_items([10.0, 20.0, 30.0], [10, 20, 30])))
    c = analysis.compare("lambada_passages", "bits_per_byte", False, base, cfg)
    assert c["gain"] == pytest.approx(0.0, abs=1e-12)


def test_accuracy_gain_and_exact_mcnemar():
    base = [{"item_id": str(i), "metrics": {"acc": float(i < 5)}, "extras": {}} for i in range(20)]
    cfg = [{"item_id": str(i), "metrics": {"acc": float(i < 14)}, "extras": {}} for i in range(20)]
    c = analysis.compare("arc_easy", "acc", True, base, cfg)
    assert c["gain"] == pytest.approx(9 / 20)
    # 9 discordant pairs, all in the config's favour: exact two-sided p = 2 * 0.5**9
    assert c["p_value"] == pytest.approx(2 * 0.5**9)


def test_lambada_perplexity_is_a_per_item_ratio():
    task = get_task("lambada_openai")
    names = [m.name for m in task.metrics]
    assert "perplexity" in names
    items = [{"item_id": str(i), "metrics": {}, "extras": {"nll": v}} for i, v in enumerate([1.0, 2.0, 3.0])]
    assert analysis.metric_value("lambada_openai", "perplexity", items) == pytest.approx(math.exp(2.0))
    better = [{"item_id": str(i), "metrics": {}, "extras": {"nll": v - 0.5}} for i, v in enumerate([1.0, 2.0, 3.0])]
    c = analysis.compare("lambada_openai", "perplexity", False, items, better)
    assert c["gain"] == pytest.approx(math.exp(2.0) - math.exp(1.5))
    assert np.isfinite(c["p_value"])


def test_point_gain_matches_compare_estimate():
    base = ppl_items([10.0, 20.0, 30.0, 40.0], [10, 20, 30, 40])
    cfg = ppl_items([9.0, 21.0, 29.5, 38.0], [10, 20, 30, 40])
    c = analysis.compare("lambada_passages", "bits_per_byte", False, base, cfg)
    assert analysis.point_gain("lambada_passages", "bits_per_byte", False, base, cfg) == pytest.approx(c["gain"])
