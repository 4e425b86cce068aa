"""The study engine: sweeps over layer plans with prefix reuse, early stopping, a resumable store and held-out
confirmation.

Work is cut into units — one plan scored on one slice of one task's items — each written to the store in one
transaction. Per slice, the base model runs once (recording the hidden states each plan needs), then every live
plan runs only the layers after its first change. After each slice but the last, plans whose paired intervals
show them clearly worse than the base and than the k-th best plan so far stop (racing), so racing cannot change
the top k; stopped plans keep the estimate from the slices they saw. Plans
are ranked on the search items only; the top ones are re-measured on held-out items and re-checked in fp32.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from frankenlm.study import analysis
from frankenlm.study import designs
from frankenlm.eval.batching import AUTO, parse_batch_size, resolve_batch_size
from frankenlm.model.costs import plan_costs
from frankenlm.study.designs import Config
from frankenlm.errors import FrankenError
from frankenlm.model.loading import LoadedModel, load_model, parse_device
from frankenlm.study.spec import DesignSpec, StudySpec, TaskBudget
from frankenlm.study.prefix_cache import PrefixCache, base_prefix_length, plain_forward
from frankenlm.study.store import Store, Unit, item_set_digest
from frankenlm.eval.tasks import get_task
from frankenlm.eval.tasks.base import Doc

Progress = Callable[[str, int], None]  # (description, units done) callback


# ------------------------------------------------------------------------------------------- item selection


@dataclass
class TaskItems:
    task: str
    primary: str
    higher_is_better: bool
    search_slices: list[list[Doc]]
    heldout: list[Doc]
    search_tokens: int

    @property
    def search(self) -> list[Doc]:
        return [d for s in self.search_slices for d in s]


def _doc_tokens(doc: Doc, tokenizer) -> int:
    text = getattr(doc.requests[0], "text", None)
    if text is None:
        r = doc.requests[0]
        text = getattr(r, "context", "") + getattr(r, "continuation", "")
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _take(docs: list[Doc], tokenizer, tokens: int | None, items: int | None) -> tuple[list[Doc], int]:
    if items is not None:
        chosen = docs[:items]
        return chosen, sum(_doc_tokens(d, tokenizer) for d in chosen)
    out, total = [], 0
    for d in docs:
        if tokens is not None and total >= tokens:
            break
        out.append(d)
        total += _doc_tokens(d, tokenizer)
    return out, total


def _shuffled(docs: list[Doc], seed: int) -> list[Doc]:
    order = np.random.default_rng(seed).permutation(len(docs))
    return [docs[i] for i in order]


def select_items(budget: TaskBudget, tokenizer, slices: int, seed: int) -> TaskItems:
    task = get_task(budget.name)
    primary, hib = analysis.primary_metric(task)
    search = _shuffled(task.load_docs(split="search"), seed)
    heldout = _shuffled(task.load_docs(split="heldout"), seed)
    search, ntok = _take(search, tokenizer, budget.search_tokens, budget.search_items)
    heldout, _ = _take(heldout, tokenizer, budget.heldout_tokens, budget.heldout_items)
    if len(search) < slices:
        raise FrankenError(f"task {budget.name}: {len(search)} search items cannot fill {slices} slices")
    parts = [list(p) for p in np.array_split(np.arange(len(search)), slices)]
    return TaskItems(budget.name, primary, hib, [[search[i] for i in p] for p in parts], heldout, ntok)


# ------------------------------------------------------------------------------------------- configs


def _design_configs(d: DesignSpec, depth: int, custom_path: str | None = None) -> list[Config]:
    a = dict(d.args)
    if "fraction_every" in a:  # sizes preset: the same normalised positions at every depth
        a["every"] = max(1, round(depth * a.pop("fraction_every")))
    if "fraction_stride" in a:
        a["stride"] = max(1, round(depth * a.pop("fraction_stride")))
    if d.name == "repeat-layer":
        return designs.repeat_layer(depth, **a)
    if d.name == "repeat-block":
        return designs.repeat_block(depth, **a)
    if d.name == "sublayer":
        return designs.sublayer(depth, **a)
    if d.name == "custom":
        return designs.custom(a["path"], depth)
    raise FrankenError(f"unknown design {d.name!r}: use repeat-layer, repeat-block, sublayer, search or custom")


def study_configs(spec: StudySpec, depth: int) -> list[Config]:
    """The configurations of the static designs (the adaptive `search` design runs after them)."""
    out: list[Config] = []
    for d in spec.designs:
        if d.name != "search":
            out.extend(_design_configs(d, depth))
    return designs.dedupe([c for c in out if c.text != str(designs.base_config(depth).plan)])


# ------------------------------------------------------------------------------------------- scoring


def score_docs(lm: LoadedModel, docs: list[Doc], forward, spec: StudySpec) -> list[dict]:
    """Per-item results of `docs` (all of one task) with model calls going through `forward`."""
    from frankenlm.eval.evaluator import Scorer, run_task

    scorer = Scorer(lm.model, lm.tokenizer, batch_size=spec.batch_size, max_length=spec.context_length,
                    forward=forward)
    _, items = run_task(scorer, get_task(docs[0].task), docs)
    return [{"item_id": r.item_id, "metrics": r.metrics, "extras": r.extras} for r in items]


class SliceScorer:
    """Scores plans on one slice of items with prefix reuse. Model-resident; knows nothing of the store.

    `prepare(docs, plans)` runs the base model once over the slice (keeping the hidden states the plans will
    reuse) and returns the base's per-item results; `score(plan)` then runs only the plan's changed suffix.
    """

    def __init__(self, spec: StudySpec, lm: LoadedModel, reuse: bool = True):
        self.spec, self.lm, self.reuse = spec, lm, reuse
        self.base_text = str(designs.base_config(lm.depth).plan)
        self.key: str | None = None
        self.docs: list[Doc] = []
        self.cache: PrefixCache | None = None
        self.base_items: list[dict] = []
        self.base_seconds = 0.0

    @staticmethod
    def slice_key(docs: list[Doc]) -> str:
        return item_set_digest(docs[0].task, [d.item_id for d in docs]) if docs else ""

    @staticmethod
    def prefix_of(plan: str, base_text: str) -> int:
        from frankenlm.model.plan import parse_plan

        return 0 if plan == base_text else base_prefix_length(parse_plan(plan))

    def prefix(self, plan: str) -> int:
        return self.prefix_of(plan, self.base_text)

    def prepare(self, docs: list[Doc], plans: list[str]) -> list[dict]:
        """Base pass over `docs`, keeping the states `plans` need; a no-op when this slice is already prepared."""
        key = self.slice_key(docs)
        if key == self.key:
            return self.base_items
        need = {self.prefix(p) for p in plans if p != self.base_text}
        self.cache = PrefixCache(self.lm.model, need) if self.reuse else None
        fwd = self.cache.base_forward if self.cache is not None else plain_forward(self.lm.model)
        t0 = time.perf_counter()
        self.base_items = score_docs(self.lm, docs, fwd, self.spec)
        self.base_seconds = time.perf_counter() - t0
        self.key, self.docs = key, docs
        return self.base_items

    def score(self, plan: str, remaining: list[str] | None = None) -> tuple[list[dict], dict]:
        """Per-item results of `plan` on the prepared slice, and timing metadata. `remaining` (plans still to
        score on this slice) lets the cache free hidden states no one needs any more."""
        from frankenlm.model.frankenmodel import build_frankenmodel
        from frankenlm.model.plan import parse_plan

        if plan == self.base_text:
            return self.base_items, {"seconds": self.base_seconds, "prefix_reused": 0}
        t0 = time.perf_counter()
        if self.cache is not None:
            fwd, k = self.cache.forward_for(parse_plan(plan))
        else:
            fwd, k = plain_forward(build_frankenmodel(self.lm.model, parse_plan(plan))), 0
        items = score_docs(self.lm, self.docs, fwd, self.spec)
        if self.cache is not None and remaining is not None:
            self.cache.drop_boundaries({self.prefix(q) for q in remaining if q != self.base_text})
        return items, {"seconds": time.perf_counter() - t0, "prefix_reused": k}

    def order(self, plans: list[str]) -> list[str]:
        """Base first, then plans sharing the longest base prefix (their states are freed as the sweep goes)."""
        return sorted(dict.fromkeys(plans), key=lambda p: (p != self.base_text, -self.prefix(p)))


class Sweep:
    """Runs the units of one model, in-process, against a store (claims keep concurrent processes apart)."""

    def __init__(self, spec: StudySpec, lm: LoadedModel, store: Store, dtype: str, progress: Progress | None = None):
        self.spec, self.lm, self.store, self.dtype = spec, lm, store, dtype
        self.progress = progress or (lambda desc, n: None)
        self.computed = 0  # units this process computed
        self.scorers: dict[bool, SliceScorer] = {}

    def unit(self, plan: str, task: str, docs: list[Doc]) -> Unit:
        return Unit(self.lm.digest, plan, task, item_set_digest(task, [d.item_id for d in docs]), self.dtype)

    def run_slice(self, task: str, docs: list[Doc], plans: list[str], *, reuse: bool = True) -> None:
        """Score `plans` (and the base) on `docs`, skipping stored units; base first, then by shared prefix."""
        scorer = self.scorers.setdefault(reuse, SliceScorer(self.spec, self.lm, reuse))
        todo = [p for p in scorer.order([scorer.base_text, *plans]) if not self.store.has(self.unit(p, task, docs))]
        if not todo:
            return
        scorer.key = None  # a fresh base pass: the slice's hidden states are not kept between calls
        scorer.prepare(docs, todo)
        for n, p in enumerate(todo):
            u = self.unit(p, task, docs)
            if not self.store.claim(u):
                continue
            try:
                items, meta = scorer.score(p, remaining=todo[n + 1 :])
            except BaseException:
                self.store.release(u)
                raise
            self._put(u, items, meta)
        scorer.key, scorer.cache = None, None  # free the states

    def _put(self, u: Unit, items: list[dict], meta: dict) -> None:
        self.store.put(u, items, meta)
        self.computed += 1
        self.progress(f"{u.task} {u.plan}", 1)

    def wait_for(self, units: Iterable[Unit], poll: float = 2.0) -> None:
        """Block until other processes finish the given units (or their claims lapse: then compute them here)."""
        units = list(units)
        while True:
            missing = [u for u in units if not self.store.has(u)]
            if not missing:
                return
            if not any(self.store.claimed_by_others(u) for u in missing):
                return  # nobody works on them: the caller computes what is missing
            time.sleep(poll)


# ------------------------------------------------------------------------------------------- the study


def run_sweep(
    spec: StudySpec,
    lm: LoadedModel,
    items: TaskItems,
    configs: list[Config],
    store: Store,
    progress: Progress | None = None,
    reuse: bool = True,
    early_stopping: bool = True,
    executor=None,
) -> dict[str, int]:
    """Search phase for one model and task. Returns {plan: slices seen} (fewer than all = stopped early).

    Units run on `executor` (default: this process); decisions (racing) are taken here from the store.
    """
    sweep = Sweep(spec, lm, store, spec.dtype, progress)
    run = executor.run_slice if executor is not None else sweep.run_slice
    base_text = str(designs.base_config(lm.depth).plan)
    alive = [c.text for c in configs]
    seen: dict[str, int] = {p: 0 for p in alive}
    es = spec.early_stopping if early_stopping else None
    n = len(items.search_slices)
    for s, docs in enumerate(items.search_slices):
        for _ in range(2):  # second round picks up units whose claims lapsed while we waited
            run(items.task, docs, alive, reuse=reuse)
            sweep.wait_for(sweep.unit(p, items.task, docs) for p in [base_text, *alive])
        for p in alive:
            seen[p] = s + 1
        looked = sum(len(x) for x in items.search_slices[: s + 1])
        if es is not None and alive and s + 1 < n and s + 1 >= es.min_slices and looked >= es.min_items:
            base_items = _collect(sweep, base_text, items, s + 1)
            seen_items = {p: _collect(sweep, p, items, s + 1) for p in alive}
            cmps = {p: analysis.compare(items.task, items.primary, items.higher_is_better, base_items,
                                        seen_items[p], level=es.level, n_resamples=1000) for p in alive}
            # the current leaders always run the full budget: the report ranks and re-measures them
            ranked = sorted(alive, key=lambda p: (-cmps[p]["gain"], p))
            leaders = set(ranked[: spec.heldout_top_k])
            kth = ranked[min(spec.heldout_top_k, len(ranked)) - 1]
            keep = []
            for p in alive:
                if p in leaders or not cmps[p]["ci_high"] < 0:
                    keep.append(p)
                    continue
                # clearly worse than the base; drop it only if it is also clearly worse than the k-th leader,
                # so that racing cannot change which configurations make the top k
                vs_kth = analysis.compare(items.task, items.primary, items.higher_is_better, seen_items[kth],
                                          seen_items[p], level=es.level, n_resamples=1000)
                if not vs_kth["ci_high"] < 0:
                    keep.append(p)
            alive = keep
    return seen


def layer_signals(spec: StudySpec, lm: LoadedModel, items: TaskItems) -> dict:
    """Per-layer block influence and angular distance of the base model on the first search slice."""
    from frankenlm.study.signals import SignalRecorder

    rec = SignalRecorder(lm.model)
    score_docs(lm, items.search_slices[0], rec, spec)
    return rec.result()


def run_search(
    spec: StudySpec,
    lm: LoadedModel,
    items: TaskItems,
    store: Store,
    executor,
    args: dict,
    signals: dict,
) -> tuple[list[Config], dict[str, int]]:
    """Greedy composition guided by a per-layer signal.

    Candidates are the `candidates` layers with the lowest signal (default: block influence — the layers that
    change the residual stream least). Step 1 measures one extra copy of each; every later step adds one more
    candidate's copy to the best plan so far, and the search stops when no addition beats it on the search
    items (or after `steps` steps). Selection uses the search items only; the held-out check comes after.
    """
    from frankenlm.model.plan import LayerPlan, LayerRef, parse_plan, repeat_layer_plan

    signal = signals[args.get("signal", "block_influence")]
    k = int(args.get("candidates", 6))
    steps = int(args.get("steps", 3))
    cands = sorted(range(lm.depth), key=lambda layer: (signal[layer], layer))[:k]
    sweep = Sweep(spec, lm, store, spec.dtype)
    base_text = str(designs.base_config(lm.depth).plan)
    all_configs: list[Config] = []
    seen_all: dict[str, int] = {}

    def gain_of(plan: str) -> float:
        base = _collect(sweep, base_text, items, len(items.search_slices))
        cfg = _collect(sweep, plan, items, len(items.search_slices))
        return analysis.point_gain(items.task, items.primary, items.higher_is_better, base, cfg)

    def insert_after_last(plan: LayerPlan, layer: int) -> LayerPlan:
        refs = list(plan.refs)
        last = max(i for i, r in enumerate(refs) if r.layer == layer and r.source is None)
        return LayerPlan(tuple(refs[: last + 1] + [LayerRef(layer)] + refs[last + 1 :]))

    current, current_gain, used = None, 0.0, []
    for step in range(1, steps + 1):
        if current is None:
            round_ = [Config(repeat_layer_plan(c, lm.depth), "search", {"step": 1, "layer": c, "repeats": 1,
                                                                          "layers": [c]}) for c in cands]
        else:
            round_ = [Config(insert_after_last(parse_plan(current), c), "search",
                             {"step": step, "layers": [*used, c]}) for c in cands if c not in used]
        if not round_:
            break
        all_configs.extend(round_)
        seen = run_sweep(spec, lm, items, round_, store, executor=executor)
        seen_all.update(seen)
        full = [c for c in round_ if seen[c.text] == len(items.search_slices)]
        if not full:
            break
        best = max(full, key=lambda c: (gain_of(c.text), c.text))
        g = gain_of(best.text)
        if current is not None and g <= current_gain:
            break
        current, current_gain, used = best.text, g, list(best.params["layers"])
    return all_configs, seen_all


def _collect(sweep: Sweep, plan: str, items: TaskItems, n_slices: int) -> list[dict]:
    out: list[dict] = []
    for docs in items.search_slices[:n_slices]:
        got = sweep.store.get(sweep.unit(plan, items.task, docs))
        if got is None:
            raise RuntimeError(f"unit missing from store: {plan} on {items.task}")
        out.extend(got)
    return out


def run_study(
    spec: StudySpec,
    run_dir: Path,
    *,
    device: str = "cpu",
    store_path: Path | None = None,
    progress_factory=None,
    log: Callable[[str], None] = print,
    command: str = "",
    executor: str = "local",
    ray_options: dict | None = None,
) -> Path:
    """Run (or resume) a study into `run_dir` and write its report. Returns the report path.

    `executor` is "local" (this process) or "ray" (`ray_options`: address, workers, threads, gpus).
    """
    if executor not in ("local", "ray"):
        raise FrankenError(f"unknown executor {executor!r}: use local or ray")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = run_dir / "spec.json"
    if spec_file.exists():
        old = StudySpec.from_json(spec_file.read_text())
        if old.to_json() != spec.to_json():
            raise FrankenError(
                f"{run_dir} holds a different study (preset {old.preset!r}, models {old.models}): "
                "use another --out or the same options"
            )
    else:
        spec_file.write_text(spec.to_json())
    # a study pairs every configuration with the base item by item, and bf16 numbers differ between a CPU and
    # a GPU: a run is resumed on the kind of device it started on
    device_type = parse_device(device).type
    manifest_file = run_dir / "manifest.json"
    if manifest_file.exists():
        was = json.loads(manifest_file.read_text()).get("device_type", "cpu")
        if was != device_type:
            raise FrankenError(f"{run_dir} was run on {was}: resume it on {was} (its stored numbers would be "
                               f"paired with numbers computed on {device_type}), or use another --out")
    store = Store(store_path or run_dir / "results.sqlite")
    manifest: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": {}, "timings": {}, "command": command,
                      "store": str(Path(store.path).resolve()), "executor": executor, "device_type": device_type}

    def make_executor(lm: LoadedModel, model_name: str, dtype: str):
        if executor == "local":
            from frankenlm.study.executors import LocalExecutor

            return LocalExecutor(spec, lm, store, dtype)
        from frankenlm.study.executors import RayExecutor

        return RayExecutor(spec, model_name, store, dtype, device=device, **(ray_options or {}))

    t_all = time.perf_counter()
    for model_name in spec.models:
        t0 = time.perf_counter()
        lm = load_model(model_name, dtype=spec.dtype, device=device)
        depth = lm.depth
        configs = study_configs(spec, depth)
        ex = make_executor(lm, model_name, spec.dtype)
        batch_size = resolve_batch_size(spec.batch_size, lm.model, spec.context_length)
        if parse_batch_size(spec.batch_size) == AUTO:
            log(f"{lm.name}: batch size {batch_size} (auto, from free memory on {lm.model.device})")
        model_info = {
            "name": lm.name,
            "digest": lm.digest,
            "depth": depth,
            "batch_size": batch_size,
            "params": int(sum(p.numel() for p in lm.model.parameters())),
            "configs": [{"plan": c.text, "design": c.design, **c.params} for c in configs],
            "costs": {
                c.text: plan_costs(lm.model, c.plan, context=spec.context_length).as_dict()
                for c in [designs.base_config(depth), *configs]
            },
            "tasks": {},
        }
        for budget in spec.tasks:
            items = select_items(budget, lm.tokenizer, spec.slices, spec.seed)
            model_info["tasks"][budget.name] = {
                "primary": items.primary,
                "higher_is_better": items.higher_is_better,
                "slices": [[d.item_id for d in s] for s in items.search_slices],
                "heldout": [d.item_id for d in items.heldout],
                "search_tokens": items.search_tokens,
            }
            (run_dir / "manifest.json").write_text(json.dumps({**manifest, "models": {**manifest["models"],
                                                                                      lm.name: model_info}}))
            # the bar advances once per unit (plan x slice); racing makes this total an upper bound
            units = (len(configs) + 1) * spec.slices
            bar = progress_factory(f"{lm.name} · {budget.name} · search", units) if progress_factory else None
            ex.set_progress(bar)
            seen = run_sweep(spec, lm, items, configs, store, executor=ex)
            ex.set_progress(None)
            if bar:
                bar(None, -1)
            signals = layer_signals(spec, lm, items)
            model_info["tasks"][budget.name]["signals"] = signals
            for d in spec.designs:
                if d.name == "search":
                    log(f"{lm.name} · {budget.name}: greedy search guided by {d.args.get('signal', 'block_influence')}")
                    found, seen_s = run_search(spec, lm, items, store, ex, d.args, signals)
                    known = {c["plan"] for c in model_info["configs"]}
                    for c in found:
                        model_info["costs"].setdefault(
                            c.text, plan_costs(lm.model, c.plan, context=spec.context_length).as_dict())
                        if c.text not in known:
                            model_info["configs"].append({"plan": c.text, "design": c.design, **c.params})
                    seen = {**seen_s, **seen}
            # rank on search items; re-measure the top on held-out items
            ranked = analysis.rank_search(store, lm.digest, spec.dtype, items, seen, depth)
            top = [p for p in ranked[: spec.heldout_top_k]]
            log(f"{lm.name} · {budget.name}: held-out check of the top {len(top)}")
            ex.run_slice(items.task, items.heldout, top, reuse=True)
            model_info["tasks"][budget.name]["heldout_plans"] = top
            model_info["tasks"][budget.name]["fp32_plans"] = top[: spec.fp32_top_k]
        manifest["models"][lm.name] = model_info
        manifest["timings"][f"{lm.name}/search+heldout"] = time.perf_counter() - t0
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
        ex.close()
        manifest["worker_restarts"] = manifest.get("worker_restarts", 0) + getattr(ex, "restarts", 0)
        del ex
        # fp32 re-check of the top configurations on the search items
        if spec.fp32_top_k and spec.dtype != "float32":
            t0 = time.perf_counter()
            del lm
            lm32 = load_model(model_name, dtype="float32", device=device)
            ex32 = make_executor(lm32, model_name, "float32")
            for budget in spec.tasks:
                info = model_info["tasks"][budget.name]
                items = select_items(budget, lm32.tokenizer, spec.slices, spec.seed)
                log(f"{lm32.name} · {budget.name}: fp32 re-check of the top {len(info['fp32_plans'])}")
                for docs in items.search_slices:
                    ex32.run_slice(items.task, docs, info["fp32_plans"], reuse=True)
            ex32.close()
            manifest["timings"][f"{model_name}/fp32"] = time.perf_counter() - t0
            del lm32
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    manifest["timings"]["total"] = time.perf_counter() - t_all
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    analysis.write_results(run_dir, store)
    store.close()
    from frankenlm.report import page as report

    return report.write_report(run_dir)


def rewrite_report(run_dir: Path) -> Path:
    """Recompute the results table from the store and re-write the report (no model is loaded)."""
    from frankenlm.report import page as report

    run_dir = Path(run_dir)
    for f in ("spec.json", "manifest.json"):
        if not (run_dir / f).exists():
            raise FrankenError(f"{run_dir} is not a study run directory: {f} is missing")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    store = Store(manifest.get("store") or run_dir / "results.sqlite")
    try:
        analysis.write_results(run_dir, store)
    finally:
        store.close()
    return report.write_report(run_dir)
