"""Store exports (compact Parquet archives) round-trip every row, and a study continues from one elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from frankenlm.cli.app import app
from frankenlm.errors import FrankenError
from frankenlm.report import write_report
from frankenlm.report.fmt import plural
from frankenlm.study import units
from frankenlm.study.archive import export_store, import_store, read_archive
from frankenlm.study.runner import run_study
from frankenlm.study.store import Store, Unit
from test_study import tiny_dir, tiny_spec  # noqa: F401  (fixture re-export)


def _unit(k: int) -> Unit:
    return Unit("digest", f"0..{k}", "arc_easy", f"set{k}", "bfloat16")


def test_export_and_import_keep_every_row_and_key(tmp_path):
    a = Store(tmp_path / "a.sqlite", context_length=256, scoring="fast")
    for k in range(3):
        a.put(_unit(k), [{"item_id": str(k), "metrics": {"acc": 1.0}, "extras": {"logprobs": [-1.5, -2.25]}}], {"k": k})
    t_mid = a.db.execute("SELECT created FROM results ORDER BY created").fetchall()[1][0]
    assert export_store(a, tmp_path / "all.parquet") == 3
    assert export_store(a, tmp_path / "late.parquet", since=t_mid) == 1
    before = a.db.execute("SELECT * FROM results ORDER BY key").fetchall()
    a.close()
    b = Store(tmp_path / "b.sqlite", context_length=256, scoring="fast")
    assert import_store([tmp_path / "late.parquet"], b) == (1, 1)
    assert import_store([tmp_path / "all.parquet", tmp_path / "late.parquet"], b) == (4, 2)  # no row twice
    assert b.db.execute("SELECT * FROM results ORDER BY key").fetchall() == before  # bit for bit
    assert b.get(_unit(2)) == [{"item_id": "2", "metrics": {"acc": 1.0}, "extras": {"logprobs": [-1.5, -2.25]}}]
    # the setup is part of the key: a store seen with another context length does not see the rows
    assert Store(tmp_path / "b.sqlite", context_length=512, scoring="fast").get(_unit(2)) is None


def test_a_folder_stands_for_its_archives(tmp_path):
    from frankenlm.study.archive import archive_paths

    a = Store(tmp_path / "a.sqlite", context_length=256, scoring="fast")
    a.put(_unit(1), [{"item_id": "1", "metrics": {"acc": 1.0}, "extras": {}}], {})
    (tmp_path / "dir").mkdir()
    export_store(a, tmp_path / "dir" / "results-2.parquet")
    export_store(a, tmp_path / "dir" / "results-1.parquet")
    a.close()
    assert archive_paths([tmp_path / "dir"]) == [
        tmp_path / "dir" / "results-1.parquet",
        tmp_path / "dir" / "results-2.parquet",
    ]
    assert import_store([tmp_path / "dir"], tmp_path / "b.sqlite") == (2, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrankenError, match="holds no"):
        archive_paths([tmp_path / "empty"])


def test_bad_archives_are_refused_by_name(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(FrankenError, match="x.parquet' is not a Parquet file"):
        read_archive(bad)
    with pytest.raises(FrankenError, match="does not exist"):
        read_archive(tmp_path / "missing.parquet")


def test_a_study_continues_from_a_committed_archive_without_recomputing(tiny_dir, tmp_path, monkeypatch):  # noqa: F811
    spec = tiny_spec(str(tiny_dir))
    first = run_study(spec, tmp_path / "first")
    runner = CliRunner()
    res = runner.invoke(app, ["store", "export", str(first), "--out", str(tmp_path / "results.parquet")])
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, ["store", "export", str(first), "--out", str(tmp_path / "results.parquet")])
    assert again.exit_code == 2 and "already exists" in again.output
    if Path("/proc").is_dir():  # a folder that refuses files whatever its permission bits say (root passes them)
        bad = runner.invoke(app, ["store", "export", str(first), "--out", "/proc/results.parquet"])
        assert bad.exit_code == 2 and "is not writable" in bad.output and "Traceback" not in bad.output

    def no_model_work(*args, **kwargs):
        raise AssertionError("a unit held by the archive was computed again")

    monkeypatch.setattr(units.SliceScorer, "score", no_model_work)
    second = run_study(spec, tmp_path / "second", archives=[tmp_path / "results.parquet"])
    assert (second / "results.csv").read_text() == (first / "results.csv").read_text()
    assert write_report(second).is_file()  # the report renders from the imported results alone


def test_a_protocol_moved_to_float32_continues_from_committed_bf16_results_on_another_cpu(
    tiny_dir,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The findings run's switch: committed results of a bf16 study (made on one CPU kind), continued by a spec
    that scores its benchmarks in float32 (and measures another task on other items) on a CPU of another kind.
    The committed bf16 units are found under their kind, not recomputed; the float32 task is computed here; the
    bf16 task's selection carries over."""
    import json

    import frankenlm.study.runner as runner_module
    from frankenlm.study.spec import StudySpec, TaskBudget

    def kind(name):
        monkeypatch.setattr(runner_module, "arithmetic_kind", lambda device: name)
        monkeypatch.setattr(units, "arithmetic_kind", lambda device: name)

    a = tiny_spec(str(tiny_dir))
    a.dtype = "bfloat16"
    a.tasks += [
        TaskBudget("arc_easy", search_items=12, heldout_items=6),
        TaskBudget("copa", search_items=8, heldout_items=4),
    ]
    kind("cpu-fast")
    first = run_study(a, tmp_path / "first")
    archive = tmp_path / "committed" / "results.parquet"
    res = CliRunner().invoke(app, ["store", "export", str(first), "--out", str(archive), "--with-manifest"])
    assert res.exit_code == 0, res.output

    b = StudySpec.from_json(a.to_json())
    b.tasks[1].dtype = "float32"
    b.tasks[2].search_items = 10  # another budget for one task: the others' records still carry over
    kind("cpu-slow")
    said = []
    second = run_study(b, tmp_path / "second", archives=[archive], notify=said.append)
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["arithmetic"] == "cpu-fast"  # the committed results' kind names the bf16 keys
    assert any("computes only its float32 tasks (arc_easy)" in m for m in said)
    store = Store(second / "results.sqlite", arithmetic="cpu-fast")
    made = {
        (task, dtype, json.loads(meta)["arithmetic"])
        for task, dtype, meta in store.db.execute("SELECT task, dtype, meta FROM results")
    }
    assert ("arc_easy", "float32", "cpu-slow") in made
    assert not {m for m in made if m[1] == "bfloat16" and m[2] == "cpu-slow"}, "bf16 units computed on the other kind"
    old = json.loads((first / "manifest.json").read_text())["models"]
    (name,) = old
    assert manifest["models"][name]["tasks"]["lambada_passages"] == old[name]["tasks"]["lambada_passages"]
    assert any("copa: skipped" in m for m in said)  # its new items need bf16 units this machine cannot add


