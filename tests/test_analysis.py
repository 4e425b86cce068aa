"""Paired comparisons from stored per-item results, against hand-computed values."""

import json
import math
import shlex

import numpy as np
import pytest

from frankenlm.eval.tasks import get_task
from frankenlm.study import analysis


def ppl_items(nll, nbytes):
    return [
        {"item_id": str(i), "metrics": {}, "extras": {"nll": a, "n_bytes": b, "n_tokens": 10}}
        for i, (a, b) in enumerate(zip(nll, nbytes))
    ]


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


# ----------------------------------------------------------------------------- declared direction, typed rows


def test_every_task_declares_its_primary_metric_and_direction():
    from frankenlm.eval.tasks import list_tasks

    expected = {
        "lambada_passages": ("bits_per_byte", False),
        "pydoc_topics": ("bits_per_byte", False),
        "wikitext2": ("bits_per_byte", False),
        "arc_easy": ("acc_norm", True),
        "hellaswag": ("acc_norm", True),
        "winogrande": ("acc", True),
        "lambada_openai": ("acc", True),
        "gsm8k": ("exact_match_flexible", True),
    }
    for name in list_tasks():
        task = get_task(name)
        assert task.primary is not None, name  # declared, not guessed
        assert analysis.primary_metric(task) == (task.primary_metric.name, task.primary_higher_is_better)
        if name in expected:
            assert analysis.primary_metric(task) == expected[name]
    lam = get_task("lambada_openai")
    assert lam.metric("perplexity").higher_is_better is False and lam.metric("acc").higher_is_better is True


def test_each_configuration_gets_its_own_export_directory():
    plans = ["0..4,0..23", "0..4,0..4@0.25/1,5..23", "0..4,0..4@0.5/1,5..23", "0..4,0..4.attn,5..23"]
    commands = [shlex.split(analysis._export_command("qwen2.5-coder-0.5b", p)) for p in plans]
    outs = [c[c.index("--out") + 1] for c in commands]
    assert len(set(outs)) == len(plans)  # one model's confirmed configurations do not overwrite each other
    assert all(o.startswith("exports/") and o.count("/") == 1 for o in outs)  # '/' in a plan makes no subfolder
    assert [c[c.index("--plan") + 1] for c in commands] == plans


def test_a_primary_metric_the_task_does_not_report_is_an_error():
    from dataclasses import replace

    from frankenlm.errors import FrankenError

    with pytest.raises(FrankenError, match="primary metric 'acc_norm' is not one of acc"):
        replace(get_task("boolq"), primary="acc_norm")
    with pytest.raises(FrankenError, match="has no metric 'bpb'"):
        get_task("boolq").metric("bpb")


def _synthetic_run(tmp_path):
    """A 4-layer 'model' with per-item results put straight into a store: base, two configs, held-out, fp32."""
    from frankenlm.study.spec import preset
    from frankenlm.study.store import Store, Unit, item_set_digest

    task, digest = "lambada_passages", "d" * 16
    spec = preset("quick")
    (tmp_path / "spec.json").write_text(spec.to_json())
    ids = [str(k) for k in range(12)]
    slices, held = [ids[:6], ids[6:10]], ids[10:] + ["h2", "h3"]
    base_cost = {"flops_per_token": 1000.0, "effective_params": 400, "kv_bytes_per_token": 64}
    configs = [
        {"plan": "0..2,2..3", "design": "repeat-layer", "layer": 2, "repeats": 1, "sublayer": "block"},
        {"plan": "0..3,1..3", "design": "repeat-block", "i": 1, "j": 3, "repeats": 1},
    ]
    costs = {
        "0..3": base_cost,
        "0..2,2..3": {"flops_per_token": 1250.0, "effective_params": 500, "kv_bytes_per_token": 80},
        "0..3,1..3": {"flops_per_token": 1750.0, "effective_params": 700, "kv_bytes_per_token": 112},
    }
    manifest = {
        "started": "s",
        "finished": "f",
        "timings": {},
        "command": "c",
        "models": {
            "m": {
                "digest": digest,
                "depth": 4,
                "params": 400,
                "configs": configs,
                "costs": costs,
                "tasks": {
                    task: {
                        "primary": "bits_per_byte",
                        "higher_is_better": False,
                        "slices": slices,
                        "heldout": held,
                        "search_tokens": 99,
                    }
                },
            }
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    store = Store(tmp_path / "results.sqlite")
    rng = np.random.default_rng(0)
    noise = {(p, i): float(rng.normal(0, 0.1)) for p in ("0..3", "0..2,2..3", "0..3,1..3") for i in ids + held}
    shift = {"0..3": 0.0, "0..2,2..3": -2.0, "0..3,1..3": 3.0}  # nll shift per item: config 1 better
    for plan, d in shift.items():
        for part, dtype in [*[(s, spec.dtype) for s in slices], (held, spec.dtype), *[(s, "float32") for s in slices]]:
            if plan == "0..3,1..3" and part is slices[1] and dtype == spec.dtype:
                continue  # the block was stopped early by racing: one slice only
            items = [
                {
                    "item_id": i,
                    "metrics": {},
                    "extras": {"nll": 50 + int(i.strip("h")) + d + noise[plan, i], "n_bytes": 40, "n_tokens": 10},
                }
                for i in part
            ]
            store.put(Unit(digest, plan, task, item_set_digest(task, part), dtype), items)
    return store


def test_study_rows_write_and_read_back_the_same_typed_rows(tmp_path):
    import csv

    from frankenlm.study.results import RESULT_COLUMNS, read_results

    store = _synthetic_run(tmp_path)  # fp32 results equal the bf16 ones here
    rows, summary = analysis.study_rows(tmp_path, store)
    analysis.write_results(tmp_path, store)
    back = read_results(tmp_path)
    assert back.rows == rows and back.study["design_params"] == summary["design_params"]
    with open(tmp_path / "results.csv", newline="") as fh:
        raw = list(csv.DictReader(fh))
        assert list(raw[0]) == RESULT_COLUMNS
    base, layer, block = raw
    # the cells are written as before the schema: flags 0/1, empty cells for what does not apply, ints as ints
    assert base["design"] == "base" and base["significant"] == "" and base["p_holm"] == "" and base["gain"] == "0.0"
    assert layer["significant"] in ("0", "1") and layer["stopped_early"] == "0" and layer["i"] == ""
    assert layer["effective_params"] == "500" and layer["kv_bytes_per_token"] == "80"
    assert float(layer["flops_ratio"]) == 1.25 and float(layer["extra_flops_per_token"]) == 250.0
    assert block["stopped_early"] == "1" and block["n_items"] == "6" and block["heldout_gain"] != ""
    # gain: bits per byte of base minus config (items both have), positive = better
    assert float(layer["gain"]) == pytest.approx(2.0 / (40 * math.log(2)), abs=0.004)  # noise sd 0.1 nats/item
    assert float(block["gain"]) < 0 < float(layer["gain"])
    typed = {r.config: r for r in rows}
    assert typed["0..2,2..3"].better == (layer["significant"] == "1")
    assert typed["0..3,1..3"].worse and typed["0..3,1..3"].repeated_layers == (1, 2, 3)
    assert typed["0..2,2..3"].fp32_agrees is True
