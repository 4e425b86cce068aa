"""FINDINGS.md's tables of what was run: the coverage table at its top and the Compute table (per model, task
and dtype, with the units an earlier protocol left in the archive marked and kept out of the protocol's total)."""

from __future__ import annotations

import json

from frankenlm.report.findings import _compute_lines, _coverage_lines
from frankenlm.study.results import Group


def _c(units, seconds, paused=0):
    return {"units": units, "seconds": seconds, "paused_units": paused}


def test_units_the_protocol_does_not_use_are_marked_and_left_out_of_its_total():
    study = {
        "dtype": "bfloat16",
        "tasks": [{"name": "lambada", "dtype": "bfloat16"}, {"name": "arc", "dtype": "float32"}],
        "compute": {
            "m": {
                "lambada": {"bfloat16": _c(10, 3600.0), "float32": _c(2, 360.0)},  # its units and fp32 re-checks
                "arc": {"float32": _c(5, 7200.0, paused=1), "bfloat16": _c(4, 1800.0)},  # bf16: an older protocol's
                "topics": {"bfloat16": _c(3, 720.0)},  # a task this protocol does not name
            }
        },
    }
    text = "\n".join(_compute_lines([study]))
    assert "| m | lambada | bfloat16 | 10 | 1.00 |" in text
    assert "| m | lambada | float32 | 2 | 0.10 |" in text
    assert "| m | arc | float32 | 5 | 2.00 |" in text
    assert "| m | arc (*unused*) | bfloat16 | 4 | 0.50 |" in text
    assert "| m | topics (*unused*) | bfloat16 | 3 | 0.20 |" in text
    assert "| m | **this protocol** | | 17 | **3.10** |" in text  # 1.00 + 0.10 + 2.00
    assert "| m | all stored units | | 24 | 3.80 |" in text
    assert "1 such units" in text


def test_a_model_with_only_used_units_has_one_total():
    study = {"dtype": "float32", "tasks": [{"name": "arc"}], "compute": {"m": {"arc": {"float32": _c(1, 36.0)}}}}
    lines = _compute_lines([study])
    assert "| m | **this protocol** | | 1 | **0.01** |" in lines
    assert not any("all stored units" in line for line in lines)
    assert _compute_lines([{"compute": {}}]) == []


def test_a_spec_task_without_results_yet_counts_for_the_protocol():
    """A task the spec names whose base has not finished its search slices has no results (so no `tasks` entry)
    but stored units: they are the protocol's, not an earlier one's."""
    study = {
        "dtype": "float32",
        "tasks": [{"name": "arc"}],
        "task_dtypes": {"arc": "float32", "hella": "float32"},
        "compute": {"m": {"arc": {"float32": _c(1, 36.0)}, "hella": {"float32": _c(2, 72.0)}}},
    }
    text = "\n".join(_compute_lines([study]))
    assert "| m | hella | float32 | 2 | 0.02 |" in text
    assert "| m | **this protocol** | | 3 | **0.03** |" in text


def test_a_task_is_begun_by_units_in_its_own_dtype_not_by_an_earlier_protocols(tmp_path):
    spec = {
        "models": ["m"],
        "dtype": "bfloat16",
        "tasks": [{"name": "lambada"}, {"name": "arc", "dtype": "float32"}, {"name": "piqa", "dtype": "float32"}],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    begun = {"models": {"m": {"tasks": {"lambada": {}, "arc": {}, "piqa": {}}}}}  # the (carried-over) manifest
    (tmp_path / "manifest.json").write_text(json.dumps(begun))
    study = {"compute": {"m": {"arc": {"float32": _c(3, 30.0)}, "piqa": {"bfloat16": _c(9, 90.0)}}}}
    lines, complete = _coverage_lines([tmp_path], [], [study])
    assert lines[0] == "| model | lambada | arc | piqa |" and not complete
    assert lines[2] == "| m | not started | in progress (the base's search slices not all run) | not started |"
    # a study.json written before the compute summary: the manifest decides
    lines, _ = _coverage_lines([tmp_path], [], [{}])
    assert lines[2] == "| m |" + " in progress (the base's search slices not all run) |" * 3


def test_a_spec_without_a_dtype_scores_its_tasks_in_the_study_specs_default(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"models": ["m"], "tasks": [{"name": "lambada"}, {"name": "arc"}]}))
    study = {"compute": {"m": {"lambada": {"bfloat16": _c(2, 20.0)}, "arc": {"float32": _c(3, 30.0)}}}}
    lines, _ = _coverage_lines([tmp_path], [], [study])  # StudySpec's default dtype is bfloat16: arc is not begun
    assert lines[2] == "| m | in progress (the base's search slices not all run) | not started |"


def test_the_coverage_names_a_model_given_by_path_as_its_results_do(tmp_path):
    """A spec may name a model by folder, .gguf file or hub id; results name it as loading does (the folder's or
    file's name, the id), and so must the coverage table, also for a folder not on this machine (it said 'not
    started' beside a finished task)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    sources = [str(folder), "/elsewhere/m.gguf", "org/hub-model", "/not/here/gone"]
    (tmp_path / "spec.json").write_text(json.dumps({"models": sources, "tasks": [{"name": "lambada"}]}))
    names = ["tiny", "m.gguf", "org/hub-model", "gone"]
    groups = [Group(n, "lambada", "bits_per_byte", False, 4, None, [], heldout_done=True) for n in names]
    lines, complete = _coverage_lines([tmp_path], groups, [{}])
    assert lines[2:6] == [f"| {n} | done |" for n in names] and complete
    lines, complete = _coverage_lines([tmp_path], groups[:3], [{}])
    assert lines[5] == "| /not/here/gone | not started |" and not complete
