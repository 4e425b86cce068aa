"""The plain answers at the top of FINDINGS.md, checked against counts done by hand on a small set of rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from frankenlm.report.findings import (
    _answers_lines,
    _both_stages,
    _flop_lines,
    _proxy_lines,
    _repeats_lines,
    _size_lines,
    _verdict,
)
from frankenlm.study.results import NAN, Group, ResultRow

DEPTH = 10


def _row(task, config, design, gain, lo, hi, sig, **kw) -> ResultRow:
    metric = "acc_norm" if task == "arc_easy" else "bits_per_byte"
    return ResultRow(
        model="m",
        depth=DEPTH,
        config=config,
        design=design,
        task=task,
        metric=metric,
        higher_is_better=metric == "acc_norm",
        base_value=0.5 if metric == "acc_norm" else 1.5,
        gain=gain,
        ci_low=lo,
        ci_high=hi,
        significant=sig,
        p_holm=0.01 if sig else 0.5,
        **kw,
    )


def _groups() -> list[Group]:
    t = "lambada_passages"
    base = _row(t, "0..9", "base", 0.0, 0.0, 0.0, False)
    bpb = [
        _row(t, "0,0,1..9", "repeat-layer", -0.1, -0.12, -0.08, True, layer=0, repeats=1),  # worse
        _row(t, "0,0,0,1..9", "repeat-layer", -0.3, -0.35, -0.25, True, layer=0, repeats=2),
        _row(t, "0..4,4,5..9", "repeat-layer", -0.01, -0.03, 0.01, False, layer=4, repeats=1),
        _row(t, "0..4,4,4,5..9", "repeat-layer", -0.005, -0.02, 0.01, False, layer=4, repeats=2),  # the curve rises
        _row(  # the first layer's attention, better and confirmed on held-out items
            t,
            "0,0.attn,1..9",
            *("sublayer", 0.002, 0.001, 0.003, True),
            layer=0,
            sublayer="attn",
            repeats=1,
            heldout_gain=0.002,
            heldout_ci_low=0.001,
            heldout_ci_high=0.004,
        ),
        _row(t, "0..4,4@0.5,5..9", "damped", 0.003, 0.001, 0.005, True),  # better, not re-measured
    ]
    a = "arc_easy"
    acc = [
        _row(a, "0,0,1..9", "repeat-layer", -0.05, -0.08, -0.02, True, layer=0, repeats=1),
        _row(a, "0..4,4,5..9", "repeat-layer", 0.02, -0.01, 0.05, False, layer=4, repeats=1),
        _row(a, "0,0.attn,1..9", "sublayer", -0.01, -0.03, 0.01, False, layer=0, sublayer="attn", repeats=1),
        _row(
            a,
            "0..4,4,4,5..9",
            *("repeat-layer", 0.03, 0.0, 0.06, False),
            layer=4,
            repeats=2,
            heldout_gain=-0.01,
            heldout_ci_low=-0.03,
            heldout_ci_high=0.01,
        ),
    ]
    return [
        Group("m", t, "bits_per_byte", False, DEPTH, base, bpb),
        Group("m", a, "acc_norm", True, DEPTH, _row(a, "0..9", "base", 0.0, 0.0, 0.0, False), acc),
    ]


def test_each_answer_counts_what_the_rows_hold():
    text = "\n".join(_answers_lines(_groups(), [], {}))
    # help: the one confirmed gain with its share of the base; no benchmark gain, the candidate re-measured
    assert (
        "on bits per byte: yes in 1 of 1 model × task finished: m · lambada_passages `0,0.attn,1..9` "
        "+2.00 [+1.00, +3.00] milli-bits_per_byte (0.13% of the base's 1.5), held-out +2.00 [+1.00, +4.00]"
    ) in text
    assert "on benchmark accuracy: no by the pre-registered rule, in all 1 model × task finished (m · arc_easy)" in text
    assert "held-out items alone" not in text  # no row is significant on held-out items
    assert (  # of the positive rows, the one with the smallest search Holm p (a tie at 0.5: the larger gain)
        "the closest on search (smallest Holm p), m · arc_easy `0..4,4,4,5..9` +3.00 [+0.00, +6.00] acc_norm points "
        "on search (Holm p 0.500), re-measured -1.00 [-3.00, +1.00] on held-out items."
    ) in text
    assert (
        "of the 2 configurations better on search anywhere, 1 is a healed repeat (damped or sub-stepped); "
        "1 repeats layers at full strength."
    ) in text
    # layers: whole single layers (0 and 4 on both tasks), verdicts counted
    assert "a whole layer repeated once: 4 measured, 2 worse, 0 better, 2 without a significant difference" in text
    assert "m · lambada_passages: the least harmful single layer is 4 (depth 0.40)" in text
    # a single layer with a positive estimate is the best one, not the least harmful
    assert "m · arc_easy: the best single layer is 4 (depth 0.40): +2.00 [-1.00, +5.00]" in text
    assert "attention only, repeated once: 2 measured, 0 worse, 1 better, 1 without" in text
    assert "1 confirmed on held-out items (`0,0.attn,1..9` (m · lambada_passages))" in text
    # repeat curves: layers 0 and 4 on bits per byte, layer 4 on ARC (layer 0 has one point there); both
    # curves of layer 4 rise at r = 2
    assert "over 3 layer curves (r = 1 to 2 extra copies): the best count is r = 1 in 1" in text
    assert (
        "falls with every extra copy in 1; a single extra copy is itself significantly worse than the base in 1" in text
    )
    # proxy: of the 4 configurations both measured in full, bits per byte ranks 0.attn first; rho by hand:
    # ranks (1,1) (2,3) (4,2) (3,4), sum d^2 = 6, rho = 1 - 6*6/(4*15) = 0.4
    assert (
        "over the 4 configurations both measured in full: lambada_passages ranks `0,0.attn,1..9` first, which "
        "scores -1.00 [-3.00, +1.00] acc_norm points on arc_easy (no significant difference)"
    ) in text
    assert "arc_easy's own first is `0..4,4,4,5..9` +3.00 [+0.00, +6.00]; Spearman rho +0.40" in text
    # shrinkage from search to held-out, per kind
    assert "accuracy: the 1 configuration re-measured on held-out items averages +3.00 acc_norm points" in text
    assert "on search and -1.00 on held-out items (shrinkage +4.00)" in text
    # size needs two models
    assert "needs two or more models measured on one task" in text


SIZES = {"m": 100_000_000, "m2": 50_000_000}


def _with_m2(row: ResultRow) -> list[Group]:
    """The fixture model `m` on LAMBADA beside a smaller model `m2` measured only on `row`."""
    return [
        _groups()[0],
        Group("m2", "lambada_passages", "bits_per_byte", False, DEPTH, None, [replace(row, model="m2")]),
    ]


def _size_answer_with_m2(row: ResultRow) -> str:
    return "\n".join(_answers_lines(_with_m2(row), [], SIZES))


def test_the_size_answer_orders_models_by_parameters():
    text = _size_answer_with_m2(
        _row("lambada_passages", "0,0,1..9", "repeat-layer", -0.2, -0.25, -0.15, True, layer=0, repeats=1)
    )
    # m: 2 of 6 worse, single layers -0.1 and -0.01 (median -0.055), best full-budget gain the damped +0.003
    assert (
        "lambada_passages (milli-bits_per_byte), smallest first: m2 100% worse, median single layer -200.00, best "
        "-200.00; m 33% worse, median single layer -55.00, best +3.00."
    ) in text


def test_a_better_row_outside_the_held_out_check_is_pending_only_until_the_check_ran():
    bpb, acc = _groups()
    damped = next(r for r in bpb.rows if r.design == "damped")  # better on search, not re-measured
    assert _verdict(damped, bpb) == "better on search, not among those re-measured"  # 0.attn was re-measured
    before = Group("m", bpb.task, bpb.metric, False, DEPTH, bpb.base, [damped])  # no held-out check yet
    assert _verdict(damped, before) == "better on search, not yet re-measured"
    confirmed = next(r for r in bpb.rows if r.confirmed)
    assert _verdict(confirmed, bpb) == "**better, confirmed on held-out**"


def test_the_flop_front_gives_each_point_its_ci_and_verdict():
    bpb, _ = _groups()
    ratio = {"0,0.attn,1..9": 1.01, "0..4,4@0.5,5..9": 1.10, "0..4,4,5..9": 1.05, "0,0,1..9": 1.1}
    rows = [replace(r, flops_ratio=ratio.get(r.config, 1.2)) for r in bpb.rows]
    g = Group("m", bpb.task, bpb.metric, False, DEPTH, bpb.base, rows)
    text = "\n".join(_flop_lines([g]))
    # 0.attn (+2 at 1%) then the damped repeat (+3 at 10%); the worse or weaker rows are dominated
    assert (
        "m · lambada_passages Pareto front (milli-bits_per_byte): `0,0.attn,1..9` +2.00 [+1.00, +3.00] "
        "(**better, confirmed on held-out**) at +1.0% FLOPs; `0..4,4@0.5,5..9` +3.00 [+1.00, +5.00] "
        "(better on search, not among those re-measured) at +10.0% FLOPs"
    ) in text
    assert "only a confirmed one is a gain" in text
    worse = [replace(r, flops_ratio=1.1) for r in rows if r.gain < 0]
    assert "no configuration beats the base" in "\n".join(_flop_lines([replace(g, rows=worse)]))


def test_the_size_answer_says_so_when_a_model_has_no_single_layer_scan():
    # a confirmation task measures only selected configurations: no median of single layers to print (was "+nan")
    selected = _row("lambada_passages", "0..2,2@0.25,3..9", "selected", 0.001, -0.001, 0.003, False)
    text = _size_answer_with_m2(selected)
    assert "m2 0% worse, no single-layer scan, best +1.00; m 33% worse, median single layer -55.00" in text
    assert "nan" not in text
    # the per-model size section says the same (it printed "median single-layer repeat +nan")
    lines = "\n".join(_size_lines(_with_m2(selected), SIZES))
    assert "m2 (50M parameters, 10 layers): 0 of 1 configuration worse, 0 better; no single-layer scan" in lines
    assert "median single-layer repeat -55.00" in lines
    assert "nan" not in lines


def test_the_proxy_line_says_not_ranked_when_too_few_configurations_are_shared():
    bpb, acc = _groups()
    assert "lambada_passages vs arc_easy: Spearman rho +0.40 (p " in "\n".join(_proxy_lines([bpb, acc]))
    started = Group("m", "pydoc_passages", "bits_per_byte", False, DEPTH, bpb.base, bpb.rows[:2])  # 0,0 and 0,0,0
    lines = _proxy_lines([started, acc])
    assert lines[0] == (
        "- m: pydoc_passages vs arc_easy: not ranked yet, 1 configuration both measured on the full search "
        "budget (a rank correlation needs 3)"
    )
    assert "nan" not in "\n".join(lines)


def test_the_ceiling_waits_for_a_configuration_measured_in_full():
    from frankenlm.report.findings import _ceiling_lines

    c = {"search_base_wrong": 621, "search_items": 1000, "configurations": 0, "search_fixed_by_some": 0}
    line = _ceiling_lines([{"ceiling": {"m": {"hellaswag": c}}}])[0]
    assert (
        line
        == "- m · hellaswag: the base gets 621 of 1000 search items wrong; no configuration is measured on the full search budget yet."
    )
    c |= {"configurations": 1, "search_fixed_by_some": 31}
    line = _ceiling_lines([{"ceiling": {"m": {"hellaswag": c}}}])[0]
    assert "some one of 1 configuration gets 31 of them right (5%)" in line


def test_a_partly_measured_row_is_stopped_early_only_once_the_task_is_done():
    bpb, acc = _groups()
    base = replace(acc.base, n_items=1000)
    partial = replace(acc.rows[1], stopped_early=True, n_items=125)  # fewer than all search items
    done = Group("m", acc.task, acc.metric, True, DEPTH, base, [partial, acc.rows[3]])  # layer 4 x2 re-measured
    assert _verdict(partial, done) == "no significant difference (stopped early)"
    running = Group("m", acc.task, acc.metric, True, DEPTH, base, [partial])  # no held-out check yet
    assert _verdict(partial, running) == "no significant difference (so far on 125 of 1,000 search items)"
    assert _verdict(acc.rows[2], running) == "no significant difference"  # measured in full: nothing added
    curve = Group("m", acc.task, acc.metric, True, DEPTH, base, [partial, replace(acc.rows[3], heldout_gain=NAN)])
    star = "* = not on all search items yet"
    assert _repeats_lines(curve) == [f"  - layer 4: r=1: +2.00*, r=2: +3.00 (best r=2; acc_norm points; {star})"]


def test_a_gain_significant_on_held_out_items_alone_is_reported_beside_the_confirmed_ones(tmp_path):
    """A configuration not Holm-significant on search but Holm-significant across the re-measured family on
    held-out items: not confirmed, named with both stages' numbers in the answer, the verdicts and the 'does
    any configuration help' section, and listed for the showcase after the confirmed ones."""
    from frankenlm.report.findings import findings_markdown
    from frankenlm.study.analysis import adjust_pvalues

    bpb, acc = _groups()
    held = replace(acc.rows[1], p_value=0.2, heldout_gain=0.033, heldout_ci_low=0.02, heldout_ci_high=0.046,
                   heldout_p=1e-6, export_command="frankenlm export --plan '0..4,4,5..9'")  # fmt: skip
    other = replace(acc.rows[3], p_value=0.3, heldout_p=0.4)
    rows = adjust_pvalues([acc.base, acc.rows[0], held, acc.rows[2], other], heldout_family=2)
    g = replace(acc, rows=rows[1:])
    r = next(x for x in g.rows if x.config == "0..4,4,5..9")
    assert r.heldout_better and not r.confirmed and r.heldout_p_holm == 2e-6  # Holm over 2: 2 x 1e-6
    assert _verdict(r, g) == "no significant difference on search; **better on held-out items** (Holm p 2.0e-06)"
    text = "\n".join(_answers_lines([bpb, g], [], {}))
    stages = (
        "m · arc_easy `0..4,4,5..9` held-out +3.30 [+2.00, +4.60] acc_norm points (Holm p 2.0e-06 across the 2 "
        "configurations re-measured), search +2.00 [-1.00, +5.00] (Holm p 0.400 across 4 configurations)"
    )  # search Holm by hand over the 2 finite p-values: 2 x 0.2 = 0.4, then max(0.4, 0.3)
    assert "on benchmark accuracy: no by the pre-registered rule" in text
    # while the held-out check still runs (2 of its 3 re-measured), the p-value is quoted against the family it
    # was adjusted over, the test not made yet counted as p = 1: Holm over 3, 3 x 1e-6
    running = adjust_pvalues([acc.base, acc.rows[0], held, acc.rows[2], other], heldout_family=3)
    g3 = replace(acc, rows=running[1:], heldout_done=False, heldout_k=3)
    r3 = next(x for x in g3.rows if x.config == r.config)
    assert (
        "(Holm p 3.0e-06 across the 3 configurations the held-out check re-measures, 2 so far, the rest as p = 1)"
        in _both_stages(g3, r3)
    )
    assert (
        "    - but significant on held-out items alone (selected on search, then Holm across the task's re-measured "
        f"configurations), 1 configuration: {stages}. Not confirmed"
    ) in text
    # 2 held-out tests with a p-value in the document (the two on ARC): 2 x 1e-6 < 0.05 survives Bonferroni
    assert "counts it as a held-out gain. Bonferroni over all 2 held-out tests in this document keeps it." in text
    # a task's Holm passes (2 x 0.02 = 0.04) but Bonferroni over the document's 3 held-out tests does not (0.06)
    weak = adjust_pvalues([acc.base, replace(held, heldout_p=0.02), other])[1:]
    lam = replace(bpb, rows=[replace(r, heldout_p=0.3) if r.remeasured else r for r in bpb.rows])
    text = "\n".join(_answers_lines([lam, replace(acc, rows=weak)], [], {}))
    assert weak[0].heldout_better and "Bonferroni over all 3 held-out tests in this document does not keep it." in text
    run = tmp_path / "run"
    from frankenlm.study.results import write_csv

    run.mkdir()
    write_csv([bpb.base, *bpb.rows, acc.base, *g.rows], run / "results.csv")
    (run / "study.json").write_text("{}")
    doc = findings_markdown([run])
    help_ = doc.split("## Does any configuration help?")[1].split("## Per model")[0]
    # with what the configuration does on the model's other task (LAMBADA: -10.00, no significant difference)
    assert (
        f"- {stages}; export: `frankenlm export --plan '0..4,4,5..9'`; on the model's other tasks: "
        "lambada_passages -10.00 [-30.00, +10.00] milli-bits_per_byte (no significant difference)"
    ) in help_
    assert "## The configurations that help on held-out items, exported and generating" in help_
    # the showcase names the confirmed row first, then the held-out-alone one
    assert help_.index("- m · lambada_passages · `0,0.attn,1..9`: not showcased yet") < help_.index(
        "- m · arc_easy · `0..4,4,5..9`: not showcased yet"
    )
    assert "1 better on held-out items alone" in doc.split("## Per model and task")[1].split("##")[1]
    from frankenlm.cli.showcase import showcased

    assert [c[1:] for c in showcased([run])] == [
        ("m", "lambada_passages", "0,0.attn,1..9"),
        ("m", "arc_easy", "0..4,4,5..9"),
    ]


