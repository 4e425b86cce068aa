"""The results store: SQLite (WAL), one row per unit of work with its per-item results.

A row is keyed by a digest of everything that determines it — model weights, plan (its canonical text), task, the
exact item set (a slice of a task's items), dtype, scoring version, and the scoring setup (context length, device
kind and the kind of arithmetic it computes with, batch size, scoring mode, and for fast scoring the version of its
batch layout) — so a study is a query plus the missing rows to compute, and resuming is the normal path. The
batch size and the layout belong to the setup because they change the arithmetic: in bf16 another batch layout
moves a LAMBADA passage's log-likelihood by ~0.5 nats (measured: SD 0.53, mean +0.11 over 103 passages), larger
than the effects a study measures, so units computed under two layouts must never be paired with each other. The
arithmetic kind (`frankenlm.model.arithmetic`: "cpu-avx512_bf16", "cpu-avx2", "cuda-sm90") belongs there for the
same reason: CPUs with other matmul kernels give bf16 numbers as far apart. Float32 units on a CPU carry no kind:
every CPU computes them alike (measured: a stored qwen2.5-coder-0.5b LAMBADA slice recomputed in fp32 on an
AVX2 CPU moved passages by at most 0.005 nats and a paired gain by 4e-7 bits per byte, against 0.6 milli-bpb in
bf16; `benchmarks/check_reproduction.py`), so fp32 work is shared across CPU kinds. A batch size of `auto` enters
the key as the size it chose on that device (`Store.use_batch_size`), never as "auto".

The scoring setup is a property of the `Store` a study opens (`Store(path, context_length=..., device_type=...)`):
a field enters the key only when it differs from its default (`DEFAULT_SETUP`: context 1024, cpu, the historic CPU
kind), so the keys of every run made with the defaults are the keys they always had, while two runs that differ in
context length, device type or arithmetic kind never share rows through a common store. Each row is written in
one transaction: a process killed at any moment loses at most the unit in flight and never leaves a half-written
row. Processes sharing a store claim units before computing them, so two of them do not duplicate work (a claim
older than its lease is taken over: its owner is presumed dead).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frankenlm.errors import FrankenError
from frankenlm.eval.batching import AUTO
from frankenlm.eval.packing import LAYOUT_VERSION
from frankenlm.model.arithmetic import HISTORIC_CPU_KIND, cpu_kind

SCORING_VERSION = "1"
PAUSE_FACTOR, PAUSE_EXCESS_S = 10.0, 60.0  # a unit record that includes a pause of the run (see Store.compute)
DEFAULT_SETUP = {
    "context_length": 1024,
    "device_type": "cpu",
    "scoring": "lm-eval",
    "batch_size": 8,
    "arithmetic": HISTORIC_CPU_KIND,
}  # setup fields left out of keys at these values

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    model_digest TEXT NOT NULL,
    plan TEXT NOT NULL,
    task TEXT NOT NULL,
    item_set TEXT NOT NULL,
    dtype TEXT NOT NULL,
    scoring_version TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    items TEXT NOT NULL,          -- JSON list of per-item results
    meta TEXT NOT NULL,           -- JSON: timings, tokens, worker
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_plan ON results (model_digest, task, dtype, plan);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    claimed REAL NOT NULL
);
"""


def unit_key(
    model_digest: str,
    plan: str,
    task: str,
    item_set: str,
    dtype: str,
    version: str = SCORING_VERSION,
    setup: dict | None = None,
) -> str:
    """The row key. `setup` fields (context_length, device_type, scoring, ...) enter only where they differ from
    `DEFAULT_SETUP`, so default runs keep their historical keys."""
    fields: list = [model_digest, plan, task, item_set, dtype, version]
    extra = {k: v for k, v in sorted((setup or {}).items()) if DEFAULT_SETUP.get(k, object()) != v}
    if extra:
        fields.append(extra)
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class OtherArithmetic(FrankenError):
    """Units that this machine would compute with another kind of arithmetic than the store's keys name."""


def depends_on_kind(dtype: str, device_type: str) -> bool:
    """Whether units in `dtype` on `device_type` depend on the kind of arithmetic (see the module docstring):
    everything but float32 on a CPU."""
    return not (dtype == "float32" and device_type == "cpu")


