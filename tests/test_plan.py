import pytest
import yaml

from frankenlm.errors import FrankenError
from frankenlm.model.mergekit import from_mergekit, to_mergekit
from frankenlm.model.plan import (
    LayerPlan,
    LayerRef,
    format_plan,
    parse_plan,
    repeat_block_plan,
    repeat_layer_plan,
    rys_plan,
)


def layers(plan):
    return [r.layer for r in plan]


def test_ranges_are_inclusive_like_exllama_layer_map():
    assert layers(parse_plan("0..15,10..29")) == list(range(16)) + list(range(10, 30))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7*3", [7, 7, 7]),
        ("10..12*2", [10, 11, 12, 10, 11, 12]),
        ("0..2, 2*2 ,3", [0, 1, 2, 2, 2, 3]),
    ],
)
def test_repeat_shorthand(text, expected):
    assert layers(parse_plan(text)) == expected


def test_source_prefix_and_sublayer_suffix():
    p = parse_plan("0..1,b:4..5,7.attn*2,3.mlp")
    assert p.refs == (
        LayerRef(0),
        LayerRef(1),
        LayerRef(4, "b"),
        LayerRef(5, "b"),
        LayerRef(7, None, "attn"),
        LayerRef(7, None, "attn"),
        LayerRef(3, None, "mlp"),
    )
    assert p.sources == [None, "b"]
    assert p.has_sublayers


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("0..15,10..29", "0..15,10..29"),
        ("0,1,2,3", "0..3"),
        ("7*3", "7*3"),
        ("0..5,5,5,6..9", "0..5,5*2,6..9"),
        ("b:0..3,b:4", "b:0..4"),
        ("3.attn,4.attn,4.mlp", "3..4.attn,4.mlp"),
        ("10..12*2", "10..12,10..12"),
    ],
)
def test_format_parse_round_trip(text, canonical):
    p = parse_plan(text)
    assert format_plan(p) == canonical
    assert parse_plan(format_plan(p)) == p


@pytest.mark.parametrize("bad", ["", "   ", "0..", "a..b", "5..2", "0..3,,4", "7*0", "3.ffn", "0-5"])
def test_malformed_text_is_refused_with_the_input_named(bad):
    with pytest.raises(FrankenError) as e:
        parse_plan(bad)
    assert "plan" in str(e.value) or "range" in str(e.value) or "repeat" in str(e.value)


def test_validate_names_out_of_range_layer_and_valid_range():
    with pytest.raises(FrankenError, match=r"layer 31 is out of range: the model has layers 0\.\.29"):
        parse_plan("0..29,31").validate({None: 30})
    with pytest.raises(FrankenError, match="source 'c'"):
        parse_plan("0..3,c:1").validate({None: 30, "b": 10})


def test_empty_plan_refused():
    with pytest.raises(FrankenError, match="empty"):
        LayerPlan(())


def test_mergekit_export_end_is_exclusive():
    doc = yaml.safe_load(to_mergekit(parse_plan("0..15,10..29"), {None: "org/base"}))
    assert doc["merge_method"] == "passthrough"
    assert [s["sources"][0]["layer_range"] for s in doc["slices"]] == [[0, 16], [10, 30]]


def test_mergekit_import_end_is_exclusive():
    text = """
slices:
  - sources:
      - model: org/base
        layer_range: [0, 16]
  - sources:
      - model: org/other
        layer_range: [8, 9]
merge_method: passthrough
"""
    plan, models = from_mergekit(text)
    assert layers(plan) == list(range(16)) + [8]
    assert plan.refs[-1].source == "b"
    assert models == {None: "org/base", "b": "org/other"}


def test_mergekit_round_trip_text_canonical_yaml():
    p = parse_plan("0..20,b:10..29,5")
    models = {None: "m0", "b": "m1"}
    back, names = from_mergekit(to_mergekit(p, models))
    assert back == p and names == models
    assert format_plan(back) == "0..20,b:10..29,5"


def test_mergekit_refuses_sublayer_plans_clearly():
    with pytest.raises(FrankenError, match="no mergekit passthrough equivalent"):
        to_mergekit(parse_plan("0..5,3.attn"), {None: "m"})


@pytest.mark.parametrize(
    "bad", ["slices: [{sources: [{model: m, layer_range: [4, 4]}]}]", "merge_method: slerp\nslices: []", "- 1"]
)
def test_mergekit_bad_input(bad):
    with pytest.raises(FrankenError):
        from_mergekit(bad)


def test_rys_pairs_run_prefix_then_suffix():
    # (i, j): layers 0..j-1 then i..N-1
    assert layers(rys_plan(3, 6, 8)) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7]
    assert rys_plan(3, 6, 8) == repeat_block_plan(3, 5, 8)
    with pytest.raises(FrankenError):
        rys_plan(0, 9, 8)


def test_repeat_layer_and_block_helpers():
    assert layers(repeat_layer_plan(2, 5, extra=2)) == [0, 1, 2, 2, 2, 3, 4]
    assert [r.sublayer for r in repeat_layer_plan(2, 4, extra=1, sublayer="mlp")] == ["block"] * 3 + ["mlp", "block"]
    assert layers(repeat_block_plan(1, 2, 4)) == [0, 1, 2, 1, 2, 3]