def _block(i, j, gain, lo, hi, sig, **kw) -> ResultRow:
    plan = f"0..{j},{i}..9"  # layers i..j run twice
    return _row("lambada_passages", plan, "repeat-block", gain, lo, hi, sig, i=i, j=j, repeats=1, **kw)


def test_the_block_scan_line_counts_verdicts_and_names_the_best_and_the_worst(tmp_path):
    """One line per scanned model x task: the verdict counts, racing's stops, the best block on the full search
    budget (with its held-out re-measure), the worst block, and the block-length sentence, all counted here by
    hand; a task that measured fewer blocks than a scan gets no line and no heatmap."""
    from frankenlm.report import figures as F
    from frankenlm.report.findings import _blocks_line

    bpb, _ = _groups()
    rows = [
        _block(0, 1, -0.2, -0.25, -0.15, True),  # length 2, worse
        _block(0, 3, -0.5, -0.6, -0.4, True),  # length 4, worse
        _block(2, 3, -0.01, -0.03, 0.01, False),  # length 2, no significant difference
        _block(4, 7, 0.003, 0.001, 0.005, True, heldout_gain=0.002, heldout_ci_low=0.001, heldout_ci_high=0.004),
        _block(2, 5, -0.9, -1.2, -0.6, True, stopped_early=True, n_items=100),  # length 4, worse on a slice
    ]
    g = replace(bpb, rows=rows)
    assert _blocks_line(g) == (
        "- m · lambada_passages (milli-bits_per_byte): 5 blocks (3 worse, 1 better, 1 without a significant "
        "difference; racing stopped 1 early, on a slice of the search items); best on search `4..7` (depth "
        "0.40–0.70) +3.00 [+1.00, +5.00] (**better, confirmed on held-out**, held-out +2.00 [+1.00, +4.00]); worst "
        "`2..5` (depth 0.20–0.50) -900.00 [-1200.00, -600.00] (worse). Among repeated blocks, no block length makes "
        "every block significantly worse (the share of significantly worse blocks is 50% at length 2 and 67% at "
        "length 4)."
    )  # the stopped block is the worst but cannot be the best: best is taken on the full search budget
    assert _blocks_line(replace(bpb, rows=rows[:2])) is None  # two blocks: not a scan
    # the heatmap marks a held-out-alone cell apart from the confirmed one
    held = replace(rows[2], heldout_gain=0.004, heldout_ci_low=0.002, heldout_ci_high=0.006, heldout_p_holm=0.01)
    fig = F.fig_heatmap(replace(g, rows=[*rows[:2], held, *rows[3:]]))
    marked = [c for c in fig.axes[0].collections if c.get_gid() == "heldout-alone"]
    starts, ends = [0, 2, 4], [1, 3, 5, 7]
    assert len(marked) == 1 and marked[0].get_offsets().tolist() == [[ends.index(3), starts.index(2)]]
    assert "better on held-out alone" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert not [c for c in F.fig_heatmap(g).axes[0].collections if c.get_gid() == "heldout-alone"]
    # in the document: the section with the line and its heatmap, drawn beside it
    from frankenlm.report.findings import findings_markdown
    from frankenlm.study.results import write_csv

    run = tmp_path / "run"
    run.mkdir()
    write_csv([bpb.base, *rows], run / "results.csv")
    (run / "study.json").write_text("{}")
    doc = findings_markdown([run], fig_dir=tmp_path / "figs")
    section = doc.split("## Repeated blocks (the strided (i, j) scan)")[1].split("\n## ")[0]
    assert _blocks_line(g) in section
    assert "![block scan, m · lambada_passages](findings/blocks-m-lambada_passages.png)" in section
    assert (tmp_path / "figs" / "blocks-m-lambada_passages.png").stat().st_size > 0