def test_findings_are_generated_from_the_results_alone(tiny_dir, tmp_path):  # noqa: F811
    """The findings document from a small study's committed results: every configuration counted, the best one
    quoted with the CI the results hold."""
    from frankenlm.study.results import read_results

    run = run_study(tiny_spec(str(tiny_dir)), tmp_path / "run")
    out = tmp_path / "FINDINGS.md"
    res = CliRunner().invoke(app, ["findings", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    (g,) = read_results(run).groups()
    n = sum(not r.is_base for r in g.rows)
    assert f"{n} configurations" in text
    best = g.ranked[0]
    assert f"`{best.config}` {1000 * best.gain:+.2f} [{1000 * best.ci_low:+.2f}, {1000 * best.ci_high:+.2f}]" in text
    for heading in ("## Does any configuration help?", "## Which layers help or hurt", "## How many repeats"):
        assert heading in text
    # the dtypes from the run's spec: float32, which every CPU kind computes alike (a bf16 task names its kind)
    assert "Units were computed: lambada_passages in float32 (on CPUs of any kind)." in text
    bad = CliRunner().invoke(app, ["findings", str(tmp_path), "--out", str(out)])
    assert bad.exit_code == 2 and "has no results.csv" in bad.output
    # where the figures cannot go (a file in the way of their folder), refused before any work, the old text kept
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "findings").write_text("not a folder")
    bad = CliRunner().invoke(app, ["findings", str(run), "--out", str(blocked / "FINDINGS.md")])
    assert bad.exit_code == 2 and "figures folder" in bad.output and "is a file, not a directory" in bad.output
    assert "Traceback" not in bad.output and not (blocked / "FINDINGS.md").exists()
    if Path("/proc").is_dir():  # refuses files whatever the permission bits say (root passes os.access)
        bad = CliRunner().invoke(app, ["findings", str(run), "--out", "/proc/FINDINGS.md"])
        assert bad.exit_code == 2 and "is not writable" in bad.output, bad.output


def test_a_held_out_check_is_done_once_the_runner_records_it_not_at_its_first_unit(tiny_dir, tmp_path):  # noqa: F811
    """A run interrupted inside a task's held-out check (one of its configurations re-measured): the coverage
    table says how far the check is, the answers are 'so far', and the held-out p-value is adjusted over the
    whole family (the tests not made yet count as p = 1); once the runner records the check, the task is done."""
    import json
    import sqlite3

    from frankenlm.study.results import read_results
    from frankenlm.study.runner import rewrite_results
    from frankenlm.study.store import item_set_digest

    spec = tiny_spec(str(tiny_dir), early=False)
    run = run_study(spec, tmp_path / "run")
    out = tmp_path / "FINDINGS.md"

    def render() -> str:
        res = CliRunner().invoke(app, ["findings", str(run), "--out", str(out)])
        assert res.exit_code == 0, res.output
        return out.read_text()

    manifest = json.loads((run / "manifest.json").read_text())
    ((name, info),) = manifest["models"].items()
    text = render()
    assert f"| {name} | done |" in text and "\n## The answers\n" in text
    (g,) = read_results(run).groups()
    assert g.checked() and g.heldout_family() == spec.heldout_top_k == 2
    # the check interrupted after its first configuration: no record of it, the second's unit not stored
    t = info["tasks"]["lambada_passages"]
    first, second = t.pop("heldout_plans")
    (run / "manifest.json").write_text(json.dumps(manifest))
    store = Store.for_spec(run / "results.sqlite", spec)
    key = store.key(
        Unit(info["digest"], second, "lambada_passages", item_set_digest("lambada_passages", t["heldout"]), spec.dtype)
    )
    store.close()
    with sqlite3.connect(run / "results.sqlite") as db:
        assert db.execute("DELETE FROM results WHERE key=?", (key,)).rowcount == 1
    rewrite_results(run)
    text = render()
    assert f"| {name} | in progress (held-out check: 1 of 2 re-measured) |" in text
    assert "\n## The answers so far\n" in text
    (g,) = read_results(run).groups()
    (r,) = [r for r in g.rows if r.remeasured]
    assert r.config == first and not g.checked() and g.heldout_family() == 2
    assert r.heldout_p_holm == pytest.approx(min(1.0, 2 * r.heldout_p))  # Holm over 2, the missing test as p = 1


def test_a_study_refuses_a_foreign_archive_before_writing(tiny_dir, tmp_path):  # noqa: F811
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(FrankenError, match="x.parquet' is not a Parquet file"):
        run_study(tiny_spec(str(tiny_dir)), tmp_path / "run", archives=[bad])
    assert not (tmp_path / "run").exists()


def test_findings_from_committed_results_alone(tiny_dir, tmp_path):  # noqa: F811
    """`store export --with-manifest` writes a folder that `frankenlm findings` turns into the same document as
    the run directory (figures included), and the per-item ceiling equals a hand count over the stored items."""
    import json
    from dataclasses import replace

    from frankenlm.study.spec import TaskBudget

    spec = replace(tiny_spec(str(tiny_dir)), tasks=[TaskBudget("arc_easy", search_items=24, heldout_items=12)])
    run = run_study(spec, tmp_path / "run")
    committed = tmp_path / "committed"
    runner = CliRunner()
    res = runner.invoke(
        app, ["store", "export", str(run), "--out", str(committed / "results-1.parquet"), "--with-manifest"]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in committed.iterdir()) == ["manifest.json", "results-1.parquet", "spec.json"]
    docs = tmp_path / "docs"
    a = runner.invoke(app, ["findings", str(committed), "--out", str(docs / "FINDINGS.md")])
    assert a.exit_code == 0, a.output
    b = runner.invoke(app, ["findings", str(run), "--out", str(tmp_path / "from-run.md")])
    assert b.exit_code == 0, b.output
    text, again = (docs / "FINDINGS.md").read_text(), (tmp_path / "from-run.md").read_text()
    assert f"`frankenlm findings {committed} --out {docs / 'FINDINGS.md'}`" in text
    assert text.splitlines()[3:] == again.splitlines()[3:]  # the same document below the header
    assert "## The per-item ceiling" in text and any((docs / "findings").glob("repeats-*.png"))

    # the ceiling by hand: base-wrong search items that some full-budget configuration gets right
    study = json.loads((run / "study.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    ((model, info),) = manifest["models"].items()
    ceiling = study["ceiling"][model]["arc_easy"]
    t = info["tasks"]["arc_easy"]
    store = Store.for_spec(run / "results.sqlite", spec)
    from frankenlm.study.store import item_set_digest

    def items(plan, slices):
        out = []
        for ids in slices:
            got = store.get(Unit(info["digest"], plan, "arc_easy", item_set_digest("arc_easy", ids), spec.dtype))
            if got is None:
                return None
            out += got
        return {r["item_id"]: r["metrics"][t["primary"]] == 1 for r in out}

    base = items(f"0..{info['depth'] - 1}", t["slices"])
    wrong = {i for i, ok in base.items() if not ok}
    fixed = set()
    n_full = 0
    for c in info["configs"]:
        got = items(c["plan"], t["slices"])
        if got is not None:
            n_full += 1
            fixed |= {i for i in wrong if got[i]}
    # the compute table: every stored unit of the model and the seconds its own record holds, counted by hand
    metas = [
        json.loads(m) for (m,) in store.db.execute("SELECT meta FROM results WHERE model_digest=?", (info["digest"],))
    ]
    hours = sum(m["seconds"] for m in metas) / 3600
    assert f"| {model} | **this protocol** | | {len(metas):,} | **{hours:.2f}** |" in text
    store.close()
    assert ceiling["search_base_wrong"] == len(wrong) and ceiling["search_fixed_by_some"] == len(fixed)
    assert ceiling["configurations"] == n_full and ceiling["chosen_fixed"] <= ceiling["heldout_base_wrong"]
    assert f"wrong; some one of {plural(n_full, 'configuration')} gets {len(fixed)} of them right" in text


@pytest.mark.parametrize("change", ["none", "a design added", "other items"])
def test_a_session_that_stops_early_keeps_what_earlier_sessions_recorded(tiny_dir, tmp_path, monkeypatch, change):  # noqa: F811
    """A study continued from committed results and stopped before it reached a task still records that task
    (and the configurations and signals of earlier sessions) in its manifest, so exporting it never loses them;
    the signals of items already measured are not computed again. So does a study whose spec adds a design (the
    same items); one that measures other items starts afresh."""
    import json
    from dataclasses import replace

    from frankenlm.study import runner
    from frankenlm.study.spec import DesignSpec, TaskBudget

    spec = replace(
        tiny_spec(str(tiny_dir)),
        tasks=[
            TaskBudget("lambada_passages", search_tokens=600, heldout_tokens=200),
            TaskBudget("arc_easy", search_items=12, heldout_items=6),
        ],
        order="tasks",
    )
    first = run_study(spec, tmp_path / "first")
    committed = tmp_path / "committed"
    res = CliRunner().invoke(
        app, ["store", "export", str(first), "--out", str(committed / "results-1.parquet"), "--with-manifest"]
    )
    assert res.exit_code == 0, res.output
    before = json.loads((committed / "manifest.json").read_text())["models"]

    real_run_task = runner.StudyRun.run_task

    real_raced = runner.StudyRun._raced

    def stop_at_arc(self, lm, ex, items, *args):
        if items.task == "arc_easy" and change != "none":
            raise KeyboardInterrupt
        return real_run_task(self, lm, ex, items, *args)

    def stop_inside_arc(self, lm, ex, items, *args):  # "none": stopped after ARC's entry was written
        if items.task == "arc_easy":
            raise KeyboardInterrupt
        return real_raced(self, lm, ex, items, *args)

    monkeypatch.setattr(runner.StudyRun, "_raced", stop_inside_arc)

    def no_signals(*args):
        raise AssertionError("signals of the same items computed again")

    monkeypatch.setattr(runner.StudyRun, "run_task", stop_at_arc)
    if change == "other items":
        spec = replace(spec, seed=spec.seed + 1)
    else:
        monkeypatch.setattr(runner, "layer_signals", no_signals)
    if change == "a design added":
        spec = replace(spec, designs=[*spec.designs, DesignSpec("selected", {"from_task": "lambada_passages"})])
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, tmp_path / "second", archives=[committed])
    after = json.loads((tmp_path / "second" / "manifest.json").read_text())["models"]
    assert after.keys() == before.keys()
    for name, info in before.items():
        if change == "other items":
            assert "arc_easy" not in after[name]["tasks"]  # nothing of another selection of items carries over
            continue
        assert after[name]["tasks"]["arc_easy"] == info["tasks"]["arc_easy"]  # not reached: kept
        plans = [c["plan"] for c in after[name]["configs"]]
        assert plans[: len(info["configs"])] == [c["plan"] for c in info["configs"]]
        if change == "none":
            assert after[name]["tasks"] == info["tasks"]  # LAMBADA re-walked the same
