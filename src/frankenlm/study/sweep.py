"""The search phase of one model on one task: a raced sweep over candidates, the greedy search, and derived
designs (variants of an earlier design's best configurations).

Units run on an executor (default: this process); every decision (racing, the greedy step, which
configurations a derived design varies) is taken here from the store, by the pure functions of
study/racing.py and study/search.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from frankenlm.eval.paired import racing_compare
from frankenlm.model.loading import LoadedModel
from frankenlm.model.plan import LayerPlan
from frankenlm.study import analysis, designs, racing, search
from frankenlm.study.designs import Candidate
from frankenlm.study.items import TaskItems
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import Store
from frankenlm.study.units import Progress, UnitRunner


def race(
    spec: StudySpec,
    lm: LoadedModel,
    items: TaskItems,
    candidates: Sequence[Candidate],
    store: Store,
    *,
    executor=None,
    reuse: bool = True,
    early_stopping: bool = True,
    progress: Progress | None = None,
) -> dict[LayerPlan, int]:
    """Score `candidates` (and the base) slice by slice, racing after each slice. Returns {plan: slices seen}
    (fewer than all = stopped early)."""
    runner = UnitRunner(spec, lm, store, spec.task_dtype(items.task), progress)
    run = executor.run_slice if executor is not None else runner.run_slice
    base = runner.base
    alive = list(dict.fromkeys(c.plan for c in candidates))
    seen: dict[LayerPlan, int] = {p: 0 for p in alive}
    rule = spec.early_stopping if early_stopping else None
    n = len(items.search_slices)
    for s, docs in enumerate(items.search_slices):
        for _ in range(2):  # second round picks up units whose claims lapsed while we waited
            run(items.task, docs, alive, reuse=reuse)
            runner.wait_for(runner.unit(p, items.task, docs) for p in [base, *alive])
        for p in alive:
            seen[p] = s + 1
        looked = sum(len(x) for x in items.search_slices[: s + 1])
        if alive and racing.may_decide(s + 1, n, looked, rule):
            alive = _race_step(runner, items, alive, s + 1, rule.level, spec.heldout_top_k)
    return seen


def _race_step(
    runner: UnitRunner, items: TaskItems, alive: list[LayerPlan], n_slices: int, level: float, top_k: int
) -> list[LayerPlan]:
    done = items.search_slices[:n_slices]
    got = {p: runner.collect(p, items.task, done) for p in [runner.base, *alive]}

    def paired(ref: LayerPlan, p: LayerPlan) -> racing.Paired:
        # ranked (leaders kept) by the reported metric; "clearly worse" decided on the racing statistic
        c = racing_compare(
            items.task, items.primary, items.higher_is_better, got[ref], got[p], level=level, n_resamples=1000
        )
        gain = analysis.point_gain(items.task, items.primary, items.higher_is_better, got[ref], got[p])
        return racing.Paired(gain, c["ci_high"])

    vs_base = {p: paired(runner.base, p) for p in alive}
    return racing.survivors(alive, vs_base, top_k, lambda p, kth: paired(kth, p))


def search_gains(runner: UnitRunner, items: TaskItems, plans: Sequence[LayerPlan]) -> dict[str, float]:
    """Point gains on the full search items of `plans` (each must have run the full budget)."""
    if not plans:
        return {}
    base = runner.collect(runner.base, items.task, items.search_slices)
    return {
        str(p): analysis.point_gain(
            items.task, items.primary, items.higher_is_better, base, runner.collect(p, items.task, items.search_slices)
        )
        for p in plans
    }


def greedy_search(
    spec: StudySpec,
    lm: LoadedModel,
    items: TaskItems,
    store: Store,
    executor,
    args: dict,
    signals: dict,
    progress_for=None,
) -> tuple[list[Candidate], dict[LayerPlan, int]]:
    """Run the `search` design (study/search.py): returns every plan it tried and {plan: slices seen}.

    `progress_for(step, units)` gives the progress callback of one step (or None)."""
    layers = search.candidate_layers(signals[args.get("signal", "block_influence")], int(args.get("candidates", 6)))
    steps = int(args.get("steps", 3))
    runner = UnitRunner(spec, lm, store, spec.task_dtype(items.task))
    n = len(items.search_slices)
    state, seen_all = search.SearchState(), {}
    while not state.done:
        proposed = search.proposals(state, layers, lm.depth)
        seen = {}
        if proposed:
            bar = progress_for(state.step + 1, (len(proposed) + 1) * n) if progress_for else None
            seen = _race_with(spec, lm, items, proposed, store, executor, bar)
            seen_all.update(seen)
        full = [c.plan for c in proposed if seen.get(c.plan) == n]
        state = search.advance(state, proposed, search_gains(runner, items, full), steps)
    return list(state.tried), seen_all


def _race_with(spec, lm, items, candidates, store, executor, bar) -> dict[LayerPlan, int]:
    if executor is not None:
        executor.set_progress(bar)
    try:
        return race(spec, lm, items, candidates, store, executor=executor, progress=bar)
    finally:
        if executor is not None:
            executor.set_progress(None)
        if bar is not None:
            bar(None, -1)


def best_of(
    store: Store,
    lm: LoadedModel,
    items: TaskItems,
    dtype: str,
    seen: dict[LayerPlan, int],
    candidates: Sequence[Candidate],
    top: int,
) -> list[Candidate]:
    """The `top` best of `candidates` (one design's): those that ran the full search budget first, by their gain
    on the search items; where racing stopped too many of them, then the stopped ones by their gain on the slices
    they saw. A derived design (healed variants, longer repeat curves) is most needed where every plain repeat
    hurts, which is where racing stops them all."""
    by_text = {c.text: c for c in candidates}
    sub = {str(p): k for p, k in seen.items() if str(p) in by_text}
    ranked = analysis.rank_search(store, lm.digest, dtype, items, sub, lm.depth)
    if len(ranked) < top:
        stopped = {p: k for p, k in sub.items() if p not in ranked}
        ranked += analysis.rank_search(store, lm.digest, dtype, items, stopped, lm.depth, partial=True)
    return [by_text[p] for p in ranked[:top]]


def derived_design(
    spec: StudySpec,
    lm: LoadedModel,
    items: TaskItems,
    store: Store,
    executor,
    name: str,
    args: dict,
    parents: list[Candidate],
    known: set[str],
    progress=None,
) -> tuple[list[Candidate], dict[LayerPlan, int]]:
    """Variants of `parents` by the derived design `name`, raced like the static sweep (plans already in
    `known` are not proposed again). Returns the candidates and {plan: slices seen}."""
    cands = designs.dedupe(designs.build(name, args, lm.depth, parents=parents), known)
    if not cands:
        return [], {}
    bar = progress((len(cands) + 1) * len(items.search_slices)) if progress else None
    return cands, _race_with(spec, lm, items, cands, store, executor, bar)
