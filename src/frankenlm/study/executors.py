"""Where units of work run: in this process (the default), or on Ray actors that each load the base model once.

Both executors compute the same units into the same store. In process, units are claimed one at a time (so
several processes can share a store); with Ray, the driver claims a slice's units, actors compute them, and
only the driver writes the store — an actor that dies is replaced and its chunk re-sent. Ray is an optional
dependency (`pip install frankenlm[ray]`).

An executor has `run_slice(task, docs, plans, reuse=True)` (plans are `LayerPlan`s; the base is always added),
`set_progress(callback)`, `close()` and `restarts` (actors replaced so far).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from frankenlm.errors import FrankenError
from frankenlm.eval.tasks.base import Doc
from frankenlm.model.arithmetic import arithmetic_kind
from frankenlm.model.loading import LoadedModel, configure_cpu, load_model
from frankenlm.model.plan import LayerPlan, identity_plan
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import OtherArithmetic, Store, depends_on_kind
from frankenlm.study.units import Progress, SliceScorer, UnitReport, UnitRunner, slice_units


class LocalExecutor:
    """Runs units in this process with an already loaded model."""

    name = "local"
    restarts = 0

    def __init__(self, spec: StudySpec, lm: LoadedModel, store: Store, dtype: str, progress: Progress | None = None):
        self.runner = UnitRunner(spec, lm, store, dtype, progress)

    def run_slice(self, task: str, docs: list[Doc], plans: Sequence[LayerPlan], reuse: bool = True) -> None:
        self.runner.run_slice(task, docs, plans, reuse=reuse)

    def set_progress(self, progress: Progress | None) -> None:
        self.runner.report = UnitReport(progress)

    def close(self) -> None:
        pass


class Worker:
    """A Ray actor: loads the base model once, then scores the plans it is sent (no store access: results go
    back to the driver, which alone writes the store — so workers need no shared filesystem)."""

    def __init__(self, spec_json: str, model: str, dtype: str, device: str, threads: int):
        configure_cpu(threads)
        self.spec = StudySpec.from_json(spec_json)
        self.lm = load_model(model, dtype=dtype, device=device)
        self.scorers: dict[bool, SliceScorer] = {}
        self.done = 0  # plans scored by this actor

    def digest(self) -> str:
        return self.lm.digest

    def depth(self) -> int:
        return self.lm.depth

    def arithmetic(self) -> str:
        return arithmetic_kind(self.lm.model.device)

    def score(
        self, docs: list[Doc], plans: list[LayerPlan], slice_plans: list[LayerPlan], reuse: bool = True
    ) -> list[tuple]:
        """[(plan, per-item results, meta)] for `plans` on `docs` (`slice_plans`: every plan of the slice, for
        the prefix states to keep)."""
        scorer = self.scorers.setdefault(reuse, SliceScorer(self.spec, self.lm, reuse))
        scorer.prepare(docs, slice_plans)
        out = []
        for p in plans:
            items, meta = self.score_plan(scorer, p)
            out.append((p, items, meta))
            self.done += 1
        return out

    def score_plan(self, scorer: SliceScorer, plan: LayerPlan) -> tuple[list[dict], dict]:
        """One plan on the prepared slice (tests override this to make an actor die mid-chunk)."""
        return scorer.score(plan)


class RayExecutor:
    """Fans the units of each slice out over Ray actors (one per GPU, or N CPU workers with T threads each).

    The driver claims units in the store, sends chunks of plans to idle actors (plans sharing long base
    prefixes first), and writes results as they come back. An actor that dies has its chunk re-sent to a
    fresh actor; its claims stay with the driver, so nothing is lost or computed twice in the store.
    `worker_class` is the actor's class (tests substitute one that dies).
    """

    name = "ray"
    worker_class = Worker

    def __init__(
        self,
        spec: StudySpec,
        model: str,
        store: Store,
        dtype: str,
        *,
        address: str | None = None,
        workers: int = 2,
        threads: int = 1,
        device: str = "cpu",
        gpus: int = 1,
        progress: Progress | None = None,
        chunk: int = 4,
    ):
        try:
            import ray
        except ImportError:
            raise FrankenError("--executor ray needs Ray: pip install 'frankenlm[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(num_cpus=max(workers * threads, 1), include_dashboard=False, log_to_driver=False)
            except Exception as e:  # noqa: BLE001 - ray raises many types for a bad address
                raise FrankenError(f"cannot start or reach the Ray cluster {address or '(local)'}: {e}") from None
        self.spec, self.store, self.dtype, self.chunk = spec, store, dtype, chunk
        self.report = UnitReport(progress)
        # Ray gives each GPU worker its own GPUs (CUDA_VISIBLE_DEVICES): "cuda" is the first of them, and
        # "auto" splits the model over all `gpus` of them with accelerate's device_map
        on_gpu = device.startswith("cuda") or device == "auto"
        if on_gpu and device != "auto" and gpus != 1:
            raise FrankenError(f"--device {device} runs one GPU per worker: use --device auto to split over {gpus}")
        self.args = (spec.to_json(), model, dtype, "cuda" if device.startswith("cuda") else device, threads)
        self.actor_cls = ray.remote(num_cpus=threads, num_gpus=gpus if on_gpu else 0, max_restarts=0)(self.worker_class)
        self.actors = [self.actor_cls.remote(*self.args) for _ in range(workers)]
        digests = set(ray.get([a.digest.remote() for a in self.actors]))
        if len(digests) != 1:
            raise FrankenError(f"Ray workers loaded different weights for {model!r} (digests {sorted(digests)})")
        self.digest = digests.pop()
        # workers of another arithmetic kind than the store's keys name may add only units that do not depend on
        # it (float32 on CPUs: `depends_on_kind`). A run with no such task is refused here; otherwise a slice that
        # needs units they cannot add is refused before computing (`run_slice`), so the runner skips that task as
        # it does on one machine. Each unit's meta is checked again when it is stored (actors started later).
        self.other_kinds = sorted(set(ray.get([a.arithmetic.remote() for a in self.actors])) - {store.arithmetic})
        if store.arithmetic is not None and self.other_kinds:
            device_type = store.setup["device_type"]
            if all(depends_on_kind(spec.task_dtype(b.name), device_type) for b in spec.tasks):
                message = self._other_kinds_message()
                self.close()
                raise OtherArithmetic(message)
        self.base = identity_plan(ray.get(self.actors[0].depth.remote()))
        self.restarts = 0  # actors that died and were replaced

    def _other_kinds_message(self) -> str:
        kinds, mine = ", ".join(self.other_kinds), self.store.arithmetic
        return (
            f"Ray workers compute with {kinds} arithmetic, but this run's {self.dtype} units are keyed for {mine}: "
            f"run the workers on {mine} machines only"
        )

    def set_progress(self, progress: Progress | None) -> None:
        self.report = UnitReport(progress)

    def run_slice(self, task: str, docs: list[Doc], plans: Sequence[LayerPlan], reuse: bool = True) -> None:
        ray = self.ray
        units = slice_units(self.digest, self.dtype, task, docs, plans, self.base)
        # others' claims: another driver is on them
        mine = [p for p in self.report.unstored(self.store, task, units) if self.store.claim(units[p])]
        if not mine:
            return
        queue = [mine[i : i + self.chunk] for i in range(0, len(mine), self.chunk)]
        idle = list(self.actors)
        running: dict = {}
        refreshed = time.monotonic()
        try:
            for kind in self.other_kinds:  # before computing, not after (Store.put checks too)
                try:
                    self.store.refuse_kind(self.dtype, kind)
                except OtherArithmetic:
                    raise OtherArithmetic(self._other_kinds_message()) from None
            docs_ref = ray.put(docs)
            while queue or running:
                if time.monotonic() - refreshed > self.store.lease / 4:  # keep our claims alive on long slices
                    for p in mine:
                        if not self.store.has(units[p]):
                            self.store.claim(units[p])
                    refreshed = time.monotonic()
                while queue and idle:
                    actor, part = idle.pop(), queue.pop(0)
                    running[actor.score.remote(docs_ref, part, mine, reuse)] = (actor, part)
                done, _ = ray.wait(list(running), num_returns=1, timeout=self.store.lease / 8)
                for ref in done:
                    actor, part = running.pop(ref)
                    try:
                        results = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                        self.restarts += 1
                        self.actors.remove(actor)
                        fresh = self.actor_cls.remote(*self.args)
                        self.actors.append(fresh)
                        idle.append(fresh)
                        queue.insert(0, part)  # redo the whole chunk elsewhere
                        continue
                    for p, items, meta in results:
                        self.store.put(units[p], items, meta)
                        self.report.computed(units[p], p)
                    idle.append(actor)
        except BaseException:
            for p in mine:
                self.store.release(units[p])
            raise

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors = []
