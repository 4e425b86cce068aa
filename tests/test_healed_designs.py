"""Designs `damped` and `substep` (#11: healed repeats): the plans they generate, the parameters the report
plots, and a study that derives them from an earlier design's best configurations."""

from __future__ import annotations

import csv
import json
import math

import pytest

from frankenlm.model.plan import LayerRef, identity_plan, repeat_block_plan, repeat_layer_plan
from frankenlm.study import designs, units
from frankenlm.study.archive import export_store
from frankenlm.study.runner import run_study
from frankenlm.study.spec import DesignSpec, EarlyStopping, StudySpec, TaskBudget
from test_study import tiny_dir  # noqa: F401  (fixture re-export)

pytestmark = pytest.mark.skipif(
    not hasattr(LayerRef(0), "attn_scale"), reason="LayerRef scale fields (plan contract #11) not there yet"
)


def scales(ref):
    return ref.attn_scale, ref.mlp_scale, ref.qk_scale


def test_damped_scales_only_the_repeated_copies():
    got = designs.damped(6, layers=[2], scales=[0.25, 1.0])
    plain = repeat_layer_plan(2, 6)
    by = {(c.params["branch"], c.params["scale"]): c for c in got}
    # attn/mlp at scale 1 are the plain repeat, already proposed as ("both", 1.0): deduplicated
    assert set(by) == {("both", 0.25), ("attn", 0.25), ("mlp", 0.25), ("both", 1.0), ("mergekit", math.sqrt(0.5))}
    assert by[("both", 1.0)].plan == plain
    for c in by.values():
        assert c.params["layer"] == 2 and c.params["of"] == str(plain) and c.design == "damped"
        refs = c.plan.refs
        assert len(refs) == 7 and all(scales(r) == (1.0, 1.0, 1.0) for k, r in enumerate(refs) if k != 3)
        assert refs[2] == LayerRef(2)  # the first application is untouched
    assert scales(by[("both", 0.25)].plan.refs[3]) == (0.25, 0.25, 1.0)
    assert scales(by[("attn", 0.25)].plan.refs[3]) == (0.25, 1.0, 1.0)
    assert scales(by[("mlp", 0.25)].plan.refs[3]) == (1.0, 0.25, 1.0)
    assert scales(by[("mergekit", math.sqrt(0.5))].plan.refs[3]) == (1.0, math.sqrt(0.5), 0.5)


def test_damped_blocks_and_parents_with_several_copies():
    (c,) = designs.damped(6, blocks=[[1, 3]], scales=[0.5], branches=["both"], mergekit=False)
    assert c.params["i"] == 1 and c.params["j"] == 3 and c.params["of"] == str(repeat_block_plan(1, 3, 6))
    assert [scales(r)[0] for r in c.plan.refs] == [1, 1, 1, 1, 0.5, 0.5, 0.5, 1, 1]
    parent = designs.repeat_layer(6, layers=[4], max_repeats=3)[2]  # layer 4 run 4 times
    (mk,) = [x for x in designs.damped(6, parents=[parent], scales=[0.5]) if x.params["branch"] == "mergekit"]
    copies = [scales(r) for r in mk.plan.refs[5:8]]
    assert copies == [(1.0, math.sqrt(0.5), 0.5), (1.0, math.sqrt(0.5), 1.0), (1.0, math.sqrt(0.5), 1.0)]
    assert mk.params["repeats"] == 3 and mk.params["of"] == parent.text


def test_substep_replaces_a_layer_by_n_smaller_steps():
    got = designs.substep(6, layers=[2])
    assert [c.params["substeps"] for c in got] == [2, 3, 4]
    for c in got:
        n = c.params["substeps"]
        refs = c.plan.refs
        assert len(refs) == 6 + n - 1
        assert all(r.layer == 2 and r.attn_scale == r.mlp_scale == 1 / n for r in refs[2 : 2 + n])
        assert str(c.plan) == f"0..1,2~{n},3..5"
    blk = designs.substep(6, blocks=[[1, 2]], substeps=[2])[0]
    assert str(blk.plan) == "0,1~2,2~2,3..5" and (blk.params["i"], blk.params["j"]) == (1, 2)
    par = designs.substep(6, parents=[designs.repeat_block(6, stride=6, min_len=2)[0]], substeps=[3])[0]
    assert str(par.plan) == "0~3,1~3,2..5" and par.params["of"] == str(repeat_block_plan(0, 1, 6))
    assert designs.substep(6, parents=[designs.base_candidate(6)]) == []  # nothing repeated: nothing to split
    assert identity_plan(6) != got[0].plan


def healed_spec(model: str, slices: int = 2, early_stopping: EarlyStopping | None = None) -> StudySpec:
    return StudySpec(
        "healed",
        [model],
        [TaskBudget("lambada_passages", search_tokens=300 * slices, heldout_tokens=200)],
        [
            DesignSpec("repeat-layer", {"layers": [0, 2, 4], "max_repeats": 1}),
            DesignSpec("damped", {"from": "repeat-layer", "top": 2, "scales": [0.0, 0.5], "branches": ["both"]}),
            DesignSpec("substep", {"from": "repeat-layer", "top": 1, "substeps": [2]}),
        ],
        dtype="float32",
        slices=slices,
        early_stopping=early_stopping,
        heldout_top_k=2,
        fp32_top_k=0,
        batch_size=4,
        context_length=256,
    )


