"""Racing and the greedy search as pure decisions (no model), the one plan order, the design registry."""

from __future__ import annotations

import pytest

from frankenlm.errors import FrankenError
from frankenlm.model.plan import identity_plan, parse_plan, repeat_layer_plan
from frankenlm.study import designs, racing, search
from frankenlm.study.racing import Paired
from frankenlm.study.spec import EarlyStopping
from frankenlm.study.units import plan_order


def test_racing_keeps_the_top_k_and_anything_not_clearly_worse():
    vs_base = {
        "a": Paired(0.5, 0.9),  # leader
        "b": Paired(0.1, 0.3),  # leader
        "c": Paired(-0.2, 0.1),  # interval includes 0: kept
        "d": Paired(-0.5, -0.1),  # clearly worse than the base, and than the 2nd best: dropped
        "e": Paired(-0.4, -0.05),  # clearly worse than the base, not clearly worse than the 2nd best: kept
    }
    asked = []

    def vs_kth(p, kth):
        asked.append((p, kth))
        return {"d": Paired(-0.6, -0.2), "e": Paired(-0.3, 0.05)}[p]

    assert racing.survivors(list(vs_base), vs_base, 2, vs_kth) == ["a", "b", "c", "e"]
    assert sorted(asked) == [("d", "b"), ("e", "b")]  # only the clearly worse ones are compared with the k-th


def test_racing_never_drops_a_leader_even_when_clearly_worse_than_the_base():
    vs_base = {"x": Paired(-0.1, -0.01), "y": Paired(-0.9, -0.5), "z": Paired(-1.0, -0.6)}
    keep = racing.survivors(["x", "y", "z"], vs_base, 2, lambda p, kth: Paired(-1, -1))
    assert keep == ["x", "y"]
    # ties in gain are broken by the plan's text, so the decision does not depend on dict order
    tie = {"q": Paired(0.0, -0.1), "p": Paired(0.0, -0.1)}
    assert racing.ranked(tie) == ["p", "q"]


def test_racing_looks_only_when_the_rule_allows():
    rule = EarlyStopping(level=0.99, min_slices=2, min_items=10)
    assert not racing.may_decide(1, 8, 100, rule)  # too few slices
    assert not racing.may_decide(3, 8, 9, rule)  # too few documents
    assert racing.may_decide(3, 8, 10, rule)
    assert not racing.may_decide(8, 8, 100, rule)  # after the last slice there is nothing to save
    assert not racing.may_decide(3, 8, 100, None)  # racing off


def test_greedy_search_composes_the_best_and_stops_when_nothing_improves():
    depth = 6
    layers = search.candidate_layers([0.5, 0.1, 0.3, 0.05, 0.9, 0.2], 3)
    assert layers == [3, 1, 5]
    s = search.SearchState()
    step1 = search.proposals(s, layers, depth)
    assert [c.plan for c in step1] == [repeat_layer_plan(k, depth) for k in layers]
    # layer 1's repeat is best; 5's stopped early (no gain given)
    s = search.advance(s, step1, {step1[0].text: 0.01, step1[1].text: 0.03}, steps=3)
    assert s.best == step1[1] and s.used == (1,) and not s.done
    step2 = search.proposals(s, layers, depth)
    assert [c.params["layers"] for c in step2] == [[1, 3], [1, 5]]
    assert step2[0].plan == parse_plan("0,1*2,2,3*2,4,5")
    # nothing beats 0.03: stop, keeping the step-1 plan
    s2 = search.advance(s, step2, {step2[0].text: 0.02, step2[1].text: 0.03}, steps=3)
    assert s2.done and s2.best == step1[1] and len(s2.tried) == 5
    # an improvement is taken; the step limit ends the search
    s3 = search.advance(s, step2, {step2[1].text: 0.05}, steps=2)
    assert s3.best == step2[1] and s3.done
    # no proposal ran the full budget: stop
    assert search.advance(s, step2, {}, steps=3).done
    # step 1 takes the best even when it is worse than the base (as the study always did)
    assert search.advance(search.SearchState(), step1, {step1[2].text: -0.5}, steps=3).best == step1[2]


