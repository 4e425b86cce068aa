"""Units of work: one plan scored on one slice of one task's items, and the code that computes them.

`SliceScorer` scores plans on one slice with prefix reuse (model-resident, knows nothing of the store): it runs
the base model once over the slice, keeping the hidden states the plans will reuse, then each plan runs only
its changed suffix. `UnitRunner` runs a slice's units in this process against a store, claiming each unit
before computing it so that processes sharing a store do not duplicate work. Both executors (study/executors.py)
are built on these; `plan_order` is the one order in which a slice's plans are scored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from frankenlm.eval.evaluate import run_task
from frankenlm.eval.forward import plain_forward
from frankenlm.eval.packing import decoder_hidden
from frankenlm.eval.scorer import Scorer
from frankenlm.eval.tasks import get_task
from frankenlm.eval.tasks.base import Doc
from frankenlm.eval.tasks.requests import GenerateRequest
from frankenlm.model.arithmetic import arithmetic_kind
from frankenlm.model.frankenmodel import build_frankenmodel
from frankenlm.model.loading import LoadedModel
from frankenlm.model.plan import LayerPlan, identity_plan
from frankenlm.study.prefix_cache import PrefixCache, base_prefix_length
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import Store, Unit, item_set_digest


class Progress(Protocol):
    """A phase's callback: `n` units scored (`desc` says which), or with `stored=True` `n` units found already
    stored (a resumed run skips them: they count as done, but not towards the rate an ETA is drawn from)."""

    def __call__(self, desc: str, n: int, stored: bool = False) -> None: ...


def no_progress(desc: str, n: int, stored: bool = False) -> None:
    pass


class UnitReport:
    """Tells one phase's `Progress` about each of its units once, whether computed here or found stored.

    A slice is run more than once (racing's second round picks up units whose claims lapsed), so a unit
    already reported to this callback is not reported again; a new callback (the next phase) starts afresh.
    """

    def __init__(self, progress: Progress | None = None):
        self.progress = progress or no_progress
        self.seen: set[Unit] = set()

    def stored(self, task: str, units: Iterable[Unit]) -> None:
        new = [u for u in units if u not in self.seen]
        if new:
            self.seen.update(new)
            self.progress(f"{task}: {len(new)} stored", len(new), stored=True)

    def computed(self, unit: Unit, plan: LayerPlan) -> None:
        self.seen.add(unit)
        self.progress(f"{unit.task} {plan}", 1)

    def unstored(self, store: Store, task: str, units: dict[LayerPlan, Unit]) -> list[LayerPlan]:
        """Reports a slice's stored units; returns the plans still to compute, in the order of `units`."""
        stored = [u for u in units.values() if store.has(u)]
        self.stored(task, stored)
        done = set(stored)
        return [p for p, u in units.items() if u not in done]


def slice_units(
    digest: str, dtype: str, task: str, docs: Sequence[Doc], plans: Sequence[LayerPlan], base: LayerPlan
) -> dict[LayerPlan, Unit]:
    """The unit of each plan (and the base) on `docs`, in `plan_order`; a key uses the plan's canonical text."""
    key = slice_key(task, docs)
    return {p: Unit(digest, str(p), task, key, dtype) for p in plan_order(plans, base)}


def score_docs(
    lm: LoadedModel,
    docs: list[Doc],
    spec: StudySpec,
    *,
    hidden=None,
    forward=None,
    generator=None,
    token_cache: dict | None = None,
    scoring: str | None = None,
) -> list[dict]:
    """Per-item results of `docs` (all of one task). Model calls go through `hidden` (fast scoring: a
    `frankenlm.eval.packing.HiddenFn`) or `forward` (lm-eval scoring: logits); greedy generation runs on the
    `generator` model (KV-cached) when given. `token_cache` is shared across calls (tokenize a slice once).
    `scoring` overrides the spec's scoring mode."""
    scoring = scoring or spec.scoring
    fast = scoring == "fast"
    scorer = Scorer(
        lm.model,
        lm.tokenizer,
        batch_size=spec.batch_size,
        max_length=spec.context_length,
        scoring=scoring,
        hidden=hidden if fast else None,
        forward=None if fast else forward,
        generator=generator,
        token_cache=token_cache,
    )
    _, items = run_task(scorer, get_task(docs[0].task), docs)
    return [{"item_id": r.item_id, "metrics": r.metrics, "extras": r.extras} for r in items]


def prefix_length(plan: LayerPlan, base: LayerPlan) -> int:
    """Leading positions `plan` shares with the base model (0 for the base itself: it is the base pass)."""
    return 0 if plan == base else base_prefix_length(plan)


def plan_order(plans: Iterable[LayerPlan], base: LayerPlan) -> list[LayerPlan]:
    """The base first, then plans sharing the longest base prefix (their states are freed as a slice goes);
    duplicates dropped, ties kept in the given order."""
    return sorted(dict.fromkeys([base, *plans]), key=lambda p: (p != base, -prefix_length(p, base)))


def slice_key(task: str, docs: Sequence[Doc]) -> str:
    """The store's key of a slice: its task and the set of its items' ids."""
    return item_set_digest(task, [d.item_id for d in docs])


class SliceScorer:
    """Scores plans on one slice of items with prefix reuse.

    `prepare(docs, plans)` runs the base model once over the slice, scoring it and keeping the hidden states
    the plans will reuse; `score(plan)` then runs only the plan's changed suffix.
    When `plans` leave the base out (its unit is stored: a resumed slice), no base pass is scored: the first
    plan's calls record the states in a base pass cut at the deepest boundary, and its `seconds` leave that
    out (meta `prefix_states_seconds` records it).
    """

    def __init__(self, spec: StudySpec, lm: LoadedModel, reuse: bool = True):
        self.spec, self.lm, self.reuse = spec, lm, reuse
        self.base = identity_plan(lm.depth)
        self.key: str | None = None
        self.docs: list[Doc] = []
        self.cache: PrefixCache | None = None
        self.base_items: list[dict] | None = []  # None: the slice was prepared without scoring the base
        self.base_seconds = 0.0
        self.tokens: dict = {}  # the slice's tokenized requests, shared by every plan scored on it
        self.arithmetic = arithmetic_kind(lm.model.device)  # recorded with each unit (the store checks it)

    def prepare(self, docs: list[Doc], plans: Sequence[LayerPlan]) -> None:
        """Base pass over `docs`, keeping the states `plans` need (none when `plans` leave out the base and
        prefixes are reused: see the class); a no-op when this slice is already prepared."""
        key = slice_key(docs[0].task, docs) if docs else ""
        if key == self.key:
            return
        need = {prefix_length(p, self.base) for p in plans if p != self.base}
        self.cache = PrefixCache(self.lm.model, need) if self.reuse else None
        self.tokens = {}
        self.key, self.docs = key, docs
        self.base_items, self.base_seconds = None, 0.0
        if self.base in plans or self.cache is None:
            self._score_base()

    def _score_base(self) -> None:
        if self.cache is not None:
            calls = {"hidden": self.cache.base_hidden, "forward": self.cache.base_forward}
        else:
            calls = {"hidden": decoder_hidden(self.lm.model), "forward": plain_forward(self.lm.model)}
        t0 = time.perf_counter()
        self.base_items = score_docs(self.lm, self.docs, self.spec, **calls, token_cache=self.tokens)
        self.base_seconds = time.perf_counter() - t0

    def score(self, plan: LayerPlan, remaining: Sequence[LayerPlan] | None = None) -> tuple[list[dict], dict]:
        """Per-item results of `plan` on the prepared slice, and timing metadata. `remaining` (plans still to
        score on this slice) lets the cache free hidden states no one needs any more."""
        if plan == self.base:
            if self.base_items is None:
                self._score_base()
            return self.base_items, {"seconds": self.base_seconds, "prefix_reused": 0, "arithmetic": self.arithmetic}
        t0 = time.perf_counter()
        states0 = self.cache.states_seconds if self.cache is not None else 0.0
        generator = None
        if any(isinstance(r, GenerateRequest) for d in self.docs for r in d.requests):
            generator = build_frankenmodel(self.lm.model, plan)  # greedy decoding with its own KV cache
        fast = self.spec.scoring == "fast"
        hidden = forward = None
        if self.cache is not None:
            if fast:
                hidden, k = self.cache.hidden_for(plan)
            else:
                forward, k = self.cache.forward_for(plan)
        else:
            fm = generator if generator is not None else build_frankenmodel(self.lm.model, plan)
            hidden, forward, k = decoder_hidden(fm), plain_forward(fm), 0
        items = score_docs(
            self.lm, self.docs, self.spec, hidden=hidden, forward=forward, generator=generator, token_cache=self.tokens
        )
        meta = {"seconds": time.perf_counter() - t0, "prefix_reused": k, "arithmetic": self.arithmetic}
        if self.cache is not None:
            if states := self.cache.states_seconds - states0:  # the base states this plan recorded: not its work
                meta["seconds"] -= states
                meta["prefix_states_seconds"] = states
            if remaining is not None:
                self.cache.drop_boundaries({prefix_length(q, self.base) for q in remaining if q != self.base})
        return items, meta

    def release(self) -> None:
        """Forget the prepared slice and free its hidden states."""
        self.key, self.cache, self.tokens = None, None, {}


class UnitRunner:
    """Runs the units of one model in this process against a store (claims keep concurrent processes apart)."""

    def __init__(self, spec: StudySpec, lm: LoadedModel, store: Store, dtype: str, progress: Progress | None = None):
        self.spec, self.lm, self.store, self.dtype = spec, lm, store, dtype
        self.base = identity_plan(lm.depth)
        self.report = UnitReport(progress)
        self.computed = 0  # units this process computed
        self.scorers: dict[bool, SliceScorer] = {}

    def unit(self, plan: LayerPlan, task: str, docs: Sequence[Doc]) -> Unit:
        """The unit of `plan` on `docs` (as `slice_units` keys it)."""
        return Unit(self.lm.digest, str(plan), task, slice_key(task, docs), self.dtype)

    def run_slice(self, task: str, docs: list[Doc], plans: Sequence[LayerPlan], *, reuse: bool = True) -> None:
        """Score `plans` (and the base) on `docs`, skipping stored units, in `plan_order`."""
        scorer = self.scorers.setdefault(reuse, SliceScorer(self.spec, self.lm, reuse))
        units = slice_units(self.lm.digest, self.dtype, task, docs, plans, self.base)
        todo = self.report.unstored(self.store, task, units)
        if not todo:
            return
        self.store.refuse_kind(self.dtype, scorer.arithmetic)  # before computing, not after (Store.put checks too)
        scorer.release()  # a fresh base pass: the slice's hidden states are not kept between calls
        scorer.prepare(docs, todo)
        for n, p in enumerate(todo):
            u = units[p]
            if not self.store.claim(u):
                continue
            try:
                items, meta = scorer.score(p, remaining=todo[n + 1 :])
            except BaseException:
                self.store.release(u)
                raise
            self.store.put(u, items, meta)
            self.computed += 1
            self.report.computed(u, p)
        scorer.release()

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

    def collect(self, plan: LayerPlan, task: str, slices: Sequence[Sequence[Doc]]) -> list[dict]:
        """Per-item results of `plan` on the given slices, from the store (all must be there)."""
        out: list[dict] = []
        for docs in slices:
            got = self.store.get(self.unit(plan, task, docs))
            if got is None:
                raise RuntimeError(f"unit missing from store: {plan} on {task}")
            out.extend(got)
        return out