def item_set_digest(task: str, item_ids: Iterable[str]) -> str:
    h = hashlib.sha256(task.encode())
    for i in item_ids:
        h.update(b"\0" + str(i).encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Unit:
    """One unit of work: a plan scored on one item set of one task."""

    model_digest: str
    plan: str
    task: str
    item_set: str
    dtype: str

    @property
    def key(self) -> str:
        """The key in a store with the default scoring setup (see `Store.key`)."""
        return unit_key(self.model_digest, self.plan, self.task, self.item_set, self.dtype)


_COLUMNS = (
    "key",
    "model_digest",
    "plan",
    "task",
    "item_set",
    "dtype",
    "scoring_version",
    "n_items",
    "items",
    "meta",
    "created",
)


class Store:
    """A SQLite results store safe for concurrent processes (one connection per process), seen through one
    scoring setup (context length, device kind, scoring mode, batch size: see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        lease_seconds: float = 600.0,
        *,
        context_length: int = 1024,
        device_type: str = "cpu",
        scoring: str = "lm-eval",
        batch_size: int | str = 8,
        arithmetic: str | None = None,
    ):
        self.path = Path(path)
        self.lease = lease_seconds
        self.setup: dict = {
            "context_length": int(context_length),
            "device_type": str(device_type),
            "scoring": str(scoring),
            "batch_size": batch_size,
        }
        # the arithmetic kind of the machine that computes (or computed) the units: a reader gives its run's
        # (`runner.manifest_arithmetic`); not given, on a CPU this machine's kind (on a GPU none: the keys of GPU
        # runs from before kinds were recorded)
        self.arithmetic = arithmetic or (cpu_kind() if device_type == "cpu" else None)
        if self.arithmetic is not None:
            self.setup["arithmetic"] = self.arithmetic
        if scoring == "fast":
            self.setup["layout"] = LAYOUT_VERSION
        self.batch_sizes: dict[tuple[str, str], int] = {}  # (model digest, dtype) -> the size `auto` chose
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        if self.path.is_dir():
            raise FrankenError(
                f"results store {str(self.path)!r} is a directory: give a file path (e.g. "
                f"{str(self.path / 'results.sqlite')!r})"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            cols = tuple(r[1] for r in self.db.execute("PRAGMA table_info(results)"))
        except (sqlite3.DatabaseError, OSError) as e:
            raise FrankenError(
                f"results store {str(self.path)!r} cannot be used ({e}): give a results.sqlite "
                "written by frankenlm, or a new path"
            ) from None
        if cols != _COLUMNS:
            self.db.close()
            raise FrankenError(
                f"results store {str(self.path)!r} is a SQLite file but not a frankenlm results store "
                f"(its results table has columns {', '.join(cols)}): give another path"
            )

    @classmethod
    def for_spec(
        cls,
        path: str | Path,
        spec,
        device_type: str = "cpu",
        batch_sizes: dict | None = None,
        arithmetic: str | None = None,
    ) -> Store:
        """The store at `path` seen through a study spec's scoring setup (context length, scoring mode, batch
        size) on `device_type` with `arithmetic` (a run manifest's; none: this CPU's kind): the one
        way a study, and anything reading its results, opens its store. `batch_sizes` ("model digest/dtype" ->
        size, a run manifest's `batch_sizes`) are the sizes `auto` chose."""
        store = cls(
            path,
            context_length=spec.context_length,
            device_type=device_type,
            scoring=spec.scoring,
            batch_size=spec.batch_size,
            arithmetic=arithmetic,
        )
        for name, size in (batch_sizes or {}).items():
            digest, _, dtype = name.rpartition("/")
            store.use_batch_size(digest, dtype, size)
        return store

    def use_batch_size(self, model_digest: str, dtype: str, size: int) -> None:
        """The batch size that `auto` chose for a model in a dtype: its units are keyed by that size, not by
        "auto" (two GPUs with different free memory choose different sizes, and so different arithmetic)."""
        if self.setup["batch_size"] == AUTO:
            self.batch_sizes[(model_digest, dtype)] = int(size)

    def key(self, unit: Unit) -> str:
        """The row key of `unit` under this store's scoring setup."""
        setup = self.setup
        if setup["batch_size"] == AUTO:
            size = self.batch_sizes.get((unit.model_digest, unit.dtype))
            if size is None:
                raise FrankenError(
                    f"batch size 'auto' is not resolved for model {unit.model_digest[:12]} in {unit.dtype}: "
                    "a unit's key holds the size that was used"
                )
            setup = {**setup, "batch_size": size}
        if not depends_on_kind(unit.dtype, setup["device_type"]):
            setup = {k: v for k, v in setup.items() if k != "arithmetic"}
        return unit_key(unit.model_digest, unit.plan, unit.task, unit.item_set, unit.dtype, setup=setup)

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------------------------------- reading
    def get(self, unit: Unit) -> list[dict] | None:
        row = self.db.execute("SELECT items FROM results WHERE key=?", (self.key(unit),)).fetchone()
        return None if row is None else json.loads(row[0])

    def has(self, unit: Unit) -> bool:
        return self.db.execute("SELECT 1 FROM results WHERE key=?", (self.key(unit),)).fetchone() is not None

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def rows(self) -> list[tuple]:
        return self.db.execute(
            "SELECT key, model_digest, plan, task, item_set, dtype, n_items FROM results ORDER BY key"
        ).fetchall()

    def compute(self, model_digest: str) -> dict[str, dict[str, dict]]:
        """Per task and dtype, the units stored for a model (every setup) and the seconds they took to score
        (each unit's `meta.seconds`: model time, not loading or bookkeeping; plus its `prefix_states_seconds`, the
        base pass a resumed slice ran inside it, `units.SliceScorer`): `{task: {dtype: {units, seconds,
        paused_units}}}`.

        A unit's record is wall time, so a run paused while it scored (SIGSTOP, a suspended laptop), or sharing
        its cores with another job, records that too: a unit whose seconds per item exceed `PAUSE_FACTOR` times its task's median (same dtype), by
        more than `PAUSE_EXCESS_S` seconds in all, counts at that median rate instead and is counted in
        `paused_units`. (Legitimate units stay well under: a whole-model block repeat scored without prefix
        reuse costs ~4x the median.)
        """
        per: dict[tuple[str, str], list[tuple[float, int]]] = {}
        states: dict[tuple[str, str], float] = {}
        for task, dtype, seconds, n, prefix_states in self.db.execute(
            "SELECT task, dtype, COALESCE(json_extract(meta, '$.seconds'), 0), n_items, "
            "COALESCE(json_extract(meta, '$.prefix_states_seconds'), 0) FROM results "
            "WHERE model_digest=? ORDER BY task",
            (model_digest,),
        ):
            per.setdefault((task, dtype), []).append((float(seconds or 0.0), max(1, int(n))))
            states[task, dtype] = states.get((task, dtype), 0.0) + float(prefix_states or 0.0)
        out: dict[str, dict[str, dict]] = {}
        for (task, dtype), units in per.items():
            rate = float(np.median([sec / n for sec, n in units]))
            counted = [
                (rate * n, True) if sec > PAUSE_FACTOR * rate * n and sec - rate * n > PAUSE_EXCESS_S else (sec, False)
                for sec, n in units
            ]
            out.setdefault(task, {})[dtype] = {
                "units": len(units),
                "seconds": sum(sec for sec, _ in counted) + states[task, dtype],
                "paused_units": sum(p for _, p in counted),
            }
        return out

    # ---------------------------------------------------------------------------------------- writing
    def put(self, unit: Unit, items: list[dict], meta: dict | None = None) -> None:
        """Write a finished unit atomically (a second write of the same unit is ignored) and drop its claim. A
        unit whose `meta` names the arithmetic it was computed with is refused under another kind's key
        (`refuse_kind`)."""
        made_with = (meta or {}).get("arithmetic")
        if made_with is not None:
            self.refuse_kind(unit.dtype, made_with)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT OR IGNORE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    self.key(unit),
                    unit.model_digest,
                    unit.plan,
                    unit.task,
                    unit.item_set,
                    unit.dtype,
                    SCORING_VERSION,
                    len(items),
                    json.dumps(items),
                    json.dumps(meta or {}),
                    time.time(),
                ),
            )
            self.db.execute("DELETE FROM claims WHERE key=?", (self.key(unit),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def refuse_kind(self, dtype: str, kind: str) -> None:
        """Refuse units in `dtype` computed with `kind` arithmetic where this store's keys name another kind
        (float32 on a CPU is shared by every CPU kind: `depends_on_kind`)."""
        if self.arithmetic is None or kind == self.arithmetic or not depends_on_kind(dtype, self.setup["device_type"]):
            return
        raise OtherArithmetic(
            f"{dtype} units computed with {kind} arithmetic cannot be stored under {self.arithmetic}'s keys "
            f"(their numbers differ from those a {self.arithmetic} machine computes): compute them on a "
            f"{self.arithmetic} machine, or open the store with arithmetic={kind!r}"
        )

    def claim(self, unit: Unit) -> bool:
        """Claim a unit for this process; False if it is done or claimed by a live owner."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self.db.execute("SELECT 1 FROM results WHERE key=?", (self.key(unit),)).fetchone():
                self.db.execute("COMMIT")
                return False
            row = self.db.execute("SELECT owner, claimed FROM claims WHERE key=?", (self.key(unit),)).fetchone()
            if self._held_by_other(row, now):
                self.db.execute("COMMIT")
                return False
            self.db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?)", (self.key(unit), self.owner, now))
            self.db.execute("COMMIT")
            return True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def release(self, unit: Unit) -> None:
        self.db.execute("DELETE FROM claims WHERE key=? AND owner=?", (self.key(unit), self.owner))

    def claimed_by_others(self, unit: Unit) -> bool:
        row = self.db.execute("SELECT owner, claimed FROM claims WHERE key=?", (self.key(unit),)).fetchone()
        return self._held_by_other(row, time.time())

    def _held_by_other(self, row: tuple | None, now: float) -> bool:
        """A claim row blocks this process while another owner's lease runs and that owner may be alive."""
        return row is not None and row[0] != self.owner and now - row[1] < self.lease and owner_alive(row[0])


def owner_alive(owner: str) -> bool:
    """False only when the owner is known dead: a process of this host (owner = host:pid:ns) that no longer
    exists, e.g. one killed with SIGKILL. Owners on other hosts are trusted until their lease lapses."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
