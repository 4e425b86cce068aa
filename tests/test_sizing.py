"""`study --dry-run`: costs and detectable effects before a study runs."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from frankenlm.cli.app import app
from frankenlm.eval.packing import make_packs
from frankenlm.model.loading import load_model
from frankenlm.study.items import select_items
from frankenlm.study.sizing import config_counts, mde, run_tokens, size_model
from frankenlm.study.spec import DesignSpec, TaskBudget
from test_study import tiny_dir, tiny_spec  # noqa: F401  (fixture re-export)


def test_mde_is_mcnemars_normal_approximation():
    # (1.959964 + 0.841621) * sqrt(0.1 / 1000), by hand
    assert math.isclose(mde(1000, 0.10), 2.801585 * math.sqrt(1e-4), rel_tol=1e-5)
    assert mde(4000, 0.10) < mde(1000, 0.10) < mde(1000, 0.10, alpha=0.001)


def test_sizing_counts_configurations_and_packed_tokens(tiny_dir):  # noqa: F811
    spec = tiny_spec(str(tiny_dir))
    spec.tasks = [TaskBudget("copa", search_items=16, heldout_items=8)]
    spec.designs.append(DesignSpec("damped", {"from": "repeat-layer", "top": 2}))
    static, adaptive = config_counts(spec, 6)
    # blocks (0,0) (0,2) (0,4) (2,2) (2,4) (4,4); layers 1, 4 x r=1..2 (4 r=1 is block (4,4)); layer 2 attn, mlp
    assert static == 6 + 3 + 2
    assert adaptive == 2 * 11  # per parent: 4 scales x 3 branches (x1.0 three times the same plan) + mergekit
    lm = load_model(str(tiny_dir))
    cost = size_model(spec, lm, measure=False)
    (task,) = cost.tasks
    assert (task.search_items, task.heldout_items, task.accuracy) == (16, 8, True)
    items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
    from frankenlm.eval.scorer import Scorer

    sc = Scorer(lm.model, lm.tokenizer, max_length=spec.context_length)
    pairs = [sc.encode_pair(r.context, r.continuation) for d in items.search for r in d.requests]
    assert task.tokens_per_config == sum(len(p) for p in make_packs(pairs, spec.context_length))
    assert run_tokens(sc, items.search, fast=False) > task.tokens_per_config
    # a task scored in its own dtype is timed at that dtype's speed, and needs no fp32 re-check
    spec.tasks = [TaskBudget("copa", search_items=16, heldout_items=8, dtype="float32")]
    spec.dtype, spec.fp32_top_k = "bfloat16", 3
    loaded = []
    cost = size_model(spec, lm, load=lambda dtype: loaded.append(dtype) or lm)
    assert (
        loaded == ["float32"] and cost.tasks[0].dtype == "float32" and set(cost.tokens_per_s) == {"bfloat16", "float32"}
    )
    (t,) = cost.tasks
    assert t.configs == cost.configs  # every design runs on the task
    racing = t.tokens_per_config * (spec.heldout_top_k + 1 + (t.configs - spec.heldout_top_k) / spec.slices)
    assert cost.tokens(spec, racing=True) == racing + t.heldout_tokens * (spec.heldout_top_k + 1)
    assert math.isclose(cost.hours(spec, True), cost.tokens(spec, True) / cost.tokens_per_s["float32"] / 3600)


def test_dry_run_prints_costs_and_writes_nothing(tiny_dir, tmp_path):  # noqa: F811
    spec = tiny_spec(str(tiny_dir))
    spec.tasks = [TaskBudget("copa", search_items=16, heldout_items=8)]
    f = tmp_path / "spec.json"
    f.write_text(spec.to_json())
    res = CliRunner().invoke(app, ["study", "--spec", str(f), "--out", str(tmp_path / "run"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "tokens per configuration" in res.output and "detectable at 80% power" in res.output
    assert not (tmp_path / "run").exists()
    assert json.loads(f.read_text())["tasks"][0]["name"] == "copa"