def test_the_winners_curse_figure_plots_each_re_measured_configuration_search_against_held_out():
    """One point per re-measured row at (scale x search gain, scale x held-out gain), a gold ring on the confirmed
    one, and the count below the diagonal in each panel's title, all checked against the rows."""
    from matplotlib.colors import to_rgba

    from frankenlm.report import figures as F

    bpb, acc = _groups()
    fig = F.fig_curse([("bits per byte", 1000.0, "milli-bpb", [bpb]), ("accuracy", 100.0, "points", [acc])])
    (a1, a2) = fig.axes
    assert a1.get_title() == "bits per byte: 0 of 1 below the diagonal"  # attn row: +2.00 on both stages
    assert a2.get_title() == "accuracy: 1 of 1 below the diagonal"  # layer 4 x2: +3.00 on search, -1.00 held-out
    points = [c.get_offsets().tolist() for c in a2.collections if len(c.get_offsets()) == 1]
    assert [[3.0, -1.0]] in points
    rings = [c for c in a1.collections if c.get_gid() in ("confirmed", "heldout-alone")]
    assert [c.get_gid() for c in rings] == ["confirmed"] and np.allclose(rings[0].get_offsets(), [[2.0, 2.0]])
    assert np.allclose(rings[0].get_edgecolors()[0], to_rgba("#f0a000"))
    assert not [c for c in a2.collections if c.get_gid() in ("confirmed", "heldout-alone")]
    held = replace(acc.rows[3], heldout_gain=0.04, heldout_ci_low=0.01, heldout_ci_high=0.07, heldout_p_holm=0.01)
    (ax,) = F.fig_curse([("accuracy", 100.0, "points", [replace(acc, rows=[*acc.rows[:3], held])])]).axes
    rings = [c for c in ax.collections if c.get_gid() in ("confirmed", "heldout-alone")]
    assert [c.get_gid() for c in rings] == ["heldout-alone"] and np.allclose(rings[0].get_offsets(), [[3.0, 4.0]])
    assert ax.get_title() == "accuracy: 0 of 1 below the diagonal"
    assert F.fig_curse([("bits per byte", 1000.0, "milli-bpb", [replace(bpb, rows=bpb.rows[:2])])]) is None


