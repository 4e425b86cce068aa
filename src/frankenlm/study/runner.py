"""The study engine: sweeps over layer plans with prefix reuse, racing, a resumable store and held-out
confirmation.

Work is cut into units — one plan scored on one slice of one task's items — each written to the store in one
transaction (study/units.py). Per model: load it; for each task, race the static designs' candidates over the
search slices (study/sweep.py), record per-layer signals, run the adaptive designs (the greedy search, derived
designs), rank on the search items only and re-measure the top on held-out items; then re-check the top in
fp32; finally write the results table. Everything the spec or the run directory gets wrong is refused before
anything is written. Progress goes to a `progress` factory and messages to `notify` and `logging` (the CLI
draws); the HTML report is written by frankenlm.report from the results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from frankenlm.errors import FrankenError
from frankenlm.eval.batching import AUTO, parse_batch_size, resolve_batch_size
from frankenlm.model.arithmetic import HISTORIC_CPU_KIND, SLOW_BF16_KINDS, arithmetic_kind
from frankenlm.model.costs import plan_costs
from frankenlm.model.loading import LoadedModel, load_model, parse_device, resolve
from frankenlm.model.plan import LayerPlan, coerce_plan, identity_plan, repeat_layer_plan
from frankenlm.study import analysis, designs
from frankenlm.study.archive import archive_paths, check_archive, import_store
from frankenlm.study.designs import Candidate
from frankenlm.study.items import TaskItems, select_items
from frankenlm.study.signals import SignalRecorder
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import OtherArithmetic, Store, depends_on_kind
from frankenlm.study.sweep import best_of, derived_design, greedy_search, race
from frankenlm.study.units import Progress, score_docs

logger = logging.getLogger("frankenlm.study")

# (description, total units) -> advance(description, n); advance(None, -1) closes the bar
ProgressFactory = Callable[[str, int], Progress]
Notify = Callable[[str], None]
EXECUTORS = ("local", "ray")


# what a spec may change and still measure the same items, units and signals (an earlier session's manifest
# entries carry over): which configurations run, their order and when racing stops them
NOT_ITEMS = ("designs", "order", "early_stopping", "heldout_top_k", "fp32_top_k")


def _same_items(a: StudySpec, b: StudySpec) -> bool:
    """Whether two specs select items alike (models, slices, seed, scoring setup): a task both measure with the
    same budget then has the same items in both (`_task_items`). Dtypes may differ: a task's manifest entry
    (items, signals, selection) carries over into a spec that scores it in another dtype and stands until that
    task is walked again (its units, keyed by dtype, are not shared)."""
    ja, jb = json.loads(a.to_json()), json.loads(b.to_json())
    return all(ja.get(k) == jb.get(k) for k in {*ja, *jb} - {*NOT_ITEMS, "dtype", "tasks"})


def _task_items(spec: StudySpec) -> dict[str, dict]:
    """Each task's budget without its dtype: what selects its items."""
    return {t["name"]: {k: v for k, v in t.items() if k != "dtype"} for t in json.loads(spec.to_json())["tasks"]}


def study_candidates(spec: StudySpec, depth: int, task: str | None = None) -> list[Candidate]:
    """The candidates of the static designs (those that run on `task`, if given), without the base and
    duplicates (adaptive designs run later)."""
    out = [c for group in static_groups(spec, depth, task).values() for c in group]
    return designs.dedupe([c for c in out if c.plan != identity_plan(depth)])


def static_groups(spec: StudySpec, depth: int, task: str | None = None) -> dict[int, list[Candidate]]:
    """{index in spec.designs: its candidates} for the static designs (those that run on `task`, if given;
    checks their arguments against depth)."""
    return {
        n: designs.build(d.name, d.args, depth)
        for n, d in enumerate(spec.designs)
        if designs.get_design(d.name).is_static(d.args) and (task is None or d.runs_on(task))
    }


def layer_signals(spec: StudySpec, lm: LoadedModel, items: TaskItems) -> dict:
    """Per-layer block influence and angular distance of the base model on the first search slice."""
    rec = SignalRecorder(lm.model)
    score_docs(lm, items.search_slices[0], spec, hidden=rec, scoring="fast")
    return rec.result()