def test_a_study_derives_damped_and_substep_from_the_best_repeats(tiny_dir, tmp_path):  # noqa: F811
    spec = healed_spec(str(tiny_dir))
    run_study(spec, tmp_path / "run")
    info = next(iter(json.loads((tmp_path / "run" / "manifest.json").read_text())["models"].values()))
    rows = {r["config"]: r for r in csv.DictReader(open(tmp_path / "run" / "results.csv"))}
    repeat = sorted((r for r in rows.values() if r["design"] == "repeat-layer"), key=lambda r: -float(r["gain"]))
    damped = [c for c in info["configs"] if c["design"] == "damped"]
    assert {c["of"] for c in damped} == {r["config"] for r in repeat[:2]}  # the two best on the search items
    assert {(c["branch"], c["scale"]) for c in damped} == {("both", 0.0), ("both", 0.5), ("mergekit", math.sqrt(0.5))}
    for c in damped:
        if c["scale"] == 0.0:  # a copy that adds nothing to the residual stream is the base model
            assert abs(float(rows[c["plan"]]["gain"])) < 1e-6
    (sub,) = [c for c in info["configs"] if c["design"] == "substep"]
    assert sub["of"] == repeat[0]["config"] and sub["substeps"] == 2 and sub["plan"] in rows


def test_two_walks_over_the_same_units_derive_the_same_parents(tiny_dir, tmp_path, monkeypatch):  # noqa: F811
    """A later session walks a task again from the stored (or committed) units: with racing on, it must pick the
    same parents for the derived designs, hence the same configurations, without computing a unit."""
    spec = healed_spec(str(tiny_dir), slices=3, early_stopping=EarlyStopping(level=0.5, min_items=2))
    first = run_study(spec, tmp_path / "first")
    export_store(first / "results.sqlite", tmp_path / "results.parquet")

    def no_model_work(*args, **kwargs):
        raise AssertionError("a stored unit was computed again")

    monkeypatch.setattr(units.SliceScorer, "score", no_model_work)
    again = run_study(spec, first)  # the same run resumed
    second = run_study(spec, tmp_path / "second", archives=[tmp_path / "results.parquet"])  # another machine

    def derived(run_dir):
        info = next(iter(json.loads((run_dir / "manifest.json").read_text())["models"].values()))
        return [c for c in info["configs"] if c["design"] in ("damped", "substep")], info["tasks"]

    (configs, tasks) = derived(tmp_path / "first")
    assert configs and derived(again) == derived(second) == (configs, tasks)
    rows = list(csv.DictReader(open(first / "results.csv")))
    assert {r["stopped_early"] for r in rows} == {"0", "1"}, "racing dropped nothing: the walk is not tested"
    assert (second / "results.csv").read_text() == (first / "results.csv").read_text()


@pytest.mark.slow
def test_damped_on_smollm2_zero_scale_is_the_base_and_unit_scale_the_plain_repeat(tmp_path):
    """SmolLM2-135M, fp32: a repeated copy scaled by 0 leaves the residual stream as it was (gain exactly 0),
    scaled by 1 it is the plain repeat (the same store row)."""
    spec = StudySpec(
        "healed-smol",
        ["smollm2-135m"],
        [TaskBudget("lambada_passages", search_tokens=300, heldout_tokens=100)],
        [
            DesignSpec("repeat-layer", {"layers": [5], "max_repeats": 1}),
            DesignSpec("damped", {"layers": [5], "scales": [0.0, 0.5, 1.0], "branches": ["both"], "mergekit": True}),
        ],
        dtype="float32",
        slices=2,
        early_stopping=None,
        heldout_top_k=1,
        fp32_top_k=0,
        batch_size=4,
        context_length=512,
    )
    run_study(spec, tmp_path / "run")
    rows = {r["config"]: r for r in csv.DictReader(open(tmp_path / "run" / "results.csv"))}
    plain = str(repeat_layer_plan(5, 30))
    damped = {
        (c.params["scale"]): c
        for c in designs.damped(30, layers=[5], scales=[0.0, 0.5, 1.0], branches=["both"], mergekit=False)
    }
    assert damped[1.0].text == plain and rows[plain]["design"] == "repeat-layer"
    assert abs(float(rows[damped[0.0].text]["gain"])) < 1e-6
    assert float(rows[damped[0.5].text]["gain"]) != float(rows[plain]["gain"])
    assert rows[damped[0.5].text]["design"] == "damped"


def test_repeat_layer_derives_longer_repeat_curves_from_the_best_layers():
    parents = designs.build("repeat-layer", {"layers": [4, 1], "max_repeats": 2}, 6)[:3]  # layer 4 r=1,2; layer 1
    got = designs.build("repeat-layer", {"from": "repeat-layer", "top": 3, "max_repeats": 6}, 6, parents=parents)
    assert [(c.params["layer"], c.params["repeats"]) for c in got] == [(4, r) for r in range(1, 7)] + [
        (1, r) for r in range(1, 7)
    ]
    designs.check_args("repeat-layer", {"from": "repeat-layer", "top": 3, "max_repeats": 6}, ["repeat-layer"])
