"""The Ray executor on a real local Ray cluster (2 CPU workers): same results as the in-process executor,
also when a worker dies mid-run."""

from __future__ import annotations

import json

import pytest

from frankenlm.study.store import Store
from frankenlm.study.runner import run_study

from test_study import tiny_dir, tiny_spec  # noqa: F401  (fixture re-export)

ray = pytest.importorskip("ray")


def _rows(path):
    s = Store(path)
    out = {k: json.loads(s.db.execute("SELECT items FROM results WHERE key=?", (k,)).fetchone()[0])
           for k, *_ in s.rows()}
    s.close()
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_with_a_killed_worker_equals_in_process(tiny_dir, tmp_path, ray_cluster):  # noqa: F811
    spec = tiny_spec(str(tiny_dir))
    run_study(spec, tmp_path / "local", log=lambda m: None)
    # worker 0 dies hard (os._exit) after its third unit, in the middle of a slice
    run_study(spec, tmp_path / "ray", log=lambda m: None, executor="ray",
              ray_options={"workers": 2, "threads": 1, "fail_after": {0: 3}, "chunk": 2})
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["worker_restarts"] >= 1
    a, b = _rows(tmp_path / "local" / "results.sqlite"), _rows(tmp_path / "ray" / "results.sqlite")
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k], strict=True):
            assert x["item_id"] == y["item_id"]
            assert abs(x["extras"]["nll"] - y["extras"]["nll"]) <= 1e-5
    assert (tmp_path / "local" / "results.csv").read_text().count("\n") == \
        (tmp_path / "ray" / "results.csv").read_text().count("\n")
