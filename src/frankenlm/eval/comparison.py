"""`frankenlm eval`: evaluate a base model and optionally its frankenmodel on the same items, compare them
item by item, and report efficiency figures beside the metrics.

Returns data only (`EvalRun`, whose `summaries()` gives one `TaskSummary` of `MetricRow`s per task); the CLI
renders it. Differences are frankenmodel minus base in the metric's own units, with a paired 95% CI and p-value
(`frankenlm.eval.paired`).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from frankenlm.eval import paired
from frankenlm.eval.evaluate import TaskProgress, evaluate
from frankenlm.eval.results import EvalResult
from frankenlm.eval.tasks import get_task
from frankenlm.model.costs import plan_costs
from frankenlm.model.frankenmodel import build_frankenmodel
from frankenlm.model.loading import LoadedModel


def higher_is_better(task: str, metric: str) -> bool:
    """The metric's direction, as the task's metric spec declares it (`Metric.higher_is_better`)."""
    return get_task(task).metric(metric).higher_is_better


@dataclass(frozen=True)
class MetricRow:
    """One metric of one task: the evaluated model's value (the frankenmodel's when there is a plan), and with
    a plan the base's value and the paired difference frankenmodel - base with its 95% CI and p-value."""

    metric: str
    value: float
    se: float | None
    higher_is_better: bool
    base_value: float | None = None
    base_se: float | None = None
    diff: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class TaskSummary:
    """A task's metric rows, with the number of items and the plan they compare (None: the base alone)."""

    task: str
    n_items: int
    plan: str | None
    rows: tuple[MetricRow, ...]


@dataclass
class EvalRun:
    model: str
    plan: str | None
    base: EvalResult
    franken: EvalResult | None
    efficiency: dict = field(default_factory=dict)  # "base"/"frankenmodel" -> figure name -> number
    comparisons: dict = field(default_factory=dict)  # task -> metric -> comparison

    def summaries(self) -> list[TaskSummary]:
        """One summary per task, in evaluation order."""
        out = []
        for task, res in (self.franken or self.base).tasks.items():
            rows = []
            for name, mv in res.metrics.items():
                hib = higher_is_better(task, name)
                if self.franken is None:
                    rows.append(MetricRow(name, mv.value, mv.se, hib))
                    continue
                b = self.base.tasks[task].metrics[name]
                c = self.comparisons[task][name]
                rows.append(
                    MetricRow(
                        name,
                        mv.value,
                        mv.se,
                        hib,
                        b.value,
                        b.se,
                        c["diff"],
                        c["diff_low"],
                        c["diff_high"],
                        c["p_value"],
                    )
                )
            out.append(TaskSummary(task, res.n_items, self.plan, tuple(rows)))
        return out

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "plan": self.plan,
            "base": self.base.to_json(),
            "frankenmodel": None if self.franken is None else self.franken.to_json(),
            "comparisons": self.comparisons,
            "efficiency": self.efficiency,
        }


def _efficiency(models, plan, fm, res: EvalResult) -> dict:
    c = plan_costs(models, plan, frankenmodel=fm)
    tok = sum(t.tokens_processed for t in res.tasks.values())
    wall = sum(t.wall_s for t in res.tasks.values())
    return {
        "layers": c.depth,
        "unique params": c.unique_params,
        "effective params": c.effective_params,
        "extra param bytes": c.extra_param_bytes,
        "FLOPs/token @2048": c.flops_per_token,
        "KV bytes/token": c.kv_bytes_per_token,
        "scoring tokens/s": tok / wall if wall else float("nan"),
        "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _labelled(progress: TaskProgress | None, label: str) -> TaskProgress | None:
    if progress is None:
        return None
    return lambda task, total: progress(f"{label} {task}", total)


def run_eval(
    base: LoadedModel, models: dict, plan, tasks: list[str], *, progress: TaskProgress | None = None, **kw
) -> EvalRun:
    """Evaluate the base (and the frankenmodel of `plan`) on `tasks`; compare per item when both exist.

    `kw` goes to `evaluate` (limit, limit_mode, seed, split, batch_size, max_length, device); `progress` is
    `evaluate`'s per-task callback, called with task names prefixed by "base" / "frankenmodel".
    """
    device = kw.pop("device", None)
    base_res = evaluate(base.model, base.tokenizer, tasks, device=device, progress=_labelled(progress, "base"), **kw)
    run = EvalRun(base.name, None if plan is None else str(plan), base_res, None)
    run.efficiency["base"] = _efficiency(models, None, None, base_res)
    if plan is None:
        return run
    fm = build_frankenmodel(models, plan)
    fres = evaluate(fm, base.tokenizer, tasks, device=device, progress=_labelled(progress, "frankenmodel"), **kw)
    run.franken = fres
    run.efficiency["frankenmodel"] = _efficiency(models, plan, fm, fres)
    for task in tasks:
        b = [{"item_id": r.item_id, "metrics": r.metrics, "extras": r.extras} for r in base_res.items_of(task)]
        f = [{"item_id": r.item_id, "metrics": r.metrics, "extras": r.extras} for r in fres.items_of(task)]
        run.comparisons[task] = {}
        for name in fres.tasks[task].metrics:
            hib = higher_is_better(task, name)
            c = paired.compare(task, name, hib, b, f)
            sign = 1.0 if hib else -1.0  # gain is "positive = better"; the table shows frankenmodel - base
            lo, hi = sorted((sign * c["ci_low"], sign * c["ci_high"]))
            run.comparisons[task][name] = {**c, "diff": sign * c["gain"], "diff_low": lo, "diff_high": hi}
    return run