def _write_json(path: Path, obj) -> None:
    """Write atomically: a run killed mid-write leaves the old file, never half of a new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FrankenError(f"{path} cannot be read ({e}): use another --out") from None


def manifest_arithmetic(manifest: dict) -> str | None:
    """The arithmetic kind a run manifest's units were computed with: recorded, or for a CPU run from before
    kinds were recorded the historic kind; None for such a GPU run (unknown)."""
    if manifest.get("arithmetic"):
        return manifest["arithmetic"]
    return HISTORIC_CPU_KIND if manifest.get("device_type", "cpu") == "cpu" else None


def _depth_of(source: str) -> int | None:
    """A model's depth from its config, without loading weights (None when the config does not say)."""
    _, path, _ = resolve(source)
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    n = cfg.get("num_hidden_layers") or (cfg.get("text_config") or {}).get("num_hidden_layers")
    return int(n) if isinstance(n, int) else None


class StudyRun:
    """One run (or resumption) of a study into a run directory."""

    def __init__(
        self,
        spec: StudySpec,
        run_dir: Path,
        *,
        device: str = "cpu",
        store_path: Path | None = None,
        executor: str = "local",
        ray_options: dict | None = None,
        progress: ProgressFactory | None = None,
        notify: Notify | None = None,
        command: str = "",
        archives: list[Path] | None = None,
    ):
        self.spec, self.run_dir, self.device = spec, Path(run_dir), device
        self.store_path = Path(store_path) if store_path is not None else self.run_dir / "results.sqlite"
        self.executor, self.ray_options, self.command = executor, ray_options or {}, command
        self.progress, self._notify = progress, notify
        self.store: Store | None = None
        self.manifest: dict = {}
        self.archives = archive_paths(archives or [])
        self._models: dict[str, tuple[dict, dict[str, LayerPlan]]] = {}  # model -> (manifest entry, its plans)
        self.earlier: dict[str, dict] = {}  # model name -> its manifest entry from earlier sessions

    # ---------------------------------------------------------------------------------------- helpers
    def notify(self, message: str) -> None:
        logger.info(message)
        if self._notify is not None:
            self._notify(message)

    def bar(self, description: str, total: int) -> Progress | None:
        return self.progress(description, total) if self.progress is not None else None

    def make_executor(self, lm: LoadedModel, model: str, dtype: str):
        """The executor that scores `lm`'s units, with the batch size resolved once here (`auto`: from this
        device's free memory) and given to every worker, so all of them compute the arithmetic the units' keys
        name."""
        size = resolve_batch_size(self.spec.batch_size, lm.model, self.spec.context_length)
        if parse_batch_size(self.spec.batch_size) == AUTO:
            self.notify(f"{lm.name} ({dtype}): batch size {size} (auto, from free memory on {lm.model.device})")
        self.store.use_batch_size(lm.digest, dtype, size)
        self.manifest.setdefault("batch_sizes", {})[f"{lm.digest}/{dtype}"] = size
        spec = dataclasses.replace(self.spec, batch_size=size)
        if self.executor == "local":
            from frankenlm.study.executors import LocalExecutor

            return LocalExecutor(spec, lm, self.store, dtype)
        from frankenlm.study.executors import RayExecutor

        return RayExecutor(spec, model, self.store, dtype, device=self.device, **self.ray_options)

    # ---------------------------------------------------------------------------------------- checks
    def check(self) -> None:
        """Everything that can be refused without loading a model; writes nothing."""
        if self.executor not in EXECUTORS:
            raise FrankenError(f"unknown executor {self.executor!r}: use {' or '.join(EXECUTORS)}")
        self.spec.validate()
        # a study pairs every configuration with the base item by item, and bf16 numbers differ between a CPU
        # and a GPU: a run is resumed on the kind of device it started on
        self.device_type = parse_device(self.device).type
        spec_file = self.run_dir / "spec.json"
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise FrankenError(f"run directory {self.run_dir} is a file: give a directory for --out")
        if spec_file.exists():
            old = StudySpec.from_json(spec_file.read_text(), source=str(spec_file))
            if old.to_json() != self.spec.to_json():
                raise FrankenError(
                    f"{self.run_dir} holds a different study (preset {old.preset!r}, models "
                    f"{old.models}): use another --out or the same options"
                )
        for a in self.archives:  # a missing or foreign archive is refused before anything is written
            check_archive(a)
        # ... and its bf16 units on a machine of the kind they were computed on: CPUs with other matmul kernels
        # give other bf16 numbers (float32 ones are alike on every CPU: its float32 tasks run anywhere)
        self.machine_kind = self.arithmetic = arithmetic_kind(parse_device(self.device))
        manifest_file = self.run_dir / "manifest.json"
        where = f"{self.run_dir} was computed"
        if manifest_file.exists():
            old_manifest = _read_json(manifest_file)
            was = old_manifest.get("device_type", "cpu")
            if was != self.device_type:
                raise FrankenError(
                    f"{self.run_dir} was run on {was}: resume it on {was} (its stored numbers would "
                    f"be paired with numbers computed on {self.device_type}), or use another --out"
                )
            kinds = [manifest_arithmetic(old_manifest)]
        else:  # a new run directory continuing committed results: their kind
            kinds = [manifest_arithmetic(_read_json(f)) for f, _ in self._committed_manifests()]
            where = "the committed results this study continues were computed"
        kind = next((k for k in kinds if k is not None), None)
        self.arithmetic = kind or self.machine_kind
        self.kind_free = [
            t.name for t in self.spec.tasks if not depends_on_kind(self.spec.task_dtype(t.name), self.device_type)
        ]
        if self.arithmetic != self.machine_kind and not self.kind_free:
            raise FrankenError(
                f"{where} with {kind} arithmetic and this machine computes with {self.machine_kind}: "
                f"{self.spec.dtype} numbers differ between the two (a study pairs every configuration with the base "
                f"item by item). Continue on a {kind} machine, use another --out (without --import) to start over "
                'here, or score the remaining tasks in float32 (a task\'s "dtype"), which every CPU computes alike'
            )
        if self.store_path.exists():  # a store given that is not one: refuse now, not after loading a model
            self._open_store().close()
            self.store = None
        for m in self.spec.models:  # design arguments against each model's depth (e.g. a layer past the last)
            depth = _depth_of(m)
            if depth is not None:
                static_groups(self.spec, depth)
                probe = [designs.Candidate(repeat_layer_plan(0, depth), "repeat-layer", {"layer": 0, "repeats": 1})]
                for d in self.spec.designs:  # a derived design's own arguments (scales, branches, substeps)
                    if designs.get_design(d.name).derivable and "from" in d.args:
                        designs.build(d.name, d.args, depth, parents=probe)

    def _open_store(self) -> Store:
        self.store = Store.for_spec(self.store_path, self.spec, self.device_type, arithmetic=self.arithmetic)
        return self.store

    def begin(self) -> None:
        """The first write: the spec and the store (after every check and the first model's items)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._open_store()
        if self.archives:  # committed results of earlier sessions: their units are not computed again
            read, added = import_store(self.archives, self.store)
            self.notify(f"imported {added} of {read} stored units from {len(self.archives)} archive(s)")
        spec_file = self.run_dir / "spec.json"
        if not spec_file.exists():
            _write_json(spec_file, self.spec.to_json())
        self.earlier, sizes = self._earlier_models()
        self.manifest = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "models": dict(self.earlier),  # replaced model by model as this session reaches them
            "batch_sizes": sizes,
            "timings": {},
            "command": self.command,
            "store": str(self.store_path.resolve()),
            "executor": self.executor,
            "device_type": self.device_type,
            "arithmetic": self.arithmetic,
        }
        _write_json(self.run_dir / "manifest.json", self.manifest)

    def _earlier_models(self) -> tuple[dict[str, dict], dict[str, int]]:
        """The models' manifest entries (and batch sizes) that earlier sessions of this study recorded: the run
        directory's own manifest, and those of imported folders of committed results made on the same kind of
        device by a spec that measures the same items (`_same_items`: e.g. the same protocol with a design
        added; a task's entry is replaced when this session walks it, under this spec's designs). A session
        that stops before it reaches a model keeps that model's entry (tasks, configurations, signals), so its
        export never loses what earlier sessions committed."""
        # the committed manifests, then the run directory's own (the newest wins)
        sources = [*self._committed_manifests(), (self.run_dir / "manifest.json", self.spec)]
        models: dict[str, dict] = {}
        sizes: dict[str, int] = {}
        now = _task_items(self.spec)
        for f, spec in sources:
            if not f.is_file():
                continue
            m = _read_json(f)
            if m.get("device_type", "cpu") == self.device_type and manifest_arithmetic(m) == self.arithmetic:
                was = _task_items(spec)  # a task measured on other items here starts afresh
                for name, info in (m.get("models") or {}).items():
                    tasks = {t: e for t, e in (info.get("tasks") or {}).items() if t in now and was.get(t) == now[t]}
                    models[name] = {**info, "tasks": tasks}
                sizes.update(m.get("batch_sizes") or {})
        return models, sizes

    def _committed_manifests(self) -> list[tuple[Path, StudySpec]]:
        """The manifests (with their specs) of the imported folders of committed results whose spec selects items
        alike (`_same_items`)."""
        out = []
        for folder in dict.fromkeys(p.parent for p in self.archives):
            try:
                spec = StudySpec.from_json((folder / "spec.json").read_text())
            except (OSError, FrankenError):
                continue
            if _same_items(spec, self.spec) and (folder / "manifest.json").is_file():
                out.append((folder / "manifest.json", spec))
        return out

    def _carry_over(self, lm: LoadedModel, info: dict, plans: dict[str, LayerPlan]) -> None:
        """Start `lm`'s entry from an earlier session's (same weights): its tasks (each replaced when this
        session runs it) and the configurations its derived designs added."""
        old = self.earlier.get(lm.name)
        if not old or old.get("digest") != lm.digest:
            return
        info["tasks"] = dict(old.get("tasks") or {})
        known = {c["plan"] for c in info["configs"]}
        for c in old.get("configs") or []:
            if c["plan"] not in known and c["plan"] in (old.get("costs") or {}):
                info["configs"].append(c)
                info["costs"][c["plan"]] = old["costs"][c["plan"]]
                plans[c["plan"]] = coerce_plan(c["plan"])
                known.add(c["plan"])

    # ---------------------------------------------------------------------------------------- the run
    def run(self) -> Path:
        """Run (or resume) the study; returns the run directory (results.csv, study.json written)."""
        self.check()
        if self.arithmetic != self.machine_kind:
            self.notify(
                f"this run's {self.spec.dtype} units were computed with {self.arithmetic} arithmetic: this machine "
                f"({self.machine_kind}) computes only its float32 tasks ({', '.join(self.kind_free)}) and skips a "
                f"task that still misses {self.spec.dtype} units"
            )
        elif (
            "bfloat16" in {self.spec.task_dtype(t.name) for t in self.spec.tasks} and self.arithmetic in SLOW_BF16_KINDS
        ):
            self.notify(
                f"this CPU ({self.arithmetic}) has no bf16 matrix instructions: bf16 runs ~6x slower than float32 "
                "here (see frankenlm.model.arithmetic); a float32 spec is faster on this machine"
            )
        t_all = time.perf_counter()
        try:
            if self.spec.order == "tasks":  # every model through a task (and its fp32 re-check) before the next
                for budget in self.spec.tasks:
                    for model in self.spec.models:
                        self.run_model(model, [budget], fp32=False)
                    for model in self.spec.models:
                        self.run_fp32(model, [budget.name])
            else:
                for model in self.spec.models:
                    self.run_model(model)
            self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            self.manifest["timings"]["total"] = time.perf_counter() - t_all
            _write_json(self.run_dir / "manifest.json", self.manifest)
            analysis.write_results(self.run_dir, self.store)
        finally:
            if self.store is not None:
                self.store.close()
        return self.run_dir

    def run_model(self, model: str, budgets: list | None = None, fp32: bool = True) -> None:
        """Run `model` on `budgets` (default: every task of the spec), then (`fp32`) its fp32 re-check. Called
        once per task under `order: tasks`: the model's manifest entry and configurations carry over."""
        spec = self.spec
        budgets = spec.tasks if budgets is None else budgets
        t0 = time.perf_counter()
        by_dtype: dict[str, list] = {}  # the tasks in each dtype (a task may name its own), in the spec's order
        for b in budgets:
            by_dtype.setdefault(spec.task_dtype(b.name), []).append(b)
        lm = load_model(model, dtype=next(iter(by_dtype)), device=self.device)
        cands = study_candidates(spec, lm.depth)  # of every task: the model's configurations
        items = {b.name: select_items(b, lm.tokenizer, spec.slices, spec.seed) for b in budgets}
        if self.store is None:
            self.begin()
        if model in self._models:
            info, plans = self._models[model]
        else:
            base = designs.base_candidate(lm.depth)
            info = {
                "name": lm.name,
                "digest": lm.digest,
                "depth": lm.depth,
                "params": int(sum(p.numel() for p in lm.model.parameters())),
                "configs": [c.manifest_entry() for c in cands],
                "costs": {
                    c.text: plan_costs(lm.model, c.plan, context=spec.context_length).as_dict() for c in [base, *cands]
                },
                "tasks": {},
            }
            plans = {c.text: c.plan for c in [base, *cands]}
            self._carry_over(lm, info, plans)
            self._models[model] = info, plans
        for n, (dtype, group) in enumerate(by_dtype.items()):
            if n:
                del lm
                lm = load_model(model, dtype=dtype, device=self.device)
            ex = self.make_executor(lm, model, dtype)
            info["batch_size"] = self.manifest["batch_sizes"][f"{lm.digest}/{dtype}"]
            try:
                for budget in group:
                    before = info["tasks"].get(budget.name)
                    try:
                        self.run_task(lm, ex, items[budget.name], info, plans)
                    except OtherArithmetic as e:  # its units need another machine: the others go on here
                        if before is None:
                            info["tasks"].pop(budget.name, None)
                        else:
                            info["tasks"][budget.name] = before
                        self.notify(f"{lm.name} · {budget.name}: skipped, it needs units this machine cannot add ({e})")
            finally:
                ex.close()
        self.manifest["models"][lm.name] = info
        timings = self.manifest["timings"]
        timings[f"{lm.name}/search+heldout"] = timings.get(f"{lm.name}/search+heldout", 0.0) + time.perf_counter() - t0
        self.manifest["worker_restarts"] = self.manifest.get("worker_restarts", 0) + getattr(ex, "restarts", 0)
        _write_json(self.run_dir / "manifest.json", self.manifest)
        del ex
        if fp32:
            del lm
            self.run_fp32(model)

    def run_fp32(self, model: str, tasks: list[str] | None = None) -> None:
        """The fp32 re-check of `model`'s top configurations on `tasks` (default: every task; after they ran)."""
        tasks = [b.name for b in self.spec.tasks if tasks is None or b.name in tasks]
        tasks = [t for t in tasks if self.spec.task_dtype(t) != "float32"]  # a float32 task needs no re-check
        if not self.spec.fp32_top_k or not tasks or model not in self._models:
            return
        t0 = time.perf_counter()
        self.fp32_recheck(model, *self._models[model], tasks=tasks)
        timings = self.manifest["timings"]
        timings[f"{model}/fp32"] = timings.get(f"{model}/fp32", 0.0) + time.perf_counter() - t0

    def run_task(
        self,
        lm: LoadedModel,
        ex,
        items: TaskItems,
        info: dict,
        plans: dict[str, LayerPlan],
    ) -> None:
        spec, task = self.spec, items.task
        dtype = spec.task_dtype(task)
        where = f"{lm.name} · {task}"
        before = info["tasks"].get(task) or {}
        info["tasks"][task] = t = {
            "primary": items.primary,
            "higher_is_better": items.higher_is_better,
            "slices": [[d.item_id for d in s] for s in items.search_slices],
            "heldout": [d.item_id for d in items.heldout],
            "search_tokens": items.search_tokens,
        }
        if before.get("slices") != t["slices"]:
            before = {}  # an earlier session's record of other items: nothing of it carries over
        # the earlier signals and selection stand until this walk replaces them (a session stopped inside
        # the task must not export a task without one)
        t.update({k: before[k] for k in ("signals", "heldout_plans", "fp32_plans") if k in before})
        _write_json(
            self.run_dir / "manifest.json", {**self.manifest, "models": {**self.manifest["models"], lm.name: info}}
        )
        # the static designs that run on this task (a design may name its tasks)
        groups, cands = static_groups(spec, lm.depth, task), study_candidates(spec, lm.depth, task)
        # the bar advances once per unit (plan x slice); racing makes this total an upper bound
        seen = self._raced(lm, ex, items, cands, f"{where} · search")
        # the base model's per-layer signals on the first slice: the same items give the same signals
        t["signals"] = signals = before.get("signals") or layer_signals(spec, lm, items)
        pool = {n: groups[n] for n in groups}  # candidates of each design, by position in spec.designs
        adaptive_seen: dict[LayerPlan, int] = {}
        for n, d in enumerate(spec.designs):
            if n in groups or not d.runs_on(task):
                continue
            if d.name == "search":
                self.notify(f"{where}: greedy search guided by {d.args.get('signal', 'block_influence')}")
                found, got = greedy_search(
                    spec,
                    lm,
                    items,
                    self.store,
                    ex,
                    d.args,
                    signals,
                    progress_for=lambda step, units: self.bar(f"{where} · greedy search step {step}", units),
                )
            else:
                if designs.get_design(d.name).cross_task:
                    top = self._selected_on(info, plans, task, d.args["from_task"], int(d.args.get("top", 3)))
                    other = d.args["from_task"]
                    self.notify(
                        f"{where}: the {len(top)} configurations {other} selected"
                        if top
                        else f"{where}: {other} has selected nothing for this model yet"
                    )
                else:
                    src = max(k for k, e in enumerate(spec.designs[:n]) if e.name == d.args["from"])
                    top = best_of(
                        self.store,
                        lm,
                        items,
                        dtype,
                        {**adaptive_seen, **seen},
                        pool.get(src, []),
                        int(d.args.get("top", 3)),
                    )
                    self.notify(f"{where}: {d.name} variants of the best {len(top)} of {d.args['from']}")
                found, got = derived_design(
                    spec,
                    lm,
                    items,
                    self.store,
                    ex,
                    d.name,
                    d.args,
                    top,
                    # plans already raced on this task (not those of other tasks or sessions: each task races
                    # its own variants, and a carried-over configuration is raced again from its stored units)
                    {str(designs.base_candidate(lm.depth).plan), *map(str, {**adaptive_seen, **seen})},
                    progress=lambda units, name=d.name: self.bar(f"{where} · {name}", units),
                )
            pool[n] = found
            adaptive_seen.update(got)
            self._add_configs(lm, info, plans, found)
        seen = {**adaptive_seen, **seen}  # a static candidate keeps its own sweep's count
        # rank on search items; re-measure the top on held-out items
        ranked = analysis.rank_search(
            self.store, lm.digest, dtype, items, {str(p): k for p, k in seen.items()}, lm.depth
        )
        top = ranked[: spec.heldout_top_k]
        self.notify(f"{where}: held-out check of the top {len(top)}")
        self._run_units(
            ex,
            f"{where} · held-out",
            len(top) + 1,
            lambda: ex.run_slice(task, items.heldout, [plans[p] for p in top], reuse=True),
        )
        t["heldout_plans"] = top
        t["fp32_plans"] = [] if dtype == "float32" else top[: spec.fp32_top_k]

    @staticmethod
    def _selected_on(info: dict, plans: dict[str, LayerPlan], task: str, other: str, k: int) -> list[Candidate]:
        """The k configurations task `other` selected for this model (its held-out-checked top, best first);
        none while `other` has not run for the model (a later session's walk through `task` adds them)."""
        chosen = [] if other == task else (info["tasks"].get(other) or {}).get("heldout_plans") or []
        return [designs.Candidate(plans[p], "selected") for p in chosen[:k] if p in plans]

    def _raced(self, lm, ex, items: TaskItems, cands: list[Candidate], description: str) -> dict[LayerPlan, int]:
        bar = self.bar(description, (len(cands) + 1) * self.spec.slices)
        ex.set_progress(bar)
        try:
            return race(self.spec, lm, items, cands, self.store, executor=ex)
        finally:
            ex.set_progress(None)
            if bar:
                bar(None, -1)

    def _run_units(self, ex, description: str, total: int, work: Callable[[], None]) -> None:
        bar = self.bar(description, total)
        ex.set_progress(bar)
        try:
            work()
        finally:
            ex.set_progress(None)
            if bar:
                bar(None, -1)

    def _add_configs(self, lm: LoadedModel, info: dict, plans: dict[str, LayerPlan], found: list[Candidate]) -> None:
        known = {c["plan"] for c in info["configs"]}
        for c in found:
            info["costs"].setdefault(c.text, plan_costs(lm.model, c.plan, context=self.spec.context_length).as_dict())
            plans.setdefault(c.text, c.plan)
            if c.text not in known:
                info["configs"].append(c.manifest_entry())
                known.add(c.text)

    def fp32_recheck(self, model: str, info: dict, plans: dict[str, LayerPlan], tasks: list[str] | None = None) -> None:
        """Re-score the top configurations of `tasks` (default: every task) in fp32 on the search items."""
        spec = self.spec
        lm32 = load_model(model, dtype="float32", device=self.device)
        ex32 = self.make_executor(lm32, model, "float32")
        try:
            for budget in (b for b in spec.tasks if tasks is None or b.name in tasks):
                top = info["tasks"][budget.name]["fp32_plans"]
                items = select_items(budget, lm32.tokenizer, spec.slices, spec.seed)
                self.notify(f"{lm32.name} · {budget.name}: fp32 re-check of the top {len(top)}")

                def work(items=items, top=top):
                    for docs in items.search_slices:
                        ex32.run_slice(items.task, docs, [plans[p] for p in top], reuse=True)

                self._run_units(
                    ex32,
                    f"{lm32.name} · {budget.name} · fp32 re-check",
                    (len(top) + 1) * len(items.search_slices),
                    work,
                )
        finally:
            ex32.close()
        self.manifest["worker_restarts"] = self.manifest.get("worker_restarts", 0) + getattr(ex32, "restarts", 0)


