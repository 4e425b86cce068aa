import multiprocessing as mp
import sqlite3
import time

import pytest

from frankenlm.errors import FrankenError
from frankenlm.model.arithmetic import HISTORIC_CPU_KIND
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import Store, Unit, item_set_digest


def unit(plan="0..3", task="t", items=("a", "b"), dtype="bfloat16", digest="d" * 8):
    return Unit(digest, plan, task, item_set_digest(task, items), dtype)


def test_key_depends_on_every_field():
    u = unit()
    variants = [unit(plan="0..4"), unit(task="u"), unit(items=("a", "c")), unit(dtype="float32"), unit(digest="e")]
    assert len({u.key, *(v.key for v in variants)}) == 6
    assert unit().key == u.key


def test_put_get_and_idempotent_second_write(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    u = unit()
    assert s.get(u) is None
    s.put(u, [{"item_id": "a", "metrics": {"acc": 1.0}}])
    s.put(u, [{"item_id": "a", "metrics": {"acc": 0.0}}])  # ignored: the first result stands
    assert s.get(u) == [{"item_id": "a", "metrics": {"acc": 1.0}}]
    assert s.count() == 1
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_compute_counts_a_unit_that_holds_a_pause_of_the_run_at_its_task_median_rate(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    seconds = {"0..3": 2.0, "0..4": 3.0, "0..5": 4.0, "0..1,0..3": 9.0, "0..6": 1000.0}  # 9 s: heavy, not paused
    for k, (plan, sec) in enumerate(seconds.items()):
        s.put(unit(plan=plan, items=(str(k),)), [{"item_id": str(k), "metrics": {}}], {"seconds": sec})
    eight = [{"item_id": i, "metrics": {}} for i in "abcdefgh"]
    s.put(unit(plan="0..3", items=tuple("abcdefgh")), eight, {"seconds": 30.0})  # 8 items: 3.75 s each
    s.put(unit(plan="0..3", dtype="float32"), [{"item_id": "a", "metrics": {}}], {"seconds": 50.0})  # own median
    s.put(unit(plan="0..3", task="u"), [{"item_id": "a", "metrics": {}}], {})  # no record: 0 s
    # a resumed slice's base pass, run inside a unit and recorded apart from its own time: counted as it is
    s.put(
        unit(plan="0..4", dtype="float32"),
        [{"item_id": "a", "metrics": {}}],
        {"seconds": 5000.0, "prefix_states_seconds": 7.0},
    )
    got = s.compute("d" * 8)
    # bf16 seconds per item: 2, 3, 4, 9, 1000, 3.75 -> median 3.875 (the paused unit counts at it)
    assert got["t"]["bfloat16"] == {"units": 6, "seconds": 2.0 + 3.0 + 4.0 + 9.0 + 30.0 + 3.875, "paused_units": 1}
    # float32: 50 and 5000 s per item -> median 2525, neither paused; the 7 s base pass added as recorded
    assert got["t"]["float32"] == {"units": 2, "seconds": 50.0 + 5000.0 + 7.0, "paused_units": 0}
    assert got["u"] == {"bfloat16": {"units": 1, "seconds": 0.0, "paused_units": 0}}


def test_claims_exclude_live_owners_and_lapse(tmp_path):
    a = Store(tmp_path / "r.sqlite", lease_seconds=0.5)
    b = Store(tmp_path / "r.sqlite", lease_seconds=0.5)
    u = unit()
    assert a.claim(u)
    assert not b.claim(u)
    assert b.claimed_by_others(u)
    time.sleep(0.6)  # a's claim lapses: a is presumed dead
    assert b.claim(u)
    b.put(u, [])
    assert not a.claim(u)  # done units are never claimed again


def _worker(path, n_units, out):
    s = Store(path)
    got = []
    for k in range(n_units):
        u = unit(plan=f"0..{k}")
        if s.claim(u):
            time.sleep(0.01)
            s.put(u, [{"item_id": "x", "who": s.owner}])
            got.append(k)
    out.put(got)


def test_two_processes_do_not_duplicate_work(tmp_path):
    path = tmp_path / "r.sqlite"
    Store(path).close()
    q = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_worker, args=(path, 40, q)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert sorted(results[0] + results[1]) == list(range(40))  # each unit computed exactly once
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 40


def _claim_and_die(path):
    import os
    import signal

    s = Store(path)
    s.claim(unit())
    os.kill(os.getpid(), signal.SIGKILL)  # dies holding the claim, like a study killed with kill -9


def test_a_claim_of_a_killed_process_on_this_host_does_not_block(tmp_path):
    path = tmp_path / "r.sqlite"
    Store(path).close()
    p = mp.get_context("spawn").Process(target=_claim_and_die, args=(path,))
    p.start()
    p.join()
    assert p.exitcode == -9
    s = Store(path)  # default lease: 10 minutes, still running
    owner, claimed = s.db.execute("SELECT owner, claimed FROM claims").fetchone()
    assert time.time() - claimed < s.lease and owner != s.owner
    assert not s.claimed_by_others(unit())
    assert s.claim(unit())
    # a claim by an owner on another host is trusted until its lease lapses
    s.db.execute("UPDATE claims SET owner='elsewhere:1:1'")
    assert Store(path).claimed_by_others(unit())


def test_runs_differing_in_context_or_device_share_no_rows(tmp_path):
    import hashlib
    import json

    path = tmp_path / "shared.sqlite"
    default = Store(path, arithmetic=HISTORIC_CPU_KIND)
    short = Store(path, context_length=256, arithmetic=HISTORIC_CPU_KIND)
    gpu = Store(path, device_type="cuda")
    u = unit()
    old = hashlib.sha256(json.dumps([u.model_digest, u.plan, u.task, u.item_set, u.dtype, "1"]).encode()).hexdigest()
    assert default.key(u) == old == u.key  # default runs keep the keys they always had
    assert len({default.key(u), short.key(u), gpu.key(u)}) == 3
    short.put(u, [{"item_id": "a", "metrics": {"acc": 1.0}}])
    assert short.has(u) and not default.has(u) and not gpu.has(u)
    assert default.claim(u)  # not done under the default setup: computed again there
    assert Store(path, context_length=256, arithmetic=HISTORIC_CPU_KIND).get(u) == [
        {"item_id": "a", "metrics": {"acc": 1.0}}
    ]


def test_units_computed_on_machines_of_other_arithmetic_are_never_paired(tmp_path):
    """A unit's key names the kind of arithmetic it was computed with (bf16 numbers differ between CPUs with and
    without AVX512-BF16 by more than the effects a study measures); the historic kind keeps the old keys, this
    machine's kind is the default, and a unit whose record names another kind is refused, not stored."""
    from frankenlm.model.arithmetic import cpu_kind

    path = tmp_path / "shared.sqlite"
    u = unit()
    old, avx2 = Store(path, arithmetic=HISTORIC_CPU_KIND), Store(path, arithmetic="cpu-avx2")
    assert old.key(u) == u.key != avx2.key(u)
    assert Store(path).key(u) == Store(path, arithmetic=cpu_kind()).key(u)  # this machine's, unless given
    assert Store(path, device_type="cuda", arithmetic="cuda-sm90").key(u) != Store(path, device_type="cuda").key(u)
    avx2.put(u, [{"item_id": "a", "metrics": {"acc": 1.0}}], {"seconds": 1.0, "arithmetic": "cpu-avx2"})
    assert avx2.has(u) and not old.has(u)
    with pytest.raises(FrankenError, match="computed with cpu-avx2 arithmetic cannot be stored under cpu-avx512_bf16"):
        old.put(u, [{"item_id": "a", "metrics": {"acc": 0.0}}], {"seconds": 1.0, "arithmetic": "cpu-avx2"})
    assert not old.has(u) and old.claim(u)  # nothing written, the claim not lost
    # float32 on a CPU is computed alike by every kind (check_reproduction.py): one key, stored from any kind
    u32 = unit(dtype="float32")
    assert old.key(u32) == avx2.key(u32) == Store(path).key(u32) == u32.key
    avx2.put(u32, [{"item_id": "a", "metrics": {"acc": 1.0}}], {"seconds": 1.0, "arithmetic": "cpu-avx2"})
    assert old.has(u32)
    gpu = Store(path, device_type="cuda", arithmetic="cuda-sm90")  # a GPU's float32 keeps its kind
    assert gpu.key(u32) != Store(path, device_type="cuda", arithmetic="cuda-sm80").key(u32)


def test_batch_size_and_fast_layout_enter_the_key(tmp_path, monkeypatch):
    import frankenlm.study.store as store_module

    path = tmp_path / "shared.sqlite"
    u = unit()
    old = HISTORIC_CPU_KIND
    assert Store(path, batch_size=8, arithmetic=old).key(u) == u.key  # the default size keeps the historical keys
    keys = {
        Store(path).key(u),
        Store(path, batch_size=16).key(u),
        Store(path, scoring="fast").key(u),
        Store(path, scoring="fast", batch_size=16).key(u),
    }
    assert len(keys) == 4
    fast = Store(path, scoring="fast").key(u)
    monkeypatch.setattr(store_module, "LAYOUT_VERSION", "0")
    assert Store(path, scoring="fast").key(u) != fast  # another layout version: its units are not reused
    assert Store(path, arithmetic=old).key(u) == u.key  # lm-eval scoring has no packed layout


def test_auto_batch_size_keys_units_by_the_size_it_chose(tmp_path):
    path = tmp_path / "shared.sqlite"
    u = unit()
    auto = Store(path, batch_size="auto")
    with pytest.raises(FrankenError, match="'auto' is not resolved"):
        auto.key(u)  # never a key that says "auto": it would pair units computed with different sizes
    auto.use_batch_size(u.model_digest, u.dtype, 16)
    assert auto.key(u) == Store(path, batch_size=16).key(u)
    spec = StudySpec("t", ["m"], [], [], batch_size="auto", scoring="lm-eval")
    other = Store.for_spec(path, spec, batch_sizes={f"{u.model_digest}/{u.dtype}": 32})  # from a run's manifest
    assert other.key(u) == Store(path, batch_size=32).key(u) != auto.key(u)
    fixed = Store(path, batch_size=16)
    fixed.use_batch_size(u.model_digest, u.dtype, 32)  # a fixed size is what the spec says
    assert fixed.key(u) == auto.key(u)


def test_a_file_that_is_not_a_store_is_one_line_refusal(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(FrankenError, match="cannot be used"):
        Store(bad)
    assert bad.read_text().startswith("these are my notes")  # untouched
    with pytest.raises(FrankenError, match="is a directory"):
        Store(tmp_path)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE results (x INTEGER)")
    with pytest.raises(FrankenError, match="results store .*(cannot be used|not a frankenlm results store)"):
        Store(other)
