"""From stored per-item results to the study's table: paired gains with CIs, tests, multiple-comparison control,
held-out confirmation and fp32 re-checks. A pure function of the store and the run's manifest.

Gains are signed so that positive means better than the base, in the metric's own units (bits per byte for
perplexity corpora, accuracy for benchmarks).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from frankenlm.eval import stats
from frankenlm.study.spec import StudySpec
from frankenlm.study.store import Store, Unit, item_set_digest
from frankenlm.eval.tasks import RatioMetric, get_task

RESULT_COLUMNS = [
    "model", "depth", "config", "design", "i", "j", "layer", "repeats", "sublayer", "task", "metric",
    "higher_is_better", "base_value", "value", "gain", "ci_low", "ci_high", "p_value", "p_holm", "p_bh",
    "significant", "n_items", "n_tokens", "stopped_early", "heldout_gain", "heldout_ci_low", "heldout_ci_high",
    "heldout_p", "fp32_gain", "extra_flops_per_token", "flops_ratio", "effective_params", "kv_bytes_per_token",
    "export_command",
]  # fmt: skip


def primary_metric(task) -> tuple[str, bool]:
    """The metric a study ranks a task by, and whether higher is better."""
    names = [m.name for m in task.metrics]
    if "bits_per_byte" in names:
        return "bits_per_byte", False
    for m in ("acc_norm", "acc", "exact_match_flexible", "exact_match_strict"):
        if m in names:
            return m, True
    raise ValueError(f"task {task.name} has no rankable metric ({names})")


def _ratio_spec(task_name: str, metric: str) -> tuple[str, str] | None:
    """(denominator extra, stats formula name) of a ratio metric, None for a mean metric.

    Ratio metrics are f(sum nll / sum denominator) with f = exp (perplexities) or r / ln 2 (bits); the
    stats module names the two formulas token_perplexity and bits_per_byte.
    """
    for m in get_task(task_name).metrics:
        if m.name == metric and isinstance(m, RatioMetric):
            return m.denominator or "_one", ("bits_per_byte" if m.kind == "bits" else "token_perplexity")
    return None


def _ratio_arrays(items: list[dict], denom: str) -> tuple[np.ndarray, np.ndarray]:
    nll = np.array([r["extras"]["nll"] for r in items], float)
    den = np.array([r["extras"].get(denom, 1) for r in items], float)
    return nll, den


def _align(base: list[dict], cfg: list[dict]) -> tuple[list[dict], list[dict]]:
    by_id = {r["item_id"]: r for r in base}
    cfg = [r for r in cfg if r["item_id"] in by_id]
    return [by_id[r["item_id"]] for r in cfg], cfg


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


def compare(task: str, metric: str, higher_is_better: bool, base: list[dict], cfg: list[dict],
            level: float = 0.95, n_resamples: int = 2000) -> dict:
    """Paired comparison of a config with the base on the items both have: gain (positive = better), CI, p."""
    base, cfg = _align(base, cfg)
    n = len(cfg)
    out = {"n_items": n, "n_tokens": int(sum(r["extras"].get("n_tokens", 0) or 0 for r in cfg))}
    if n < 2:
        return {**out, "base_value": math.nan, "value": math.nan, "gain": math.nan, "ci_low": math.nan,
                "ci_high": math.nan, "p_value": math.nan}
    spec = _ratio_spec(task, metric)
    if spec is not None:
        nb, den = _ratio_arrays(base, spec[0])
        nc, _ = _ratio_arrays(cfg, spec[0])
        # stat(a) - stat(b) with a = base, b = config: positive when the config's ratio metric is lower
        iv = stats.paired_ratio_diff_ci(spec[1], nb, nc, den, level=level, n_resamples=n_resamples)
        if higher_is_better:
            iv = stats.Interval(-iv.estimate, -iv.high, -iv.low, iv.level)
        p = stats.paired_permutation_test(nb - nc, n_resamples=5000)
        bv, cv = stats.ratio_metric(spec[1], nb, den), stats.ratio_metric(spec[1], nc, den)
    else:
        xb = np.array([r["metrics"][metric] for r in base], float)
        xc = np.array([r["metrics"][metric] for r in cfg], float)
        iv = stats.paired_diff_mean_ci(xc, xb, level=level, n_resamples=n_resamples)
        if not higher_is_better:
            iv = stats.Interval(-iv.estimate, -iv.high, -iv.low, iv.level)
        binary = set(np.unique(np.concatenate([xb, xc]))) <= {0.0, 1.0}
        p = stats.mcnemar_exact(xc > 0.5, xb > 0.5).pvalue if binary else stats.paired_permutation_test(xc - xb)
        bv, cv = float(xb.mean()), float(xc.mean())
    return {**out, "base_value": bv, "value": cv, "gain": iv.estimate, "ci_low": iv.low, "ci_high": iv.high,
            "p_value": float(p)}


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


def rank_search(store: Store, digest: str, dtype: str, items, seen: dict[str, int], depth: int) -> list[str]:
    """Plans that saw the full search budget, best first by search gain (ties broken by plan text)."""
    from frankenlm.study.designs import base_config

    base_text = str(base_config(depth).plan)
    slices = [[d.item_id for d in s] for s in items.search_slices]
    base = _units(store, digest, base_text, items.task, slices, dtype)
    scored = []
    for plan, k in seen.items():
        if k < len(slices):
            continue
        cfg = _units(store, digest, plan, items.task, slices, dtype)
        scored.append((-point_gain(items.task, items.primary, items.higher_is_better, base, cfg), plan))
    return [p for _, p in sorted(scored)]


def _signal_check(signals: dict, task_rows: list[dict], depth: int) -> dict:
    """How well each per-layer signal ranks the measured gains of single-layer repeats (Spearman)."""
    from frankenlm.model.plan import repeat_layer_plan
    from frankenlm.study.signals import rank_correlation

    by_plan = {r["config"]: r for r in task_rows}
    gains = {}
    for layer in range(depth):
        r = by_plan.get(str(repeat_layer_plan(layer, depth)))
        if r is not None:
            gains[layer] = float(r["gain"])
    out = {"layers_measured": sorted(gains), "per_layer": {k: v for k, v in signals.items() if k != "tokens"}}
    for name in ("block_influence", "angular_distance"):
        if name in signals:
            out[name] = rank_correlation(signals[name], gains)
    return out


def _export_command(model: str, plan: str) -> str:
    return f"frankenlm export --model {model} --plan '{plan}' --format hf --out exports/{model}-frankenmodel"


def study_rows(run_dir: Path, store: Store) -> tuple[list[dict], dict]:
    """The results table (one row per model × config × task) and the study summary for the report."""
    run_dir = Path(run_dir)
    spec = StudySpec.from_json((run_dir / "spec.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows: list[dict] = []
    tasks_summary = {}
    signals_summary: dict = {}
    for name, info in manifest["models"].items():
        digest, depth = info["digest"], info["depth"]
        base_text = f"0..{depth - 1}"
        costs = info["costs"]
        for task, t in info.get("tasks", {}).items():
            slices, heldout = t["slices"], t["heldout"]
            metric, hib = t["primary"], t["higher_is_better"]
            base = _units(store, digest, base_text, task, slices, spec.dtype)
            if base is None:
                continue
            base_held = _units(store, digest, base_text, task, [heldout], spec.dtype)
            base32 = _units(store, digest, base_text, task, slices, "float32")
            tasks_summary.setdefault(task, {"name": task, "primary_metric": metric, "higher_is_better": hib,
                                            "search_items": sum(map(len, slices)), "heldout_items": len(heldout),
                                            "search_tokens": t["search_tokens"]})
            task_rows = []
            for c in [{"plan": base_text, "design": "base"}, *info["configs"]]:
                plan = c["plan"]
                k = _slices_seen(store, digest, plan, task, slices, spec.dtype)
                if k == 0:
                    continue
                cfg = _units(store, digest, plan, task, slices[:k], spec.dtype)
                cmp = compare(task, metric, hib, base, cfg)
                row = {
                    "model": name, "depth": depth, "config": plan, "design": c["design"],
                    "i": c.get("i", ""), "j": c.get("j", ""), "layer": c.get("layer", ""),
                    "repeats": c.get("repeats", ""), "sublayer": c.get("sublayer", "block"),
                    "task": task, "metric": metric, "higher_is_better": int(hib), **cmp,
                    "stopped_early": int(k < len(slices)),
                }  # fmt: skip
                if plan != base_text and base_held is not None:
                    held = _units(store, digest, plan, task, [heldout], spec.dtype)
                    if held is not None:
                        h = compare(task, metric, hib, base_held, held)
                        row.update(heldout_gain=h["gain"], heldout_ci_low=h["ci_low"], heldout_ci_high=h["ci_high"],
                                   heldout_p=h["p_value"])
                if plan != base_text and base32 is not None:
                    c32 = _units(store, digest, plan, task, slices, "float32")
                    if c32 is not None:
                        row["fp32_gain"] = compare(task, metric, hib, base32, c32, n_resamples=200)["gain"]
                bc, cc = costs[base_text], costs.get(plan, costs[base_text])
                row.update(
                    extra_flops_per_token=cc["flops_per_token"] - bc["flops_per_token"],
                    flops_ratio=cc["flops_per_token"] / bc["flops_per_token"],
                    effective_params=cc["effective_params"], kv_bytes_per_token=cc["kv_bytes_per_token"],
                    export_command=_export_command(name, plan) if plan != base_text else "",
                )
                task_rows.append(row)
            # multiple-comparison control across this model's configs on this task (base excluded)
            cfg_rows = [r for r in task_rows if r["design"] != "base"]
            pv = np.array([r["p_value"] for r in cfg_rows], float)
            if len(pv):
                holm, bh = stats.holm(pv), stats.benjamini_hochberg(pv)
                for r, ph, pb in zip(cfg_rows, holm, bh):
                    r["p_holm"], r["p_bh"] = float(ph), float(pb)
                    r["significant"] = int(ph < 0.05 and not math.isnan(ph))
            rows.extend(task_rows)
            if t.get("signals"):
                signals_summary.setdefault(name, {})[task] = _signal_check(t["signals"], task_rows, depth)
    summary = {
        "preset": spec.preset,
        "models": [{"name": n, "depth": i["depth"], "params": i["params"]} for n, i in manifest["models"].items()],
        "tasks": list(tasks_summary.values()),
        "designs": [d.name for d in spec.designs],
        "dtype": spec.dtype,
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
        "timings": manifest.get("timings", {}),
        "command": manifest.get("command", ""),
        "early_stopping": None if spec.early_stopping is None else vars(spec.early_stopping),
        "signals": signals_summary,
    }
    return rows, summary


def write_results(run_dir: Path, store: Store) -> tuple[Path, Path]:
    rows, summary = study_rows(run_dir, store)
    csv_path = Path(run_dir) / "results.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    json_path = Path(run_dir) / "study.json"
    json_path.write_text(json.dumps(summary, indent=2))
    return csv_path, json_path
