"""What an evaluation returns: task-level metrics with standard errors, per-item results, and the settings.

`EvalResult.to_json()` gives plain JSON (NaN/inf as null); `EvalResult.from_json` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricValue:
    """A task-level metric: its value and standard error (None when undefined, e.g. one item)."""

    value: float
    se: float | None


@dataclass(frozen=True)
class ItemResult:
    """One item's metrics and extras (every choice's log-likelihood, gold, token/byte/word counts, nll...)."""

    task: str
    item_id: str
    split: str
    metrics: dict[str, float]
    extras: dict[str, Any]


@dataclass(frozen=True)
class TaskResult:
    """A task's aggregate metrics and throughput."""

    task: str
    n_items: int
    metrics: dict[str, MetricValue]
    n_requests: int
    tokens_processed: int  # tokens fed through the model (inputs shared by several requests count once)
    tokens_scored: int  # continuation / target / generated tokens
    wall_s: float
    tokens_per_s: float
    source: str
    notes: str


@dataclass
class EvalResult:
    """Per-task aggregates, per-item results, and the settings that produced them."""

    tasks: dict[str, TaskResult]
    items: list[ItemResult]
    config: dict[str, Any] = field(default_factory=dict)

    def items_of(self, task: str) -> list[ItemResult]:
        return [it for it in self.items if it.task == task]

    def metric(self, task: str, name: str) -> float:
        return self.tasks[task].metrics[name].value

    def to_json(self) -> dict[str, Any]:
        """Plain dicts/lists/numbers (NaN/inf become None), ready for `json.dumps`."""
        return _plain(
            {
                "config": self.config,
                "tasks": {name: asdict(t) for name, t in self.tasks.items()},
                "items": [asdict(it) for it in self.items],
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        tasks = {}
        for name, t in data["tasks"].items():
            metrics = {k: MetricValue(v["value"], v["se"]) for k, v in t["metrics"].items()}
            tasks[name] = TaskResult(**{**t, "metrics": metrics})
        items = [ItemResult(**it) for it in data["items"]]
        return cls(tasks, items, dict(data.get("config", {})))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item"):  # numpy / torch scalars
        return _plain(x.item())
    return str(x)
