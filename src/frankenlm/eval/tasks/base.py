"""The task abstraction: documents with requests and per-item scoring, metric specs, and item selection.

A `Task` loads `Doc`s. Each `Doc` has a stable `item_id`, the requests it needs answered, and scores its own
responses (`score`) and keeps what paired analysis needs later (`extras`). How a task's per-item values are
aggregated is declared by its `metrics`: a `MeanMetric` averages an item metric; a `RatioMetric` divides summed
item NLLs by summed item counts (perplexities, bits per byte), as lm-eval aggregates them.

Item selection is deterministic: `split` membership hashes `task:item_id` (so it never depends on `limit` or the
seed), and `limit` takes the first N items of a seeded shuffle (a larger N gives a superset).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from frankenlm.errors import FrankenError

from .requests import Request, Result

SPLITS = ("all", "search", "heldout")
Split = Literal["all", "search", "heldout"]


def item_split(task: str, item_id: str) -> Literal["search", "heldout"]:
    """The fixed half an item belongs to: parity of the first byte of sha256("task:item_id")."""
    digest = hashlib.sha256(f"{task}:{item_id}".encode()).digest()
    return "search" if digest[0] % 2 == 0 else "heldout"


@dataclass(frozen=True)
class Doc(ABC):
    """One evaluated item: its requests, and how to score the responses to them (same order)."""

    task: str
    item_id: str
    requests: tuple[Request, ...]

    @property
    def split(self) -> Literal["search", "heldout"]:
        return item_split(self.task, self.item_id)

    @abstractmethod
    def score(self, responses: Sequence[Result]) -> dict[str, float]:
        """Per-item metric values (the ones aggregated by `MeanMetric`s, and per-item versions of ratios)."""

    @abstractmethod
    def extras(self, responses: Sequence[Result]) -> dict[str, Any]:
        """Plain-JSON per-item data for later analysis: log-likelihoods, gold, token/byte/word counts, nll."""


@dataclass(frozen=True)
class MeanMetric:
    """Task value = mean over items of `Doc.score(...)[name]`; standard error = sample sd / sqrt(n).

    `higher_is_better`: the metric's direction (accuracies and exact match: True).
    """

    name: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class RatioMetric:
    """Task value = f(sum(extras['nll']) / sum(extras[denominator])) (denominator None: one per item).

    f = exp for `kind="perplexity"`, f(r) = r / ln 2 for `kind="bits"`. lm-eval's `perplexity` (lambada) is
    `RatioMetric("perplexity", None)`; `word_perplexity` is `RatioMetric("word_perplexity", "n_words")`.
    `higher_is_better`: the metric's direction (perplexities and bits: False).
    """

    name: str
    denominator: str | None
    kind: Literal["perplexity", "bits"] = "perplexity"
    higher_is_better: bool = False


Metric = MeanMetric | RatioMetric


def check_selection(limit: int | None, seed: int, split: str) -> None:
    """Raise FrankenError unless limit is None or a positive int, seed an int, split one of SPLITS."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise FrankenError(f"limit must be a positive integer or None (all items), got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FrankenError(f"seed must be a non-negative integer, got {seed!r}")
    if split not in SPLITS:
        raise FrankenError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def select_docs(docs: Sequence[Doc], *, limit: int | None, seed: int, split: str) -> list[Doc]:
    """The items of `split`, at most `limit` of them: the first ones of a seed-shuffled order, in stored order."""
    check_selection(limit, seed, split)
    order = np.random.default_rng(int(seed)).permutation(len(docs))
    chosen = [int(i) for i in order if split == "all" or docs[i].split == split]
    if limit is not None:
        chosen = chosen[: int(limit)]
    return [docs[i] for i in sorted(chosen)]


@dataclass(frozen=True)
class Task:
    """A named evaluation: how to load its docs, which metrics it reports, and where its data comes from.

    `primary` names the metric a study ranks configurations by (one of `metrics`; None: the first one). Its
    direction is that metric's `higher_is_better`; `primary_metric` is the spec, `primary_higher_is_better` the
    direction.
    """

    name: str
    output_type: Literal["multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until"]
    metrics: tuple[Metric, ...]
    source: str  # the data file(s) and split used
    notes: str  # prompt format and any difference from lm-eval
    loader: Callable[[str], list[Doc]]  # task name -> all docs, in stored order
    primary: str | None = None  # the metric a study ranks by

    def __post_init__(self) -> None:
        names = [m.name for m in self.metrics]
        if not names:
            raise FrankenError(f"task {self.name!r} declares no metrics")
        if self.primary is not None and self.primary not in names:
            raise FrankenError(f"task {self.name!r}: primary metric {self.primary!r} is not one of {', '.join(names)}")

    def metric(self, name: str) -> Metric:
        """The spec of the metric called `name`."""
        for m in self.metrics:
            if m.name == name:
                return m
        names = ", ".join(m.name for m in self.metrics)
        raise FrankenError(f"task {self.name!r} has no metric {name!r}; its metrics: {names}")

    @property
    def primary_metric(self) -> Metric:
        """The spec of the metric a study ranks this task by."""
        return self.metric(self.primary) if self.primary is not None else self.metrics[0]

    @property
    def primary_higher_is_better(self) -> bool:
        return self.primary_metric.higher_is_better

    def load_all_docs(self) -> list[Doc]:
        docs = self.loader(self.name)
        ids = [d.item_id for d in docs]
        if len(set(ids)) != len(ids):
            raise AssertionError(f"task {self.name}: item ids are not unique")  # a bug in the loader
        return docs

    def load_docs(self, limit: int | None = None, seed: int = 1234, split: str = "all") -> list[Doc]:
        """Docs of `split` ('all', 'search' or 'heldout'); with `limit`, the first `limit` of a `seed` shuffle."""
        check_selection(limit, seed, split)
        return select_docs(self.load_all_docs(), limit=limit, seed=seed, split=split)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "output_type": self.output_type,
            "metrics": [m.name for m in self.metrics],
            "source": self.source,
            "notes": self.notes,
        }
