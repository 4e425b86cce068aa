"""Racing: after each slice but the last, which configurations keep running. Pure decision functions over
paired comparisons (no model, no store), used by the study's sweep and unit-tested on their own.

The rule: a configuration stops only when its paired interval shows it clearly worse than the base (upper
bound below 0) *and* clearly worse than the current k-th best, and never while it is among the k best — so
racing cannot change which configurations make the top k (they run the full budget and are re-measured on
held-out items). No decision is taken before `min_slices` slices and `min_items` documents have been seen,
nor after the last slice (there is nothing left to save).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from frankenlm.study.spec import EarlyStopping

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of a configuration with a reference: gain (positive = better) and its interval's
    upper bound."""

    gain: float
    ci_high: float

    @property
    def clearly_worse(self) -> bool:
        return self.ci_high < 0


def may_decide(slices_done: int, n_slices: int, items_seen: int, rule: EarlyStopping | None) -> bool:
    """Whether racing looks after `slices_done` of `n_slices` slices, `items_seen` documents in."""
    return (
        rule is not None and slices_done < n_slices and slices_done >= rule.min_slices and items_seen >= rule.min_items
    )


def ranked(vs_base: Mapping[P, Paired]) -> list[P]:
    """Best first by gain; ties broken by the plan's text."""
    return sorted(vs_base, key=lambda p: (-vs_base[p].gain, str(p)))


def survivors(alive: Sequence[P], vs_base: Mapping[P, Paired], top_k: int, vs_kth: Callable[[P, P], Paired]) -> list[P]:
    """The configurations of `alive` that keep running, in their order.

    `vs_base[p]` compares p with the base; `vs_kth(p, kth)` compares p with the current k-th best (asked only
    for configurations outside the top k that are clearly worse than the base).
    """
    order = ranked({p: vs_base[p] for p in alive})
    leaders = set(order[:top_k])
    kth = order[min(top_k, len(order)) - 1] if order else None
    keep = []
    for p in alive:
        if p in leaders or not vs_base[p].clearly_worse:
            keep.append(p)
        elif not vs_kth(p, kth).clearly_worse:
            keep.append(p)
    return keep
