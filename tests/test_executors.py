"""The Ray executor on a real local Ray cluster (2 CPU workers): same results as the in-process executor,
also when a worker dies mid-run."""

from __future__ import annotations

import json
import os

import pytest

from frankenlm.study import executors
from frankenlm.study.runner import run_study
from frankenlm.study.store import Store
from test_study import recording_bars, tiny_dir, tiny_spec  # noqa: F401  (fixture re-export)

ray = pytest.importorskip("ray")


def _rows(path):
    s = Store(path, context_length=256)
    out = {
        k: json.loads(s.db.execute("SELECT items FROM results WHERE key=?", (k,)).fetchone()[0]) for k, *_ in s.rows()
    }
    s.close()
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture
def a_worker_dies(tmp_path, monkeypatch):
    """The first actor to score its third plan dies hard (os._exit), in the middle of a chunk; its
    replacements live. (Defined here, so Ray ships the class by value to its workers.)"""
    marker = str(tmp_path / "died")

    class DiesOnce(executors.Worker):
        def score_plan(self, scorer, plan):
            if self.done >= 3:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)
            return super().score_plan(scorer, plan)

    monkeypatch.setattr(executors.RayExecutor, "worker_class", DiesOnce)
    return marker


@pytest.mark.slow
def test_ray_with_a_killed_worker_equals_in_process(tiny_dir, tmp_path, ray_cluster, a_worker_dies):  # noqa: F811
    spec = tiny_spec(str(tiny_dir))
    local_bars, local_progress = recording_bars()
    run_study(spec, tmp_path / "local", progress=local_progress)
    ray_bars, ray_progress = recording_bars()
    options = {"workers": 2, "threads": 1, "chunk": 2}
    run_study(spec, tmp_path / "ray", executor="ray", ray_options=options, progress=ray_progress)
    # each phase's bar counts the same units either way: the dead worker's lost chunk is not counted twice
    assert ray_bars == local_bars
    assert os.path.exists(a_worker_dies)
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["worker_restarts"] >= 1
    a, b = _rows(tmp_path / "local" / "results.sqlite"), _rows(tmp_path / "ray" / "results.sqlite")
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k], strict=True):
            assert x["item_id"] == y["item_id"]
            assert abs(x["extras"]["nll"] - y["extras"]["nll"]) <= 1e-5
    assert (tmp_path / "local" / "results.csv").read_text().count("\n") == (
        tmp_path / "ray" / "results.csv"
    ).read_text().count("\n")
    resumed_bars, resumed_progress = recording_bars()  # resumed: the same bars, every unit found stored
    run_study(spec, tmp_path / "ray", executor="ray", ray_options=options, progress=resumed_progress)
    assert [b[:2] for b in resumed_bars] == [b[:2] for b in ray_bars]
    assert all(b[4] == b[2] >= first[2] > 0 for b, first in zip(resumed_bars, ray_bars, strict=True))


@pytest.mark.slow
def test_ray_workers_of_another_arithmetic_add_only_float32_units(tiny_dir, tmp_path, ray_cluster, monkeypatch):  # noqa: F811
    """A worker on a machine of another arithmetic kind would store bf16 units under keys that claim this
    machine's arithmetic: a run of bf16 tasks only is refused before any unit is computed; in a run with float32
    tasks (shared by every CPU kind) those go on, and a bf16 task that misses units is skipped before computing."""
    from frankenlm.errors import FrankenError
    from frankenlm.study.spec import TaskBudget

    class Elsewhere(executors.Worker):
        def arithmetic(self) -> str:
            return "cpu-elsewhere"

    monkeypatch.setattr(executors.RayExecutor, "worker_class", Elsewhere)
    spec = tiny_spec(str(tiny_dir))
    spec.dtype = "bfloat16"
    with pytest.raises(FrankenError, match="Ray workers compute with cpu-elsewhere arithmetic, but this run's bfloa"):
        run_study(spec, tmp_path / "ray", executor="ray", ray_options={"workers": 2})
    assert Store(tmp_path / "ray" / "results.sqlite").count() == 0

    spec.tasks.append(TaskBudget("arc_easy", search_items=12, heldout_items=6, dtype="float32"))
    said = []
    run_dir = run_study(spec, tmp_path / "mixed", executor="ray", ray_options={"workers": 2}, notify=said.append)
    store = Store(run_dir / "results.sqlite")
    assert dict(store.db.execute("SELECT task, count(*) FROM results GROUP BY task")).keys() == {"arc_easy"}
    assert any("lambada_passages: skipped" in m and "cpu-elsewhere" in m for m in said), said
    tasks = json.loads((run_dir / "manifest.json").read_text())["models"]
    assert [set(m["tasks"]) for m in tasks.values()] == [{"arc_easy"}]
