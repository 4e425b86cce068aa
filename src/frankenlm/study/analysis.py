"""From stored per-item results to the study's table: paired gains with CIs, tests, multiple-comparison control,
held-out confirmation and fp32 re-checks. A pure function of the store and the run's manifest.

Gains are signed so that positive means better than the base, in the metric's own units (bits per byte for
perplexity corpora, accuracy for benchmarks). Rows are `frankenlm.study.results.ResultRow`s: the typed schema
that defines every verdict once and that results.csv / study.json are written from and read back into. The
paired arithmetic is `frankenlm.eval.paired` (shared with `frankenlm eval`).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from frankenlm.eval import stats
from frankenlm.eval.paired import _ratio_arrays, compare
from frankenlm.eval.paired import align as _align
from frankenlm.eval.paired import ratio_spec as _ratio_spec
from frankenlm.study.results import ALPHA, RESULT_COLUMNS, ResultRow, slug, write_csv
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import Store, Unit, item_set_digest

__all__ = [
    "RESULT_COLUMNS",
    "primary_metric",
    "compare",
    "metric_value",
    "point_gain",
    "rank_search",
    "adjust_pvalues",
    "study_rows",
    "write_results",
]


def primary_metric(task) -> tuple[str, bool]:
    """The metric a study ranks a task by, and whether higher is better: as the task declares them."""
    m = task.primary_metric
    return m.name, m.higher_is_better


def metric_value(task: str, metric: str, items: list[dict]) -> float:
    spec = _ratio_spec(task, metric)
    if spec is None:
        return float(np.mean([r["metrics"][metric] for r in items]))
    return stats.ratio_metric(spec[1], *_ratio_arrays(items, spec[0]))


def point_gain(task: str, metric: str, higher_is_better: bool, base: list[dict], cfg: list[dict]) -> float:
    """The gain's point estimate (positive = better) on the items both have; no interval."""
    base, cfg = _align(base, cfg)
    diff = metric_value(task, metric, cfg) - metric_value(task, metric, base)
    return diff if higher_is_better else -diff


def _units(store: Store, digest: str, plan: str, task: str, slices: list[list[str]], dtype: str) -> list[dict] | None:
    out: list[dict] = []
    for ids in slices:
        got = store.get(Unit(digest, plan, task, item_set_digest(task, ids), dtype))
        if got is None:
            return None
        out.extend(got)
    return out


def _slices_seen(store: Store, digest: str, plan: str, task: str, slices: list[list[str]], dtype: str) -> int:
    k = 0
    for ids in slices:
        if not store.has(Unit(digest, plan, task, item_set_digest(task, ids), dtype)):
            break
        k += 1
    return k


def rank_search(
    store: Store, digest: str, dtype: str, items, seen: dict[str, int], depth: int, partial: bool = False
) -> list[str]:
    """Plans that saw the full search budget, best first by search gain (ties broken by plan text). With
    `partial`, every plan that saw a slice, each by its gain over the slices it saw (`seen[plan]`)."""
    from frankenlm.study.designs import base_config

    base_text = str(base_config(depth).plan)
    slices = [[d.item_id for d in s] for s in items.search_slices]
    scored = []
    bases: dict[int, list[dict] | None] = {}  # the base's units on the first k slices, read once per k
    for plan, k in seen.items():
        if k < len(slices) and not (partial and k > 0):
            continue
        k = min(k, len(slices))
        if k not in bases:
            bases[k] = _units(store, digest, base_text, items.task, slices[:k], dtype)
        cfg = _units(store, digest, plan, items.task, slices[:k], dtype)
        scored.append((-point_gain(items.task, items.primary, items.higher_is_better, bases[k], cfg), plan))
    return [p for _, p in sorted(scored)]


def _signal_check(signals: dict, task_rows: list[ResultRow], depth: int) -> dict:
    """How well each per-layer signal ranks the measured gains of single-layer repeats (Spearman)."""
    from frankenlm.model.plan import repeat_layer_plan
    from frankenlm.study.signals import rank_correlation

    by_plan = {r.config: r for r in task_rows}
    gains = {}
    for layer in range(depth):
        r = by_plan.get(str(repeat_layer_plan(layer, depth)))
        if r is not None:
            gains[layer] = float(r.gain)
    out = {"layers_measured": sorted(gains), "per_layer": {k: v for k, v in signals.items() if k != "tokens"}}
    for name in ("block_influence", "angular_distance"):
        if name in signals:
            out[name] = rank_correlation(signals[name], gains)
    return out


def _correct(items: list[dict], metric: str) -> dict[str, bool]:
    return {r["item_id"]: bool(r["metrics"][metric] > 0.5) for r in items}


