"""Where units of work run: in this process (the default), or on Ray actors that each load the base model once.

Both executors compute the same units into the same store. In process, units are claimed one at a time (so
several processes can share a store); with Ray, the driver claims a slice's units, actors compute them, and
only the driver writes the store — an actor that dies is replaced and its chunk re-sent. Ray is an optional
dependency (`pip install frankenlm[ray]`).
"""

from __future__ import annotations

import os
import time
from typing import Callable

from frankenlm.errors import FrankenError
from frankenlm.model.loading import LoadedModel, load_model
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import Store, Unit, item_set_digest
from frankenlm.eval.tasks.base import Doc

Progress = Callable[[str, int], None]


class LocalExecutor:
    """Runs units in this process with an already loaded model."""

    name = "local"

    def __init__(self, spec: StudySpec, lm: LoadedModel, store: Store, dtype: str, progress: Progress | None = None):
        from frankenlm.study.runner import Sweep

        self.sweep = Sweep(spec, lm, store, dtype, progress)

    def run_slice(self, task: str, docs: list[Doc], plans: list[str], reuse: bool = True) -> None:
        self.sweep.run_slice(task, docs, plans, reuse=reuse)

    def set_progress(self, progress: Progress | None) -> None:
        self.sweep.progress = progress or (lambda desc, n: None)

    def close(self) -> None:
        pass


class _Worker:
    """A Ray actor: loads the base model once, then scores the plans it is sent (no store access: results go
    back to the driver, which alone writes the store — so workers need no shared filesystem)."""

    def __init__(self, spec_json: str, model: str, dtype: str, device: str, threads: int,
                 fail_after: int | None = None):
        import torch

        from frankenlm.study.runner import SliceScorer

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        self.spec = StudySpec.from_json(spec_json)
        self.lm = load_model(model, dtype=dtype, device=device)
        self.scorers: dict[bool, SliceScorer] = {}
        self.fail_after = fail_after  # fault injection for tests: die hard after this many plans
        self.done = 0

    def digest(self) -> str:
        return self.lm.digest

    def depth(self) -> int:
        return self.lm.depth

    def score(self, docs: list[Doc], plans: list[str], slice_plans: list[str], reuse: bool = True) -> list[tuple]:
        from frankenlm.study.runner import SliceScorer

        scorer = self.scorers.setdefault(reuse, SliceScorer(self.spec, self.lm, reuse))
        scorer.prepare(docs, slice_plans)
        out = []
        for p in plans:
            if self.fail_after is not None and self.done >= self.fail_after:
                os._exit(1)
            items, meta = scorer.score(p)
            out.append((p, items, meta))
            self.done += 1
        return out


class RayExecutor:
    """Fans the units of each slice out over Ray actors (one per GPU, or N CPU workers with T threads each).

    The driver claims units in the store, sends chunks of plans to idle actors (plans sharing long base
    prefixes first), and writes results as they come back. An actor that dies has its chunk re-sent to a
    fresh actor; its claims stay with the driver, so nothing is lost or computed twice in the store.
    """

    name = "ray"

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
        fail_after: dict[int, int] | None = None,
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
        self.spec, self.store, self.dtype, self.progress, self.chunk = spec, store, dtype, progress, chunk
        # Ray gives each GPU worker its own GPUs (CUDA_VISIBLE_DEVICES): "cuda" is the first of them, and
        # "auto" splits the model over all `gpus` of them with accelerate's device_map
        on_gpu = device.startswith("cuda") or device == "auto"
        if on_gpu and device != "auto" and gpus != 1:
            raise FrankenError(f"--device {device} runs one GPU per worker: use --device auto to split over {gpus}")
        self.args = (spec.to_json(), model, dtype, "cuda" if device.startswith("cuda") else device, threads)
        self.actor_cls = ray.remote(num_cpus=threads, num_gpus=gpus if on_gpu else 0, max_restarts=0)(_Worker)
        self.actors = [self.actor_cls.remote(*self.args, fail_after=(fail_after or {}).get(i)) for i in range(workers)]
        digests = set(ray.get([a.digest.remote() for a in self.actors]))
        if len(digests) != 1:
            raise FrankenError(f"Ray workers loaded different weights for {model!r} (digests {sorted(digests)})")
        self.digest = digests.pop()
        self.restarts = 0  # actors that died and were replaced

    def set_progress(self, progress: Progress | None) -> None:
        self.progress = progress

    def run_slice(self, task: str, docs: list[Doc], plans: list[str], reuse: bool = True) -> None:
        from frankenlm.study.designs import base_config
        from frankenlm.study.runner import SliceScorer

        ray = self.ray
        key = item_set_digest(task, [d.item_id for d in docs])
        depth_plan = base_config(self._depth()).plan
        base_text = str(depth_plan)
        unit = lambda p: Unit(self.digest, p, task, key, self.dtype)  # noqa: E731
        ordered = sorted(dict.fromkeys([base_text, *plans]),
                         key=lambda p: (p != base_text, -SliceScorer.prefix_of(p, base_text)))
        mine = [p for p in ordered if self.store.claim(unit(p))]  # others' claims: another driver is on them
        if not mine:
            return
        queue = [mine[i : i + self.chunk] for i in range(0, len(mine), self.chunk)]
        docs_ref = ray.put(docs)
        idle = list(self.actors)
        running: dict = {}
        refreshed = time.monotonic()
        try:
            while queue or running:
                if time.monotonic() - refreshed > self.store.lease / 4:  # keep our claims alive on long slices
                    for p in mine:
                        if not self.store.has(unit(p)):
                            self.store.claim(unit(p))
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
                        self.store.put(unit(p), items, meta)
                        if self.progress is not None:
                            self.progress(p, 1)
                    idle.append(actor)
        except BaseException:
            for p in mine:
                self.store.release(unit(p))
            raise

    def _depth(self) -> int:
        if not hasattr(self, "_depth_cache"):
            self._depth_cache = self.ray.get(self.actors[0].depth.remote())
        return self._depth_cache

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors = []
