"""The study engine vs the naive path on the same sweep, in one run.

Naive: a fresh full forward pass of each frankenmodel over every token in lm-eval's row layout (what a
per-configuration scan or lm-eval does). Engine: prefix reuse and fast scoring (and, in the second pair, racing).
Prints wall times, ratios, the largest difference in any configuration's metric, and whether the top-5
configurations agree.

    python benchmarks/bench_study.py [--tokens 8192] [--stride 4] [--threads 2] [--slices 8] [--skip-fp32] [--skip-reuse-only]

Benchmarks (`--task arc_easy --items 400 --skip-fp32`): the naive sweep costs the same for every configuration,
so `--naive-configs K` times it on the first K configurations only and scales the time to all of them (printed as
such); the top 5 by accuracy of the engine without racing (every configuration on the full budget) is compared
with racing's, and the engine's accuracies with the naive ones on the K configurations both ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from frankenlm.model.loading import load_model  # noqa: E402
from frankenlm.study.items import select_items  # noqa: E402
from frankenlm.study.runner import study_candidates  # noqa: E402
from frankenlm.study.spec import DesignSpec, EarlyStopping, StudySpec, TaskBudget  # noqa: E402
from frankenlm.study.store import Store  # noqa: E402
from frankenlm.study.sweep import race  # noqa: E402


def sweep(spec, lm, items, configs, store_path, reuse, early):
    store = Store(store_path, context_length=spec.context_length, scoring=spec.scoring)
    t0 = time.perf_counter()
    seen = {str(p): k for p, k in race(spec, lm, items, configs, store, reuse=reuse, early_stopping=early).items()}
    dt = time.perf_counter() - t0
    return store, seen, dt


def gains(store, lm, items, configs, seen, dtype):
    from frankenlm.study.analysis import _units, compare

    slices = [[d.item_id for d in s] for s in items.search_slices]
    base = _units(store, lm.digest, f"0..{lm.depth - 1}", items.task, slices, dtype)
    out = {}
    for c in configs:
        k = seen[c.text]
        cfg = _units(store, lm.digest, c.text, items.task, slices[:k], dtype)
        out[c.text] = (compare(items.task, items.primary, items.higher_is_better, base, cfg, n_resamples=200), k)
    return out


def top5(g, n_slices):
    full = [(-v["gain"], p) for p, (v, k) in g.items() if k == n_slices]
    return [p for _, p in sorted(full)[:5]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument(
        "--stride", type=int, default=3, help="repeat-block stride (3 gives 55 configs on 30 layers, 4 gives 36)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slices", type=int, default=8, help="racing looks after each slice")
    ap.add_argument(
        "--also-slices",
        default="",
        help="comma-separated slice counts: also race with these (finer looks), against the same references",
    )
    ap.add_argument("--skip-fp32", action="store_true")
    ap.add_argument("--task", default="lambada_passages", help="lambada_passages (bits per byte) or a benchmark")
    ap.add_argument("--items", type=int, default=400, help="search items of a benchmark task")
    ap.add_argument("--naive-configs", type=int, default=None, help="time the naive sweep on this many configs")
    ap.add_argument(
        "--skip-reuse-only",
        action="store_true",
        help="in bf16, skip the reuse-only pass (fp32 already shows reuse alone)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; threads {args.threads}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-study-"))
    for dtype, early in ([] if args.skip_fp32 else [("float32", False)]) + [("bfloat16", True)]:
        budget = (
            TaskBudget(args.task, search_tokens=args.tokens)
            if args.task == "lambada_passages"
            else TaskBudget(args.task, search_items=args.items)
        )
        spec = StudySpec(
            "bench",
            ["smollm2-135m"],
            [budget],
            [DesignSpec("repeat-block", {"stride": args.stride})],
            dtype=dtype,
            slices=args.slices,
            early_stopping=EarlyStopping(),
            batch_size=16,
            context_length=1024,
        )
        lm = load_model("smollm2-135m", dtype=dtype)
        items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
        configs = study_candidates(spec, lm.depth)
        print(
            f"\n== {dtype}: {len(configs)} configurations x {items.search_tokens} tokens "
            f"({sum(map(len, items.search_slices))} documents)"
        )
        naive_spec = replace(spec, scoring="lm-eval")
        measured = configs[: args.naive_configs] if args.naive_configs else configs
        s_naive, seen_n, t_naive = sweep(naive_spec, lm, items, measured, tmp / f"naive-{dtype}.sqlite", False, False)
        if len(measured) < len(configs):
            t_one = t_naive
            t_naive = t_naive * len(configs) / len(measured)
            print(
                f"naive (fresh forward per configuration, lm-eval layout): {t_one:8.1f} s for {len(measured)} "
                f"configurations -> {t_naive:8.1f} s scaled to {len(configs)}"
            )
        else:
            print(f"naive (fresh forward per configuration, lm-eval layout): {t_naive:8.1f} s")
        g_n = gains(s_naive, lm, items, measured, seen_n, dtype)
        if len(measured) < len(configs):  # the engine without racing stands in for the naive ranking
            s_full, seen_full, t_full = sweep(spec, lm, items, configs, tmp / f"full-{dtype}.sqlite", True, False)
            print(f"engine, prefix reuse, no racing:         {t_full:8.1f} s   speed-up {t_naive / t_full:5.2f}x")
            g_full = gains(s_full, lm, items, configs, seen_full, dtype)
            diff = max(abs(g_n[p][0]["value"] - g_full[p][0]["value"]) for p in g_n)
            print(f"largest |difference| in {items.primary} vs naive on its {len(measured)} configurations: {diff:.3g}")
            g_n = g_full
        if not (early and args.skip_reuse_only):
            s_fast, seen_f, t_fast = sweep(spec, lm, items, configs, tmp / f"reuse-{dtype}.sqlite", True, False)
            print(f"engine, prefix reuse:                    {t_fast:8.1f} s   speed-up {t_naive / t_fast:5.2f}x")
            g_f = gains(s_fast, lm, items, configs, seen_f, dtype)
            diff = max(abs(g_n[p][0]["value"] - g_f[p][0]["value"]) for p in g_n if p in g_f)
            print(f"largest |difference| in any configuration's {items.primary}: {diff:.3g}")
        if early:
            s_es, seen_e, t_es = sweep(spec, lm, items, configs, tmp / f"race-{dtype}.sqlite", True, True)
            g_e = gains(s_es, lm, items, configs, seen_e, dtype)
            stopped = sum(1 for k in seen_e.values() if k < spec.slices)
            full_diff = max(abs(g_n[p][0]["value"] - g_e[p][0]["value"]) for p in g_e if seen_e[p] == spec.slices)
            print(
                f"engine, prefix reuse + racing:           {t_es:8.1f} s   speed-up {t_naive / t_es:5.2f}x "
                f"({stopped}/{len(configs)} stopped early)"
            )
            print(f"largest |difference| among configurations run to the end: {full_diff:.3g}")
            a, b = top5(g_n, spec.slices), top5(g_e, spec.slices)
            print(f"top-5 full budget: {a}\ntop-5 racing:      {b}\nsame top-5: {a == b}")
            looks = sorted(seen_e.values())
            print("slices seen per configuration: " + ", ".join(f"{k}: {looks.count(k)}" for k in sorted(set(looks))))
            for k in [int(x) for x in args.also_slices.split(",") if x.strip()]:
                spec_k = replace(spec, slices=k)
                items_k = select_items(spec_k.tasks[0], lm.tokenizer, k, spec_k.seed)
                s_k, seen_k, t_k = sweep(spec_k, lm, items_k, configs, tmp / f"race{k}-{dtype}.sqlite", True, True)
                g_k = gains(s_k, lm, items_k, configs, seen_k, dtype)
                stopped = sum(1 for n in seen_k.values() if n < k)
                b = top5(g_k, k)
                print(
                    f"engine, prefix reuse + racing, {k} slices: {t_k:8.1f} s   speed-up {t_naive / t_k:5.2f}x "
                    f"({stopped}/{len(configs)} stopped early); same top-5 as the full budget: {a == b} {b}"
                )
        del lm
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