def per_item_ceiling(
    metric: str,
    base: list[dict],
    base_held: list[dict] | None,
    rows: list[ResultRow],
    runs: dict[str, tuple[list[dict], list[dict] | None]],
) -> dict | None:
    """The per-item ceiling of a 0/1 metric (accuracy): of the items the base gets wrong, how many *some*
    configuration gets right, against what the configuration chosen on search items does on held-out items.

    `runs[config]` holds a configuration's (search, held-out or None) per-item results as `study_rows` read them.
    Search: over every configuration that ran the full search budget (an upper bound that includes luck: with
    many configurations some flip any close item). Held-out: the chosen configuration (best search gain) — items
    fixed and broken — and the union over the re-measured configurations. None when the metric is not 0/1."""
    if any(r["metrics"].get(metric) not in (0, 1, 0.0, 1.0, True, False) for r in base):
        return None
    full = [r for r in rows if not r.is_base and not r.stopped_early and math.isfinite(r.gain)]
    b = _correct(base, metric)
    wrong = {i for i, ok in b.items() if not ok}
    some = set()
    for r in full:
        some |= {i for i, ok in _correct(runs[r.config][0], metric).items() if ok and i in wrong}
    out = {
        "configurations": len(full),
        "search_items": len(b),
        "search_base_wrong": len(wrong),
        "search_fixed_by_some": len(some),
    }
    chosen = min(full, key=lambda r: (-r.gain, r.config), default=None)  # rank_search's order
    if chosen is None or base_held is None:
        return out
    bh = _correct(base_held, metric)
    hwrong = {i for i, ok in bh.items() if not ok}
    union, n_re = set(), 0
    for r in full:
        got = runs[r.config][1]
        if got is None:
            continue
        n_re += 1
        c = _correct(got, metric)
        union |= {i for i, ok in c.items() if ok and i in hwrong}
        if r.config == chosen.config:
            out.update(
                chosen=chosen.config,
                heldout_items=len(bh),
                heldout_base_wrong=len(hwrong),
                chosen_fixed=sum(1 for i in hwrong if c.get(i)),
                chosen_broken=sum(1 for i, ok in bh.items() if ok and i in c and not c[i]),
            )
    if "chosen" in out:
        out.update(heldout_remeasured=n_re, heldout_fixed_by_some=len(union))
    return out


def _export_command(model: str, plan: str) -> str:
    """One export directory per configuration (a model's confirmed configurations must not overwrite each other)."""
    return f"frankenlm export --model {model} --plan '{plan}' --format hf --out exports/{slug(f'{model}-{plan}')}"


def adjust_pvalues(rows: list[ResultRow], heldout_family: int = 0) -> list[ResultRow]:
    """Multiple-comparison control over one model's configurations on one task (the base row excluded, and
    returned unchanged): Holm- and BH-adjusted p-values, and `significant` = Holm-adjusted p < ALPHA; and the
    held-out p-values Holm-adjusted across the configurations re-measured on held-out items (their own family:
    the confirmatory test of what the search selected), counted as at least `heldout_family` (the number the
    protocol re-measures) so that a held-out check still running is not adjusted over fewer tests than it makes."""
    cfg = [k for k, r in enumerate(rows) if not r.is_base]
    if not cfg:
        return list(rows)
    pv = np.array([rows[k].p_value for k in cfg], float)
    holm, bh = stats.holm(pv), stats.benjamini_hochberg(pv)
    out = list(rows)
    for k, ph, pb in zip(cfg, holm, bh):
        out[k] = replace(rows[k], p_holm=float(ph), p_bh=float(pb), significant=bool(ph < ALPHA and not math.isnan(ph)))
    held = [k for k in cfg if rows[k].remeasured and not math.isnan(rows[k].heldout_p)]
    if held:
        pad = [1.0] * max(0, heldout_family - len(held))  # the tests not made yet, counted as p = 1
        for k, ph in zip(held, stats.holm(np.array([rows[k].heldout_p for k in held] + pad, float))):
            out[k] = replace(out[k], heldout_p_holm=float(ph))
    return out


