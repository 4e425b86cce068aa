"""Study specifications and the named presets `frankenlm study --preset` offers.

A spec is checked when it is made or loaded (`StudySpec.validate`, called by `from_json` and `preset`): unknown
keys, wrong types, unknown tasks or designs, design arguments that no design takes, and numbers out of range are
refused with one `FrankenError` line before a study writes anything. Checks that need a model's depth (a layer
index past the last layer) run when the study starts, still before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

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
    dtype: str | None = None  # this task's dtype; None: the spec's (e.g. float32 tasks in a bfloat16 study)


@dataclass
class DesignSpec:
    name: str  # a name in frankenlm.study.designs.DESIGNS
    args: dict = field(default_factory=dict)
    tasks: list[str] | None = None  # the tasks it runs on; None: every task of the study

    def runs_on(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


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
    scoring: str = "fast"  # fast (packed contexts, head only where scored) | lm-eval (HFLM's exact layout)
    # models: each model through every task in turn | tasks: every model through each task (and its fp32 re-check)
    order: str = "models"

    def to_json(self) -> str:
        d = asdict(self)
        # unset options of a task (its dtype) or a design (its tasks) are left out, as in specs written before them
        for t in d["tasks"]:
            if t["dtype"] is None:
                del t["dtype"]
        for x in d["designs"]:
            if x["tasks"] is None:
                del x["tasks"]
        return json.dumps(d, indent=2)

    def task_dtype(self, task: str) -> str:
        """The dtype `task` is scored in: its budget's, or the spec's."""
        return next((t.dtype for t in self.tasks if t.name == task and t.dtype), self.dtype)

    @classmethod
    def from_json(cls, text: str, source: str = "study spec") -> StudySpec:
        """Parse and validate a spec; every problem is one FrankenError line naming `source`."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise FrankenError(f"{source} is not JSON: {e}") from None
        try:
            d = _fields(d, cls, "the spec", required=("preset", "models", "tasks", "designs"))
            d["tasks"] = [
                TaskBudget(**_fields(t, TaskBudget, f"tasks[{n}]", ("name",)))
                for n, t in enumerate(_list(d["tasks"], "tasks"))
            ]
            d["designs"] = [
                DesignSpec(**_fields(x, DesignSpec, f"designs[{n}]", ("name",)))
                for n, x in enumerate(_list(d["designs"], "designs"))
            ]
            if "early_stopping" in d:  # absent: racing with the default rule, like every other field; null: off
                es = d["early_stopping"]
                d["early_stopping"] = (
                    None if es is None else EarlyStopping(**_fields(es, EarlyStopping, "early_stopping"))
                )
            spec = cls(**d)
            spec.validate()
        except FrankenError as e:
            raise FrankenError(f"{source}: {e}") from None
        return spec

    def validate(self) -> StudySpec:
        """Refuse (FrankenError, one line) anything a study could not run; returns the spec."""
        from frankenlm.eval.batching import parse_batch_size
        from frankenlm.eval.tasks import get_task
        from frankenlm.model.loading import DTYPES
        from frankenlm.study import designs

        if not isinstance(self.preset, str):
            raise FrankenError(f"preset must be a name (a string), got {self.preset!r}")
        if (
            not isinstance(self.models, list)
            or not self.models
            or not all(isinstance(m, str) and m.strip() for m in self.models)
        ):
            raise FrankenError(f"models must be a non-empty list of model names, got {self.models!r}")
        if len(set(self.models)) != len(self.models):
            raise FrankenError(f"models lists a model twice: {self.models}")
        if not isinstance(self.tasks, list) or not self.tasks:
            raise FrankenError("tasks must list at least one task budget")
        for t in self.tasks:
            get_task(t.name)
            for f in ("search_tokens", "heldout_tokens", "search_items", "heldout_items"):
                _positive(getattr(t, f), f"task {t.name}: {f}", optional=True)
            if t.search_tokens is not None and t.search_items is not None:
                raise FrankenError(f"task {t.name}: give search_tokens or search_items, not both")
            if t.heldout_tokens is not None and t.heldout_items is not None:
                raise FrankenError(f"task {t.name}: give heldout_tokens or heldout_items, not both")
            if t.dtype is not None and t.dtype not in DTYPES:
                raise FrankenError(f"task {t.name}: dtype {t.dtype!r} is not one of {', '.join(DTYPES)}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise FrankenError(f"tasks lists a task twice: {names}")
        if not isinstance(self.designs, list) or not self.designs:
            raise FrankenError("designs must list at least one design")
        earlier: list[str] = []
        for n, d in enumerate(self.designs):
            designs.check_args(d.name, d.args, earlier)
            earlier.append(d.name)
            if d.tasks is not None:
                if not isinstance(d.tasks, list) or not d.tasks or not all(t in names for t in d.tasks):
                    raise FrankenError(
                        f"design {d.name}: tasks must list tasks of the study ({', '.join(names)}), got {d.tasks!r}"
                    )
            if designs.get_design(d.name).derivable and "from" in d.args:
                src = next(e for e in reversed(self.designs[:n]) if e.name == d.args["from"])
                lacking = [t for t in (d.tasks or names) if not src.runs_on(t)]
                if lacking:
                    raise FrankenError(
                        f"design {d.name} runs on {', '.join(lacking)}, where its parent design {src.name} does not"
                    )
            if designs.get_design(d.name).cross_task and d.args["from_task"] not in names:
                raise FrankenError(
                    f"design {d.name}: from_task {d.args['from_task']!r} is not a task of the study ({', '.join(names)})"
                )
        if self.dtype not in DTYPES:
            raise FrankenError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        _positive(self.slices, "slices")
        if self.early_stopping is not None:
            es = self.early_stopping
            if isinstance(es.level, bool) or not isinstance(es.level, (int, float)) or not 0 < es.level < 1:
                raise FrankenError(f"early_stopping.level must be a confidence level in (0, 1), got {es.level!r}")
            _positive(es.min_slices, "early_stopping.min_slices")
            _positive(es.min_items, "early_stopping.min_items", minimum=0)
        _positive(self.heldout_top_k, "heldout_top_k")
        _positive(self.fp32_top_k, "fp32_top_k", minimum=0)
        parse_batch_size(self.batch_size)
        _positive(self.context_length, "context_length", minimum=2)
        _positive(self.seed, "seed", minimum=0)
        from frankenlm.eval.scorer import check_scoring

        check_scoring(self.scoring)
        if self.order not in ORDERS:
            raise FrankenError(f"order {self.order!r} is not one of {', '.join(ORDERS)}")
        return self


def _positive(value, what: str, minimum: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise FrankenError(f"{what} must be {need}, got {value!r}")


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise FrankenError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _fields(d, cls, what: str, required: tuple[str, ...] = ()) -> dict:
    """`d` as keyword arguments of dataclass `cls`: an object with only known keys and the required ones."""
    if not isinstance(d, dict):
        raise FrankenError(f"{what} must be a JSON object, got {type(d).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in known]
    if unknown:
        raise FrankenError(f"{what}: unknown key {unknown[0]!r}: use {', '.join(known)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise FrankenError(f"{what}: missing key {missing[0]!r}")
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise FrankenError(f"{what}: {k} is {v}: give a finite number")
    return dict(d)


ORDERS = ("models", "tasks")  # a study's loop: model by model, or task by task (every model on each task first)
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
    return spec.validate()


def _default_budget(task: str) -> TaskBudget:
    from frankenlm.eval.tasks import get_task

    t = get_task(task)
    if t.output_type == "loglikelihood_rolling":
        return TaskBudget(task, search_tokens=8192, heldout_tokens=4096)
    return TaskBudget(task, search_items=200, heldout_items=200)
