"""The signal-guided greedy search (design `search`) as pure decisions: which plans to try next, and whether
the search goes on. No model and no store: the study measures the proposals and hands back their gains.

Candidates are the `candidates` layers with the lowest signal (default: block influence — the layers that
change the residual stream least). Step 1 proposes one extra copy of each; every later step adds one more
candidate's copy (right after that layer's last application) to the best plan so far. The search stops when no
proposal ran the full search budget, when the best proposal does not beat the best plan so far on the search
items, or after `steps` steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from frankenlm.model.plan import LayerPlan, LayerRef, repeat_layer_plan
from frankenlm.study.designs import Candidate


def candidate_layers(signal: Sequence[float], k: int) -> list[int]:
    """The k layers with the lowest signal (ties: the lower layer)."""
    return sorted(range(len(signal)), key=lambda layer: (signal[layer], layer))[:k]


def insert_after_last(plan: LayerPlan, layer: int) -> LayerPlan:
    """`plan` with one more (whole-block, default-source) copy of `layer` right after its last application."""
    refs = list(plan.refs)
    last = max(i for i, r in enumerate(refs) if r.layer == layer and r.source is None)
    return LayerPlan(tuple(refs[: last + 1] + [LayerRef(layer)] + refs[last + 1 :]))


@dataclass(frozen=True)
class SearchState:
    """Where the search stands: steps taken, the best plan so far (None before step 1) and its gain."""

    step: int = 0
    best: Candidate | None = None
    gain: float = 0.0
    used: tuple[int, ...] = ()
    done: bool = False
    tried: tuple[Candidate, ...] = field(default=())


def proposals(state: SearchState, layers: Sequence[int], depth: int) -> list[Candidate]:
    """The plans of the next step (empty when the search is over)."""
    if state.done:
        return []
    step = state.step + 1
    if state.best is None:
        return [
            Candidate(repeat_layer_plan(c, depth), "search", {"step": 1, "layer": c, "repeats": 1, "layers": [c]})
            for c in layers
        ]
    return [
        Candidate(insert_after_last(state.best.plan, c), "search", {"step": step, "layers": [*state.used, c]})
        for c in layers
        if c not in state.used
    ]


def advance(state: SearchState, proposed: Sequence[Candidate], gains: Mapping[str, float], steps: int) -> SearchState:
    """The state after measuring `proposed`: `gains[plan text]` for those that ran the full search budget."""
    tried = state.tried + tuple(proposed)
    full = [c for c in proposed if c.text in gains]
    if not proposed or not full:
        return SearchState(state.step, state.best, state.gain, state.used, True, tried)
    best = max(full, key=lambda c: (gains[c.text], c.text))
    g = gains[best.text]
    if state.best is not None and g <= state.gain:
        return SearchState(state.step + 1, state.best, state.gain, state.used, True, tried)
    step = state.step + 1
    return SearchState(step, best, g, tuple(best.params["layers"]), step >= steps, tried)