def study_rows(run_dir: Path, store: Store) -> tuple[list[ResultRow], dict]:
    """The results table (one row per model × config × task) and the study summary for the report."""
    run_dir = Path(run_dir)
    spec = StudySpec.from_json((run_dir / "spec.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows: list[ResultRow] = []
    tasks_summary = {}
    signals_summary: dict = {}
    ceiling: dict = {}
    design_params: dict = {}
    checked: dict[str, list[str]] = {}  # {model: [tasks whose held-out check has finished]}
    for name, info in manifest["models"].items():
        digest, depth = info["digest"], info["depth"]
        base_text = f"0..{depth - 1}"
        costs = info["costs"]
        configs = [{"plan": base_text, "design": "base"}, *info["configs"]]
        params = {c["plan"]: {k: v for k, v in c.items() if k not in ("plan", "design")} for c in configs}
        design_params[name] = params
        for task, t in info.get("tasks", {}).items():
            slices, heldout = t["slices"], t["heldout"]
            metric, hib = t["primary"], t["higher_is_better"]
            dtype = spec.task_dtype(task)
            base = _units(store, digest, base_text, task, slices, dtype)
            if base is None:
                continue
            base_held = _units(store, digest, base_text, task, [heldout], dtype)
            if "heldout_plans" in t:  # the runner records the re-measured plans once their check has run
                checked.setdefault(name, []).append(task)
            # the fp32 re-check of a task scored in a lower precision (a float32 task needs none)
            base32 = None if dtype == "float32" else _units(store, digest, base_text, task, slices, "float32")
            tasks_summary.setdefault(
                task,
                {
                    "name": task,
                    "primary_metric": metric,
                    "higher_is_better": hib,
                    "search_items": sum(map(len, slices)),
                    "heldout_items": len(heldout),
                    "search_tokens": t["search_tokens"],
                    "dtype": dtype,
                },
            )
            task_rows = []
            runs: dict[str, tuple[list[dict], list[dict] | None]] = {}  # per-item results read, for the ceiling
            for c in configs:
                plan = c["plan"]
                k = _slices_seen(store, digest, plan, task, slices, dtype)
                if k == 0:
                    continue
                cfg = _units(store, digest, plan, task, slices[:k], dtype)
                row = {
                    "model": name,
                    "depth": depth,
                    "config": plan,
                    "design": c["design"],
                    "i": c.get("i"),
                    "j": c.get("j"),
                    "layer": c.get("layer"),
                    "repeats": c.get("repeats"),
                    "sublayer": c.get("sublayer", "block"),
                    "task": task,
                    "metric": metric,
                    "higher_is_better": hib,
                    **compare(task, metric, hib, base, cfg),
                    "stopped_early": k < len(slices),
                }
                held = None
                # only the configurations the protocol re-measured (its top on search): held-out units that an
                # earlier session's other selection left in the store stay out of the held-out family
                if plan != base_text and base_held is not None and plan in t.get("heldout_plans", [plan]):
                    held = _units(store, digest, plan, task, [heldout], dtype)
                    if held is not None:
                        h = compare(task, metric, hib, base_held, held)
                        row.update(
                            heldout_gain=h["gain"],
                            heldout_ci_low=h["ci_low"],
                            heldout_ci_high=h["ci_high"],
                            heldout_p=h["p_value"],
                        )
                if plan != base_text and base32 is not None:
                    c32 = _units(store, digest, plan, task, slices, "float32")
                    if c32 is not None:
                        row["fp32_gain"] = compare(task, metric, hib, base32, c32, n_resamples=200)["gain"]
                bc, cc = costs[base_text], costs.get(plan, costs[base_text])
                row.update(
                    extra_flops_per_token=cc["flops_per_token"] - bc["flops_per_token"],
                    flops_ratio=cc["flops_per_token"] / bc["flops_per_token"],
                    effective_params=cc["effective_params"],
                    kv_bytes_per_token=cc["kv_bytes_per_token"],
                    export_command=_export_command(name, plan) if plan != base_text else "",
                )
                task_rows.append(ResultRow.from_record(row, params[plan]))
                runs[plan] = (cfg, held)
            task_rows = adjust_pvalues(task_rows, heldout_family=spec.heldout_top_k)
            rows.extend(task_rows)
            ceil = per_item_ceiling(metric, base, base_held, task_rows, runs)
            if ceil is not None:
                ceiling.setdefault(name, {})[task] = ceil
            if t.get("signals"):
                signals_summary.setdefault(name, {})[task] = _signal_check(t["signals"], task_rows, depth)
    summary = {
        "preset": spec.preset,
        "models": [{"name": n, "depth": i["depth"], "params": i["params"]} for n, i in manifest["models"].items()],
        "tasks": list(tasks_summary.values()),  # the tasks with results
        "task_dtypes": {t.name: spec.task_dtype(t.name) for t in spec.tasks},  # every task the spec names
        "designs": [d.name for d in spec.designs],
        "dtype": spec.dtype,
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
        "timings": manifest.get("timings", {}),
        "command": manifest.get("command", ""),
        "early_stopping": None if spec.early_stopping is None else vars(spec.early_stopping),
        "signals": signals_summary,
        "ceiling": ceiling,  # {model: {task: per_item_ceiling}} for 0/1 metrics
        "compute": {n: store.compute(i["digest"]) for n, i in manifest["models"].items()},  # {model: {task: ...}}
        "design_params": design_params,  # {model: {plan: the design's parameters}} for the typed rows
        "heldout_checked": checked,  # {model: [tasks]}: the held-out check has finished (not still running)
        "heldout_top_k": spec.heldout_top_k,  # the held-out family's size (adjust_pvalues counts at least this)
    }
    return rows, summary


def write_results(run_dir: Path, store: Store) -> tuple[Path, Path]:
    """Write RUN_DIR/results.csv (RESULT_COLUMNS) and RUN_DIR/study.json from the typed rows."""
    rows, summary = study_rows(run_dir, store)
    csv_path = write_csv(rows, Path(run_dir) / "results.csv")
    json_path = Path(run_dir) / "study.json"
    json_path.write_text(json.dumps(summary, indent=2))
    return csv_path, json_path