# ----------------------------------------------------------------------------------- healed repeats (#11)


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("7@0.5", "7@0.5"),
        ("7@0.5/0.2", "7@0.5/0.2"),
        ("7@0.5/0.5", "7@0.5"),
        ("7.attn@0.5,7.mlp@0.2", "7.attn@0.5,7.mlp@0.2"),
        ("10..12@0.7", "10..12@0.7"),
        ("10..12*2@0.7", "10..12@0.7,10..12@0.7"),
        ("10@0.7,11@0.7,12@0.7", "10..12@0.7"),
        ("10@0.7,11@0.6", "10@0.7,11@0.6"),
        ("7^0.5", "7^0.5"),
        ("7@0.7^0.5", "7@0.7^0.5"),
        ("b:3..5.attn*2@0.25^2", "b:3..5.attn@0.25^2,b:3..5.attn@0.25^2"),
        ("7*3@0.5", "7*3@0.5"),
        ("0..11,12~3,13..29", "0..11,12~3,13..29"),
        ("12~3,12~3", "12~3,12~3"),
        ("12~2^0.5", "12~2^0.5"),
        ("3.attn~2,3.mlp~4", "3.attn~2,3.mlp~4"),
        ("12*2@0.5", "12~2"),
        ("12*4@0.5", "12~2,12~2"),
        ("12*3@0.5", "12*3@0.5"),
        ("12~1", "12"),
        ("7@1", "7"),
        ("7@1/1^1", "7"),
        ("7@0", "7@0"),
        ("7@1.5e-7", "7@1.5e-07"),
        ("7@0.1234567", "7@0.1234567"),
    ],
)
def test_scaled_plans_round_trip(text, canonical):
    p = parse_plan(text)
    assert format_plan(p) == canonical
    assert parse_plan(format_plan(p)) == p


def test_scale_fields_and_sub_steps_expand():
    p = parse_plan("7@0.5/0.2^0.9,8.attn@0.3,9.mlp@0.4,12~3")
    assert p.refs[:3] == (
        LayerRef(7, None, "block", 0.5, 0.2, 0.9),
        LayerRef(8, None, "attn", attn_scale=0.3),
        LayerRef(9, None, "mlp", mlp_scale=0.4),
    )
    assert p.refs[3:] == (LayerRef(12, attn_scale=1 / 3, mlp_scale=1 / 3),) * 3
    assert all(r.is_scaled for r in p) and p.has_scales
    assert not parse_plan("0..5,5*2").has_scales


def test_unscaled_refs_equal_plain_refs_and_plain_plans_print_as_before():
    assert LayerRef(7, None, "block", 1, 1.0, 1) == LayerRef(7)
    assert hash(LayerRef(7, "b", "attn", attn_scale=1.0)) == hash(LayerRef(7, "b", "attn"))
    assert not LayerRef(7).is_scaled and LayerRef(7, qk_scale=2).plain == LayerRef(7)
    for text in ["0..15,10..29", "0..5,5*2,6..9", "3..4.attn,4.mlp", "0..14,b:15..29", "0..20,20.mlp*2,21..29"]:
        assert format_plan(parse_plan(text)) == text


def test_programmatic_scales_survive_text_round_trip():
    """Numbers that 6 significant digits would not read back print exactly (store keys re-parse to the plan)."""
    p = LayerPlan((LayerRef(0), LayerRef(1, attn_scale=1 / 3, mlp_scale=1 / 3), LayerRef(2, qk_scale=2 / 3)))
    assert parse_plan(format_plan(p)) == p


@pytest.mark.parametrize(
    "bad, words",
    [
        ("7@-1", "must be >= 0"),
        ("7@-0.5/1", "must be >= 0"),
        ("7@inf", "not finite"),
        ("7@nan", "not finite"),
        ("7@1/inf", "not finite"),
        ("7@abc", "not a number"),
        ("7^0", "must be > 0"),
        ("7^-1", "must be > 0"),
        ("7~0", "sub-step count"),
        ("7.mlp@0.5/0.2", "no attention branch"),
        ("7.mlp^0.5", "no attention"),
        ("7.attn@0.5/0.2", "no MLP branch"),
        ("10..12~2", "sub-steps apply to one layer"),
        ("7~2@0.5", "drop the '@'"),
        ("7@", "cannot parse"),
        ("7@0.5/", "cannot parse"),
        ("7~2*3", "cannot parse"),
    ],
)
def test_bad_scales_are_one_clear_error_naming_the_item(bad, words):
    with pytest.raises(FrankenError, match=words) as e:
        parse_plan(f"0..5,{bad},6")
    assert repr(bad) in str(e.value) or bad in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"attn_scale": -1}, {"mlp_scale": float("nan")}, {"qk_scale": 0}, {"attn_scale": "0.5"}, {"mlp_scale": True}],
)
def test_layer_ref_validates_scales(kwargs):
    with pytest.raises(FrankenError):
        LayerRef(3, **kwargs)


def test_mergekit_scales_become_filters_for_llama_and_are_refused_for_gemma3():
    doc = yaml.safe_load(to_mergekit(parse_plan("0..5,3@0.5/0.2,4..5"), {None: "m"}, model_type="llama"))
    scaled = doc["slices"][1]["sources"][0]
    assert scaled["layer_range"] == [3, 4]
    assert scaled["parameters"]["scale"] == [
        {"filter": "self_attn.o_proj", "value": 0.5},
        {"filter": "mlp.down_proj", "value": 0.2},
    ]
    assert from_mergekit(yaml.safe_dump(doc))[0] == parse_plan("0..5,3@0.5/0.2,4..5")
    with pytest.raises(FrankenError, match="no mergekit equivalent for gemma3"):
        to_mergekit(parse_plan("0..5,3@0.5"), {None: "m"}, model_type="gemma3")
