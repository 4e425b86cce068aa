"""Which items a study scores: per task, a seeded shuffle of its search half cut into slices (the racing looks)
and a held-out part, within a token budget (perplexity corpora) or an item budget (benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from frankenlm.errors import FrankenError
from frankenlm.eval.tasks import get_task
from frankenlm.eval.tasks.base import Doc
from frankenlm.study.analysis import primary_metric
from frankenlm.study.spec import TaskBudget


@dataclass
class TaskItems:
    """The items of one task a study scores: search slices (in racing order) and the held-out items."""

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
    """The task's items for a study: the same for every model with the same tokenizer, seed and budget."""
    task = get_task(budget.name)
    primary, hib = primary_metric(task)
    search = _shuffled(task.load_docs(split="search"), seed)
    heldout = _shuffled(task.load_docs(split="heldout"), seed)
    search, ntok = _take(search, tokenizer, budget.search_tokens, budget.search_items)
    heldout, _ = _take(heldout, tokenizer, budget.heldout_tokens, budget.heldout_items)
    if len(search) < slices:
        raise FrankenError(
            f"task {budget.name}: {len(search)} search items cannot fill {slices} slices "
            "(raise its search budget or lower slices)"
        )
    if not heldout:
        raise FrankenError(
            f"task {budget.name}: the held-out budget selects no items (raise heldout_tokens or heldout_items)"
        )
    parts = [list(p) for p in np.array_split(np.arange(len(search)), slices)]
    return TaskItems(budget.name, primary, hib, [[search[i] for i in p] for p in parts], heldout, ntok)
