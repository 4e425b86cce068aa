"""Study specifications and the named presets `frankenlm study --preset` offers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from frankenlm.errors import FrankenError
from frankenlm.model.zoo import DEFAULT_MODEL, ZOO


@dataclass
class TaskBudget:
    """How much of a task a study scores: a token budget (perplexity) or an item count (benchmarks)."""

    name: str
    search_tokens: int | None = None  # perplexity corpora: documents until this many tokens
    heldout_tokens: int | None = None
    search_items: int | None = None  # item tasks: this many search items
    heldout_items: int | None = None


@dataclass
class DesignSpec:
    name: str  # repeat-layer | repeat-block | sublayer | custom | search (greedy, signal-guided)
    args: dict = field(default_factory=dict)


@dataclass
class EarlyStopping:
    """Racing on paired differences: after each slice but the last, drop configs clearly worse than the base."""

    level: float = 0.99  # two-sided level of the paired interval used to drop (conservative: several looks)
    min_slices: int = 1  # slices every config sees before it may be dropped
    min_items: int = 10  # and at least this many items (documents): no decision on a handful of documents


@dataclass
class StudySpec:
    preset: str
    models: list[str]
    tasks: list[TaskBudget]
    designs: list[DesignSpec]
    dtype: str = "bfloat16"
    slices: int = 8  # racing looks after each slice: the first look is 1/slices of the search budget
    early_stopping: EarlyStopping | None = field(default_factory=EarlyStopping)
    heldout_top_k: int = 5
    fp32_top_k: int = 3
    batch_size: int | str = 8  # or "auto": from free GPU memory, chosen per model and worker
    context_length: int = 1024
    seed: int = 1234

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "StudySpec":
        d = json.loads(text)
        d["tasks"] = [TaskBudget(**t) for t in d["tasks"]]
        d["designs"] = [DesignSpec(**x) for x in d["designs"]]
        d["early_stopping"] = EarlyStopping(**d["early_stopping"]) if d.get("early_stopping") else None
        return cls(**d)


PPL_TASK = "lambada_passages"
PRESETS = ("quick", "standard", "sizes", "full-scan")


def preset(name: str, models: list[str] | None = None, tasks: list[str] | None = None) -> StudySpec:
    """The named preset, optionally with other models or tasks."""
    if name not in PRESETS:
        raise FrankenError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    if name == "quick":
        spec = StudySpec(
            "quick",
            [DEFAULT_MODEL],
            [TaskBudget(PPL_TASK, search_tokens=8192, heldout_tokens=4096)],
            [
                DesignSpec("repeat-block", {"stride": 3}),
                DesignSpec("repeat-layer", {"every": 3, "max_repeats": 3}),
                DesignSpec("sublayer", {"every": 6}),
                DesignSpec("search", {"candidates": 5, "steps": 3}),
            ],
        )
    elif name == "standard":
        spec = StudySpec(
            "standard",
            [DEFAULT_MODEL],
            [
                TaskBudget(PPL_TASK, search_tokens=16384, heldout_tokens=8192),
                TaskBudget("arc_easy", search_items=400, heldout_items=400),
                TaskBudget("hellaswag", search_items=400, heldout_items=400),
            ],
            [
                DesignSpec("repeat-block", {"stride": 2}),
                DesignSpec("repeat-layer", {"every": 1, "max_repeats": 4}),
                DesignSpec("sublayer", {"every": 1}),
                DesignSpec("search", {"candidates": 8, "steps": 4}),
            ],
        )
    elif name == "sizes":
        spec = StudySpec(
            "sizes",
            list(ZOO),
            [TaskBudget(PPL_TASK, search_tokens=8192, heldout_tokens=4096)],
            [
                DesignSpec("repeat-layer", {"fraction_every": 0.1, "max_repeats": 2}),
                DesignSpec("repeat-block", {"fraction_stride": 0.1}),
            ],
        )
    else:  # full-scan
        spec = StudySpec(
            "full-scan",
            [DEFAULT_MODEL],
            [TaskBudget(PPL_TASK, search_tokens=8192, heldout_tokens=4096)],
            [DesignSpec("repeat-block", {"stride": 1})],
        )
    if models:
        spec.models = list(models)
    if tasks:
        old = {t.name: t for t in spec.tasks}
        spec.tasks = [old.get(t) or _default_budget(t) for t in tasks]
    return spec


def _default_budget(task: str) -> TaskBudget:
    from frankenlm.eval.tasks import get_task

    t = get_task(task)
    if t.output_type == "loglikelihood_rolling":
        return TaskBudget(task, search_tokens=8192, heldout_tokens=4096)
    return TaskBudget(task, search_items=200, heldout_items=200)