def test_the_swept_benchmarks_picks_are_followed_onto_the_other_benchmarks():
    bpb, acc = _groups()

    def piqa_row(config, gain, lo, hi, sig):
        return replace(_row("arc_easy", config, "selected", gain, lo, hi, sig), task="piqa")

    piqa = Group(
        "m",
        "piqa",
        "acc_norm",
        True,
        DEPTH,
        replace(acc.base, task="piqa"),
        [piqa_row("0..4,4,4,5..9", -0.04, -0.06, -0.02, True), piqa_row("0,0,1..9", 0.01, -0.01, 0.03, False)],
    )
    text = "\n".join(_answers_lines([bpb, acc, piqa], [], {}))
    # ARC-Easy (4 configurations against PIQA's 2) is the swept benchmark; its one re-measured pick is worse on PIQA
    answer = text.split("- **Does what one benchmark selects carry to the others?**\n", 1)[1]
    assert answer.startswith(
        "  - m: the configuration arc_easy selects first, `0..4,4,4,5..9`, scores -4.00 [-6.00, -2.00] acc_norm "
        "points on piqa (worse); of its 1 selected, 1 measured on piqa: 1 worse, 0 better, 0 without a significant "
        "difference.\n"
    )
    assert "the configuration piqa selects first" not in text  # PIQA selects nothing for the others
    # the bits-per-byte answer keeps to bits per byte's picks (LAMBADA's re-measured pick is not on PIQA)
    proxy = text.split("- **Does bits per byte pick what the benchmarks pick?**\n", 1)[1].split("- **Does what", 1)[0]
    assert "arc_easy selects first" not in proxy and "on piqa" not in proxy
    lines = "\n".join(_proxy_lines([bpb, acc, piqa]))
    assert "The configurations the swept benchmark selected" in lines
    assert (
        "- m: arc_easy's #1 `0..4,4,4,5..9` (+3.00 [+0.00, +6.00] acc_norm points, held-out -1.00 [-3.00, +1.00]) on "
        "piqa: -4.00 [-6.00, -2.00] acc_norm points"
    ) in lines
    # one benchmark alone selects nothing for another
    assert "needs the swept benchmark's picks on another." in "\n".join(_answers_lines([bpb, acc], [], {}))
