"""`frankenlm eval`: evaluate a base model and optionally its frankenmodel on the same items, compare them
item by item, and report efficiency figures beside the metrics."""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, field

from rich.table import Table

from frankenlm.study import analysis
from frankenlm.model.costs import plan_costs
from frankenlm.eval.evaluator import EvalResult, evaluate
from frankenlm.model.frankenmodel import build_frankenmodel
from frankenlm.model.loading import LoadedModel
from frankenlm.eval.tasks import RatioMetric, get_task


def _higher_is_better(task: str, metric: str) -> bool:
    spec = next(m for m in get_task(task).metrics if m.name == metric)
    return not isinstance(spec, RatioMetric)


@dataclass
class EvalRun:
    model: str
    plan: str | None
    base: EvalResult
    franken: EvalResult | None
    efficiency: dict = field(default_factory=dict)
    comparisons: dict = field(default_factory=dict)  # task -> metric -> comparison

    def tables(self) -> list[Table]:
        out = []
        for task, res in (self.franken or self.base).tasks.items():
            t = Table(title=f"{task} ({res.n_items} items)" + (f" — plan {self.plan}" if self.plan else ""))
            t.add_column("metric")
            t.add_column("value ± se", justify="right")
            if self.franken is not None:
                for c in ("base ± se", "difference [95% CI]", "p"):
                    t.add_column(c, justify="right")
            for name, mv in res.metrics.items():
                row = [name, _pm(mv.value, mv.se)]
                if self.franken is not None:
                    b = self.base.tasks[task].metrics[name]
                    c = self.comparisons[task][name]
                    row += [_pm(b.value, b.se), f"{c['diff']:+.4g} [{c['diff_low']:+.4g}, {c['diff_high']:+.4g}]",
                            f"{c['p_value']:.3g}"]
                t.add_row(*row)
            out.append(t)
        eff = Table(title="efficiency")
        eff.add_column("")
        for k in self.efficiency:
            eff.add_column(k, justify="right")
        keys = next(iter(self.efficiency.values())).keys()
        for key in keys:
            eff.add_row(key, *[_num(v[key]) for v in self.efficiency.values()])
        out.append(eff)
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


def _pm(v: float, se: float | None) -> str:
    return f"{v:.4g}" + ("" if se is None or not math.isfinite(se) else f" ± {se:.2g}")


def _num(v) -> str:
    return f"{v:,.0f}" if isinstance(v, (int, float)) and abs(v) >= 100 else f"{v:.4g}" if isinstance(v, float) else str(v)


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


def run_eval(base: LoadedModel, models: dict, plan, tasks: list[str], **kw) -> EvalRun:
    """Evaluate the base (and the frankenmodel of `plan`) on `tasks`; compare per item when both exist."""
    device = kw.pop("device", None)
    base_res = evaluate(base.model, base.tokenizer, tasks, device=device, **kw)
    run = EvalRun(base.name, None if plan is None else str(plan), base_res, None)
    run.efficiency["base"] = _efficiency(models, None, None, base_res)
    if plan is None:
        return run
    fm = build_frankenmodel(models, plan)
    fres = evaluate(fm, base.tokenizer, tasks, device=device, **kw)
    run.franken = fres
    run.efficiency["frankenmodel"] = _efficiency(models, plan, fm, fres)
    for task in tasks:
        b = [{"item_id": r.item_id, "metrics": r.metrics, "extras": r.extras} for r in base_res.items_of(task)]
        f = [{"item_id": r.item_id, "metrics": r.metrics, "extras": r.extras} for r in fres.items_of(task)]
        run.comparisons[task] = {}
        for name in fres.tasks[task].metrics:
            hib = _higher_is_better(task, name)
            c = analysis.compare(task, name, hib, b, f)
            sign = 1.0 if hib else -1.0  # gain is "positive = better"; the table shows frankenmodel - base
            lo, hi = sorted((sign * c["ci_low"], sign * c["ci_high"]))
            run.comparisons[task][name] = {**c, "diff": sign * c["gain"], "diff_low": lo, "diff_high": hi}
    return run
