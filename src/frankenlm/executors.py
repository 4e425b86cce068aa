"""Where units of work run: in this process (the default), or on Ray actors that each load the base model once.

Both executors compute the same units against the same store; the store's claims are the work queue, so
workers never duplicate a unit and a unit whose worker died is simply claimed again by another. Ray is an
optional dependency (`pip install frankenlm[ray]`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from .errors import FrankenError
from .loading import LoadedModel, load_model
from .presets import StudySpec
from .store import Store
from .tasks.base import Doc

Progress = Callable[[str, int], None]


class LocalExecutor:
    """Runs units in this process with an already loaded model."""

    name = "local"

    def __init__(self, spec: StudySpec, lm: LoadedModel, store: Store, dtype: str, progress: Progress | None = None):
        from .study import Sweep

        self.sweep = Sweep(spec, lm, store, dtype, progress)

    def run_slice(self, task: str, docs: list[Doc], plans: list[str], reuse: bool = True) -> None:
        self.sweep.run_slice(task, docs, plans, reuse=reuse)

    def set_progress(self, progress: Progress | None) -> None:
        self.sweep.progress = progress or (lambda desc, n: None)

    def close(self) -> None:
        pass


class _Worker:
    """A Ray actor: loads the base model once, then runs whatever units of a slice it can claim."""

    def __init__(self, spec_json: str, model: str, dtype: str, store_path: str, device: str, threads: int,
                 fail_after: int | None = None):
        import torch

        from .study import Sweep

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        spec = StudySpec.from_json(spec_json)
        self.store = Store(store_path)
        self.lm = load_model(model, dtype=dtype, device=device)
        self.fail_after = fail_after  # fault injection for tests: die (hard) after this many units
        self.sweep = Sweep(spec, self.lm, self.store, dtype, self._on_unit)

    def _on_unit(self, desc: str, n: int) -> None:
        if self.fail_after is not None and self.sweep.computed >= self.fail_after:
            os._exit(1)

    def owner(self) -> str:
        return self.store.owner

    def run_slice(self, task: str, docs: list[Doc], plans: list[str], reuse: bool = True) -> int:
        before = self.sweep.computed
        self.sweep.run_slice(task, docs, plans, reuse=reuse)
        return self.sweep.computed - before


class RayExecutor:
    """Fans the units of each slice out over Ray actors (one per GPU, or N CPU workers with T threads each)."""

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
        progress: Progress | None = None,
        fail_after: dict[int, int] | None = None,
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
        self.store, self.progress = store, progress
        self.args = (spec.to_json(), model, dtype, str(Path(store.path).resolve()), device, threads)
        gpus = 1 if device.startswith("cuda") else 0
        self.actor_cls = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=0)(_Worker)
        self.workers = [self._start(i, (fail_after or {}).get(i)) for i in range(workers)]
        self.restarts = 0  # workers that died and were replaced

    def _start(self, i: int, fail_after: int | None = None):
        actor = self.actor_cls.remote(*self.args, fail_after=fail_after)
        owner = self.ray.get(actor.owner.remote())
        return {"actor": actor, "owner": owner, "index": i}

    def set_progress(self, progress: Progress | None) -> None:
        self.progress = progress

    def run_slice(self, task: str, docs: list[Doc], plans: list[str], reuse: bool = True) -> None:
        """All units of this slice, spread over the workers; a dead worker's claims are freed and its work
        redone by the others (and by a replacement worker)."""
        ray = self.ray
        n = len(self.workers)
        pending = {}
        for w in self.workers:
            # each worker starts on its own share of the plans, then steals the rest through the store
            k = w["index"] % max(n, 1)
            order = plans[k::n] + [p for i, p in enumerate(plans) if i % n != k]
            pending[w["actor"].run_slice.remote(task, docs, order, reuse)] = w
        while pending:
            done, _ = ray.wait(list(pending), timeout=1.0)
            self._tick()
            for ref in done:
                w = pending.pop(ref)
                try:
                    ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                    self.store.release_owner(w["owner"])  # its in-flight unit goes back to the pool
                    self.restarts += 1
                    fresh = self._start(w["index"])
                    self.workers[self.workers.index(w)] = fresh
                    pending[fresh["actor"].run_slice.remote(task, docs, plans, reuse)] = fresh
        self._tick()

    def _tick(self) -> None:
        if self.progress is None:
            return
        n = self.store.count()
        last = getattr(self, "_last_count", None)
        if last is not None and n > last:
            self.progress("ray", n - last)
        self._last_count = n

    def close(self) -> None:
        for w in self.workers:
            try:
                self.ray.kill(w["actor"])
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.workers = []