def run_study(
    spec: StudySpec,
    run_dir: Path,
    *,
    device: str = "cpu",
    store_path: Path | None = None,
    progress: ProgressFactory | None = None,
    notify: Notify | None = None,
    command: str = "",
    executor: str = "local",
    ray_options: dict | None = None,
    archives: list[Path] | None = None,
) -> Path:
    """Run (or resume) a study into `run_dir`; returns it (report: frankenlm.report.page.write_report).

    `executor` is "local" (this process) or "ray" (`ray_options`: address, workers, threads, gpus, chunk).
    `archives`: store exports (`frankenlm.study.archive`) imported into the store first, so that their units are
    not computed again (a run continued on another machine from committed results).
    """
    return StudyRun(
        spec,
        run_dir,
        device=device,
        store_path=store_path,
        executor=executor,
        ray_options=ray_options,
        progress=progress,
        notify=notify,
        command=command,
        archives=archives,
    ).run()


RUN_FILES = ("spec.json", "manifest.json")  # what, beside its store, a run directory needs to be analysed


def rewrite_results(run_dir: Path) -> Path:
    """Recompute the results table from the store (no model is loaded); returns the run directory."""
    run_dir = Path(run_dir)
    for f in RUN_FILES:
        if not (run_dir / f).exists():
            raise FrankenError(f"{run_dir} is not a study run directory: {f} is missing")
    spec = StudySpec.from_json((run_dir / "spec.json").read_text(), source=str(run_dir / "spec.json"))
    manifest = _read_json(run_dir / "manifest.json")
    path = Path(manifest.get("store") or run_dir / "results.sqlite")
    if not path.exists() and (run_dir / "results.sqlite").exists():  # moved or rebuilt from an archive
        path = run_dir / "results.sqlite"
    if not path.exists():
        raise FrankenError(f"the results store of {run_dir} ({path}) does not exist")
    store = Store.for_spec(
        path, spec, manifest.get("device_type", "cpu"), manifest.get("batch_sizes"), manifest_arithmetic(manifest)
    )
    try:
        analysis.write_results(run_dir, store)
    finally:
        store.close()
    return run_dir


