"""`frankenlm eval`'s comparison layer: the paired arithmetic in eval/ equals the study's, and results are data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from frankenlm.eval import paired
from frankenlm.eval.comparison import EvalRun, MetricRow, TaskSummary, higher_is_better
from frankenlm.eval.results import EvalResult, MetricValue, TaskResult


def _items(rng, n, kind):
    out = []
    for i in range(n):
        if kind == "mean":
            out.append({"item_id": str(i), "metrics": {"acc": float(rng.random() < 0.6)}, "extras": {}})
        else:
            out.append(
                {
                    "item_id": str(i),
                    "metrics": {},
                    "extras": {"nll": float(rng.random() * 50), "n_bytes": int(rng.integers(20, 200)), "n_tokens": 10},
                }
            )
    return out


@pytest.mark.parametrize("task, metric, kind", [("copa", "acc", "mean"), ("pydoc_topics", "bits_per_byte", "ratio")])
def test_paired_compare_matches_the_study_analysis(task, metric, kind):
    analysis = pytest.importorskip("frankenlm.study.analysis")
    rng = np.random.default_rng(3)
    base, cfg = _items(rng, 40, kind), _items(rng, 40, kind)[::-1]  # other order: matched by item id
    hib = higher_is_better(task, metric)
    assert paired.compare(task, metric, hib, base, cfg) == analysis.compare(task, metric, hib, base, cfg)


def test_paired_compare_hand_values():
    base = [{"item_id": str(i), "metrics": {"acc": v}, "extras": {}} for i, v in enumerate([1, 0, 0, 1, 0, 0])]
    cfg = [{"item_id": str(i), "metrics": {"acc": v}, "extras": {}} for i, v in enumerate([1, 1, 1, 1, 0, 0])]
    c = paired.compare("copa", "acc", True, base, cfg)
    assert c["base_value"] == pytest.approx(2 / 6) and c["value"] == pytest.approx(4 / 6)
    assert c["gain"] == pytest.approx(2 / 6)
    assert c["p_value"] == pytest.approx(0.5)  # exact McNemar, 2 discordant pairs both one way: 2 * 0.5^2
    one = paired.compare("copa", "acc", True, base[:1], cfg[:1])
    assert math.isnan(one["gain"]) and one["n_items"] == 1


def test_direction_is_the_tasks():
    assert higher_is_better("arc_easy", "acc_norm") is True
    assert higher_is_better("pydoc_topics", "bits_per_byte") is False
    assert higher_is_better("lambada_openai", "perplexity") is False


def test_summaries_are_plain_data():
    def result(v):
        return EvalResult(
            {"copa": TaskResult("copa", 5, {"acc": MetricValue(v, 0.1)}, 10, 100, 5, 1.0, 100.0, "s", "n")}, []
        )

    run = EvalRun("m", None, result(0.4), None)
    assert run.summaries() == [TaskSummary("copa", 5, None, (MetricRow("acc", 0.4, 0.1, True),))]
    run = EvalRun(
        "m",
        "0..1,1",
        result(0.4),
        result(0.6),
        comparisons={"copa": {"acc": {"diff": 0.2, "diff_low": 0.0, "diff_high": 0.4, "p_value": 0.3}}},
    )
    (row,) = run.summaries()[0].rows
    assert (row.value, row.base_value, row.diff, row.diff_low, row.diff_high, row.p_value) == (
        0.6,
        0.4,
        0.2,
        0.0,
        0.4,
        0.3,
    )
    assert run.summaries()[0].plan == "0..1,1"


def test_racing_decides_on_the_gold_margin_where_accuracy_is_0_or_1():
    import math

    from frankenlm.eval.paired import choice_margin, racing_compare, racing_signal

    ex = {"logprobs": [-3.0, -1.0, -2.0], "gold": 1, "choice_chars": [1, 4, 1]}
    assert choice_margin(ex, normalized=False) == 1.0  # -1 - max(-3, -2)
    assert choice_margin(ex, normalized=True) == -0.25 - (-2.0)  # per character: -1/4 against -2/1

    def item(i, lls, gold=0):
        acc = float(max(range(len(lls)), key=lambda k: lls[k]) == gold)
        return {
            "item_id": str(i),
            "metrics": {"acc": acc},
            "extras": {"logprobs": lls, "gold": gold, "choice_chars": [1] * len(lls)},
        }

    # every item still right, every margin a little smaller: accuracy cannot tell, the margin can
    base = [item(i, [-1.0, -2.0 - 0.01 * i]) for i in range(40)]
    worse = [item(i, [-1.5, -2.0 - 0.01 * i]) for i in range(40)]
    assert racing_signal("acc", base) == "margin" and racing_signal("bits_per_byte", base) is None
    c = racing_compare("arc_easy", "acc", True, base, worse, level=0.99, n_resamples=500)
    assert c["signal"] == "margin" and math.isclose(c["gain"], -0.5) and c["ci_high"] < 0
    acc = paired.compare("arc_easy", "acc", True, base, worse, level=0.99, n_resamples=500)
    assert acc["gain"] == 0.0 and acc["ci_high"] >= 0  # the 0/1 metric sees no difference at all
