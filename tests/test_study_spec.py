"""Study specs and run directories: every refusal is one line and exit status 2, and nothing is written
(no run directory, no spec.json, no store) before the spec, the store and the designs' arguments check out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from frankenlm.cli.app import app
from frankenlm.errors import FrankenError
from frankenlm.study.spec import StudySpec, preset

runner = CliRunner()


def study(*args: str):
    r = runner.invoke(app, ["study", *args], catch_exceptions=False)
    return r.exit_code, r.output  # stdout and stderr together


def refused(out_dir: Path, *args: str, fragment: str) -> None:
    code, out = study("--out", str(out_dir), *args)
    assert code == 2, out
    assert "Traceback" not in out and out.startswith("error:") and len(out.strip().splitlines()) == 1, out
    assert fragment in " ".join(out.split()), (fragment, out)


def good_spec() -> dict:
    return json.loads(preset("full-scan").to_json())


HOSTILE = [
    ("not json {", "is not JSON"),
    ("[1, 2]", "the spec must be a JSON object"),
    ({"preset": "x", "models": ["smollm2-135m"], "tasks": [], "designs": []}, "tasks must list at least one"),
    ({"extra_key": 1}, "unknown key 'extra_key'"),
    ({"slices": 0}, "slices must be a positive integer, got 0"),
    ({"slices": "8"}, "slices must be a positive integer, got '8'"),
    ({"heldout_top_k": -1}, "heldout_top_k must be a positive integer"),
    ({"context_length": 1.5}, "context_length must be an integer >= 2"),
    ({"dtype": "float8"}, "dtype 'float8' is not one of"),
    ({"models": "smollm2-135m"}, "models must be a non-empty list"),
    ({"batch_size": 0}, "batch size must be a positive integer"),
    ({"order": "random"}, "order 'random' is not one of models, tasks"),
    ({"early_stopping": {"level": 1.5}}, "early_stopping.level must be a confidence level"),
    ({"early_stopping": {"lvl": 0.9}}, "early_stopping: unknown key 'lvl'"),
    ({"tasks": [{"name": "lambada_passages", "search_tokens": -5}]}, "search_tokens must be a positive integer"),
    ({"tasks": [{"name": "no_such_task", "search_tokens": 5}]}, "unknown task 'no_such_task'"),
    ({"tasks": [{"name": "lambada_passages", "tokens": 5}]}, "tasks[0]: unknown key 'tokens'"),
    ({"tasks": "lambada_passages"}, "tasks must be a list"),
    (
        {"tasks": [{"name": "lambada_passages", "search_tokens": 5, "dtype": "fp32"}]},
        "task lambada_passages: dtype 'fp32' is not one of",
    ),
    ({"designs": [{"name": "repeat-blokc", "args": {}}]}, "unknown design 'repeat-blokc'"),
    ({"designs": [{"name": "repeat-block", "args": {"strid": 2}}]}, "unknown argument 'strid'"),
    ({"designs": [{"name": "repeat-block", "args": []}]}, "args must be an object"),
    ({"designs": [{"name": "search", "args": {"steps": 0}}]}, "steps must be an integer >= 1"),
    ({"designs": [{"name": "damped", "args": {"from": "repeat-layer"}}]}, "must name a design listed before it"),
    ({"designs": [{"name": "repeat-layer", "args": {"layers": [40]}}]}, "layer 40 is out of range"),
    ({"designs": [{"name": "repeat-block", "args": {"stride": -1}}]}, "block stride must be an integer >= 1"),
    ({"designs": [{"name": "selected", "args": {"from_task": "piqa"}}]}, "from_task 'piqa' is not a task of the study"),
    ({"designs": [{"name": "selected", "args": {}}]}, "from_task must name a task of the study, got None"),
    ({"designs": [{"name": "selected", "args": {"from_task": "lambada_passages", "top": 0}}]}, "top must be an"),
    ({"designs": [{"name": "selected", "args": {"from": "repeat-layer"}}]}, "unknown argument 'from'"),
    ({"designs": [{"name": "repeat-block", "tasks": ["piqa"]}]}, "design repeat-block: tasks must list tasks of the"),
    ({"designs": [{"name": "repeat-block", "tasks": []}]}, "design repeat-block: tasks must list tasks of the"),
]


@pytest.mark.parametrize("change,fragment", HOSTILE, ids=[f for _, f in HOSTILE])
def test_hostile_spec_files_are_refused_before_anything_is_written(tmp_path, change, fragment):
    f = tmp_path / "spec.json"
    if isinstance(change, str):
        f.write_text(change)
    elif isinstance(change, list) or "preset" in change:
        f.write_text(json.dumps(change))
    else:
        f.write_text(json.dumps({**good_spec(), **change}))
    out = tmp_path / "run"
    refused(out, "--spec", str(f), fragment=fragment)
    assert not out.exists(), "a refused study wrote its run directory"


def test_a_spec_without_early_stopping_races_with_the_default_rule():
    """A key left out takes its default, racing included (it once turned racing off: a findings run of 2,300
    units ran every configuration on every slice); null turns racing off; {} is the default rule."""
    from frankenlm.study.spec import EarlyStopping

    d = good_spec()
    del d["early_stopping"]
    assert StudySpec.from_json(json.dumps(d)).early_stopping == EarlyStopping()
    assert StudySpec.from_json(json.dumps({**d, "early_stopping": {}})).early_stopping == EarlyStopping()
    assert StudySpec.from_json(json.dumps({**d, "early_stopping": None})).early_stopping is None
    level = StudySpec.from_json(json.dumps({**d, "early_stopping": {"level": 0.95}})).early_stopping
    assert level == EarlyStopping(level=0.95)
    off = preset("full-scan")
    off.early_stopping = None
    assert StudySpec.from_json(off.to_json()).early_stopping is None


def test_spec_is_validated_when_loaded_and_presets_are_valid():
    for name in ("quick", "standard", "sizes", "full-scan"):
        spec = preset(name)
        assert StudySpec.from_json(spec.to_json()).to_json() == spec.to_json()
    with pytest.raises(FrankenError, match="my.json: designs\\[0\\]: missing key 'name'"):
        StudySpec.from_json(json.dumps({**good_spec(), "designs": [{"args": {}}]}), source="my.json")


def test_a_corrupt_store_is_one_line(tmp_path):
    bad = tmp_path / "store.sqlite"
    bad.write_text("this is a text file, not SQLite\n" * 100)
    out = tmp_path / "run"
    refused(out, "--store", str(bad), "--preset", "full-scan", fragment="cannot be used")
    assert not out.exists()
    assert bad.read_text().startswith("this is a text file")


def test_threads_must_be_positive(tmp_path):
    refused(tmp_path / "run", "--threads", "0", fragment="--threads 0")
    refused(tmp_path / "run", "--threads", "-2", fragment="--threads -2")
    refused(tmp_path / "run", "--worker-threads", "0", fragment="--worker-threads")
    assert not (tmp_path / "run").exists()


def test_resume_with_a_different_spec_changes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text(preset("quick").to_json())
    before = sorted(p.name for p in run.iterdir())
    refused(run, "--preset", "full-scan", "--resume", fragment="holds a different study")
    refused(run, "--preset", "quick", fragment="already holds a study: pass --resume")
    assert sorted(p.name for p in run.iterdir()) == before
    (run / "spec.json").write_text("{ half a spec")  # an interrupted hand edit
    refused(run, "--preset", "quick", "--resume", fragment="spec.json is not JSON")


def test_a_half_written_manifest_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text(preset("full-scan").to_json())
    (run / "manifest.json").write_text('{"models": {')  # what a kill mid-write used to leave
    refused(run, "--preset", "full-scan", "--resume", fragment="manifest.json cannot be read")


def test_an_out_that_cannot_hold_a_run_is_refused_before_any_model_loads(tmp_path):
    a_file = tmp_path / "results.parquet"
    a_file.write_text("x")
    refused(a_file, "--preset", "quick", fragment="is a file: give a run directory")
    refused(a_file / "run", "--preset", "quick", fragment="is a file, not a directory")
    assert a_file.read_text() == "x"
    if Path("/proc").is_dir():  # refuses files whatever its permission bits say (root passes them)
        refused(Path("/proc/run"), "--preset", "quick", fragment="directory '/proc' is not writable")