def is_committed_results(path: Path) -> bool:
    """A directory of committed results: a run's spec.json and manifest.json beside store exports (*.parquet),
    with no store of its own (what `frankenlm store export --with-manifest` writes)."""
    path = Path(path)
    return (
        path.is_dir()
        and all((path / f).is_file() for f in RUN_FILES)
        and not (path / "results.sqlite").exists()
        and any(path.glob("*.parquet"))
    )


def rebuild_run(results_dir: Path, run_dir: Path) -> Path:
    """A run directory rebuilt from committed results (no model is loaded): the spec and manifest copied, every
    archive imported into a new store, the results table recomputed. Returns `run_dir`."""
    results_dir, run_dir = Path(results_dir), Path(run_dir)
    if not is_committed_results(results_dir):
        raise FrankenError(
            f"{str(results_dir)!r} is not a directory of committed results (spec.json, manifest.json and "
            "results-*.parquet, as `frankenlm store export RUN --with-manifest` writes)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in RUN_FILES:
        shutil.copyfile(results_dir / f, run_dir / f)
    manifest = _read_json(run_dir / "manifest.json")
    manifest["store"] = str(run_dir / "results.sqlite")
    _write_json(run_dir / "manifest.json", manifest)
    import_store([results_dir], run_dir / "results.sqlite")  # a folder stands for its archives
    return rewrite_results(run_dir)