def test_one_plan_order_base_first_then_longest_shared_prefix():
    base = identity_plan(6)
    plans = [parse_plan(t) for t in ("0..1,1,2..5", "0..4,4,5", "0..5,5", "0..2,2,3..5", "0..4,4,5")]
    got = plan_order(plans, base)
    assert got[0] == base
    assert got[1:] == [parse_plan(t) for t in ("0..5,5", "0..4,4,5", "0..2,2,3..5", "0..1,1,2..5")]


def test_designs_registry_and_argument_checks():
    assert set(designs.DESIGNS) >= {"repeat-layer", "repeat-block", "sublayer", "custom", "search", "damped", "substep"}
    with pytest.raises(FrankenError, match="unknown design 'repeat-lyr'"):
        designs.check_args("repeat-lyr", {}, [])
    with pytest.raises(FrankenError, match="unknown argument 'evry'"):
        designs.check_args("repeat-layer", {"evry": 2}, [])
    with pytest.raises(FrankenError, match="must name a design listed before it"):
        designs.check_args("damped", {"from": "repeat-layer", "top": 3}, ["repeat-block"])
    designs.check_args("damped", {"from": "repeat-layer", "top": 3}, ["repeat-layer"])
    with pytest.raises(FrankenError, match="layer 9 is out of range"):
        designs.build("repeat-layer", {"layers": [9]}, 6)
    with pytest.raises(FrankenError, match="max_repeats must be an integer >= 1"):
        designs.build("repeat-layer", {"max_repeats": "3"}, 6)
    assert designs.build("repeat-layer", {"fraction_every": 0.5, "max_repeats": 1}, 6) == designs.repeat_layer(
        6, max_repeats=1, every=3
    )


def test_a_derived_design_takes_its_parents_from_stopped_configurations_when_too_few_ran_out(tmp_path):
    """`best_of`: configurations that ran the full search budget first (by gain), then, where racing stopped the
    rest, those by their gain on the slices they saw — so that healed variants of the best layers exist even
    where every plain repeat is clearly worse (racing stops them all). Gains counted by hand below."""
    from types import SimpleNamespace

    from frankenlm.study.store import Store, Unit, item_set_digest
    from frankenlm.study.sweep import best_of

    slices = [["a", "b"], ["c", "d"]]
    acc = {  # per plan, per item: correct (1) or not (0); the base gets every item right
        "0..3": [1, 1, 1, 1],
        "full": [1, 0, 0, 1],  # full budget: gain -0.5
        "mild": [1, 0],  # stopped after slice 1: gain -0.5 there
        "bad": [0, 0],  # stopped after slice 1: gain -1
        "okay": [1, 1],  # stopped after slice 1: gain 0
    }
    store = Store(tmp_path / "s.sqlite")
    for plan, values in acc.items():
        for k, ids in enumerate(slices[: len(values) // 2]):
            rows = [{"item_id": i, "metrics": {"acc": v}} for i, v in zip(ids, values[2 * k : 2 * k + 2], strict=True)]
            store.put(Unit("d", plan, "arc_easy", item_set_digest("arc_easy", ids), "bfloat16"), rows)
    lm = SimpleNamespace(digest="d", depth=4)
    docs = [[SimpleNamespace(item_id=i) for i in ids] for ids in slices]
    items = SimpleNamespace(task="arc_easy", primary="acc", higher_is_better=True, search_slices=docs)
    cands = [SimpleNamespace(text=t) for t in ("full", "mild", "bad", "okay")]
    seen = {"full": 2, "mild": 1, "bad": 1, "okay": 1}

    def best(top, seen=seen):
        return [c.text for c in best_of(store, lm, items, "bfloat16", seen, cands, top)]

    assert best(1) == ["full"]  # enough ran the full budget: only those
    assert best(3) == ["full", "okay", "mild"]  # then the stopped ones, best first on what they saw
    assert best(4, {**seen, "full": 1}) == ["okay", "full", "mild", "bad"]  # all stopped: full's first slice only
