"""The floor of the full 465-block scan (`frankenlm study --preset full-scan`) on this machine, measured.

Racing cannot stop a configuration before its first look, so every configuration pays at least one search slice:
its changed suffix of decoder layers (prefix reuse skips the rest) plus the output head over every scored
position. This script times units of the preset's first slice with suffixes of 1 to 31 layers (bf16, prefix
reuse, the sweep's own `SliceScorer`), fits time = head + suffix x per-layer, and sums it over the preset's
configurations; adds the base pass over every slice and the `heldout_top_k` leaders' remaining slices (racing
never stops them). What the scan also pays beyond this floor — configurations that need a second look, the
held-out check and the fp32 re-check of the top configurations — is printed beside it from `--measured`.

    python benchmarks/bench_scan_floor.py [--threads 2] [--rounds 3] [--measured-sweep 743]

Prints the load average beside the figures (these machines are shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from frankenlm.model.loading import configure_cpu, load_model  # noqa: E402
from frankenlm.model.plan import identity_plan  # noqa: E402
from frankenlm.study.items import select_items  # noqa: E402
from frankenlm.study.prefix_cache import base_prefix_length  # noqa: E402
from frankenlm.study.runner import study_candidates  # noqa: E402
from frankenlm.study.spec import preset  # noqa: E402
from frankenlm.study.units import SliceScorer  # noqa: E402


def load() -> str:
    a = os.getloadavg()
    return f"load {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f}"


def suffix(plan) -> int:
    return len(plan) - base_prefix_length(plan)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="times each unit is scored (the median is used)")
    ap.add_argument("--measured-sweep", type=float, default=None, help="a measured full-scan sweep, in seconds")
    args = ap.parse_args()
    configure_cpu(args.threads)
    spec = preset("full-scan")
    lm = load_model(spec.models[0], dtype=spec.dtype)
    items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
    configs = [c.plan for c in study_candidates(spec, lm.depth)]
    docs = items.search_slices[0]
    base = identity_plan(lm.depth)
    by_suffix = {}
    for p in configs:
        by_suffix.setdefault(suffix(p), p)
    probes = [by_suffix[s] for s in sorted(by_suffix)[:: max(1, len(by_suffix) // 6)]]
    print(f"{spec.models[0]} {spec.dtype}, {args.threads} threads, {len(configs)} configurations; {load()}")
    scorer = SliceScorer(spec, lm, True)
    times: dict = {p: [] for p in probes}
    base_times = []
    for _ in range(args.rounds):
        scorer.release()
        t0 = time.perf_counter()  # the base pass runs in prepare (it keeps the states the plans reuse)
        scorer.prepare(docs, [base, *probes])
        scorer.score(base, remaining=probes)
        base_times.append(time.perf_counter() - t0)
        for n, p in enumerate(probes):
            t0 = time.perf_counter()
            scorer.score(p, remaining=probes[n + 1 :])
            times[p].append(time.perf_counter() - t0)
    xs = np.array([suffix(p) for p in probes], dtype=float)
    ys = np.array([float(np.median(times[p])) for p in probes])
    per_layer, head = np.polyfit(xs, ys, 1)
    for p in probes:
        print(f"  suffix {suffix(p):2d} layers ({p}): {np.median(times[p]):.3f} s per slice")
    print(
        f"fit: {head:.3f} s (head and scoring) + {per_layer * 1000:.1f} ms per suffix layer, per slice of "
        f"{sum(len(d.requests) for d in docs)} windows; base pass {np.median(base_times):.3f} s"
    )
    first = sum(head + per_layer * suffix(p) for p in configs)
    base_all = float(np.median(base_times)) * spec.slices
    leaders = spec.heldout_top_k * (spec.slices - 1) * (head + per_layer * float(np.mean([suffix(p) for p in configs])))
    floor = first + base_all + leaders
    print(
        f"floor of the sweep: first look of every configuration {first:.0f} s + base passes {base_all:.0f} s + "
        f"{spec.heldout_top_k} leaders' remaining slices {leaders:.0f} s = {floor:.0f} s ({floor / 60:.1f} min)"
    )
    if args.measured_sweep:
        print(f"measured sweep {args.measured_sweep:.0f} s = {args.measured_sweep / floor:.2f}x the floor")
    print(f"target for the whole scan (sweep, held-out, fp32 re-check): 600 s; {load()}")


if __name__ == "__main__":
    main()
