"""Does this machine reproduce a study's stored units? Recomputes some and compares them item by item.

A study pairs every configuration with the base model item by item, so units computed on two machines may be
mixed only if both compute the same numbers. This script recomputes stored units of one model and task on one
search slice (the sweep's own `SliceScorer`, prefix reuse, the run's dtype) and prints, per plan, the largest and
mean per-item difference of every numeric result, the items whose accuracy flipped, and how much the paired
difference against the base (the quantity a study reports) moved.

    python benchmarks/check_reproduction.py RUN_DIR MODEL TASK [--dtype float32] [--slice 0] [--plans 4]

RUN_DIR is a study's run directory, or a folder of committed results (`findings/`: it is rebuilt first). The
store is read under the kind of arithmetic the run recorded; this machine's kind is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from frankenlm.model.arithmetic import cpu_kind  # noqa: E402
from frankenlm.model.loading import configure_cpu, load_model  # noqa: E402
from frankenlm.model.plan import coerce_plan, identity_plan  # noqa: E402
from frankenlm.study.items import select_items  # noqa: E402
from frankenlm.study.runner import is_committed_results, manifest_arithmetic, rebuild_run  # noqa: E402
from frankenlm.study.spec import StudySpec  # noqa: E402
from frankenlm.study.store import Store, Unit, item_set_digest  # noqa: E402
from frankenlm.study.units import SliceScorer  # noqa: E402


def numbers(item: dict) -> dict[str, float]:
    """The numeric results of one stored item (metrics and extras), by name."""
    out = {}
    for group in ("metrics", "extras"):
        for k, v in (item.get(group) or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{group}.{k}"] = float(v)
    return out


def open_run(path: str) -> tuple[StudySpec, dict, Store]:
    """A run's spec, manifest and store (read under the arithmetic kind the run recorded); a folder of committed
    results is rebuilt into a temporary run directory first."""
    run_dir = Path(path)
    if is_committed_results(run_dir):
        run_dir = rebuild_run(run_dir, Path(tempfile.mkdtemp(prefix="frankenlm-check-")))
    spec = StudySpec.from_json((run_dir / "spec.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    kind = manifest_arithmetic(manifest)
    store = Store.for_spec(run_dir / "results.sqlite", spec, batch_sizes=manifest.get("batch_sizes"), arithmetic=kind)
    return spec, manifest, store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("model")
    ap.add_argument("task")
    ap.add_argument("--dtype", help="the dtype of the units to recompute (default: the spec's)")
    ap.add_argument("--slice", type=int, default=0, help="which search slice")
    ap.add_argument("--plans", type=int, default=4, help="how many stored configurations beside the base")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    configure_cpu(args.threads)
    spec, manifest, store = open_run(args.run_dir)
    dtype = args.dtype or spec.dtype
    kind = manifest_arithmetic(manifest)
    lm = load_model(args.model, dtype=dtype)
    budget = next(b for b in spec.tasks if b.name == args.task)
    docs = select_items(budget, lm.tokenizer, spec.slices, spec.seed).search_slices[args.slice]
    recorded = manifest["models"][lm.name]["tasks"][args.task]["slices"][args.slice]
    assert [d.item_id for d in docs] == recorded, "the slice's items differ from the run's"
    key = item_set_digest(args.task, [d.item_id for d in docs])
    base = identity_plan(lm.depth)
    stored_plans = [
        p
        for (p,) in store.db.execute(
            "SELECT plan FROM results WHERE model_digest=? AND task=? AND item_set=? AND dtype=? ORDER BY plan",
            (lm.digest, args.task, key, dtype),
        )
    ]
    plans = [base] + [coerce_plan(p) for p in stored_plans if p != str(base)][: args.plans]
    stored = {str(p): store.get(Unit(lm.digest, str(p), args.task, key, dtype)) for p in plans}
    missing = [p for p, v in stored.items() if v is None]
    if missing:
        sys.exit(f"not stored under this run's keys ({kind}): {', '.join(missing)}")
    print(
        f"{lm.name} · {args.task} · slice {args.slice} ({len(docs)} items) · {dtype}: stored by a {kind} run, "
        f"recomputed on {cpu_kind()}"
    )
    scorer = SliceScorer(spec, lm, True)
    t0 = time.perf_counter()
    scorer.prepare(docs, plans)
    fresh = {}
    for n, p in enumerate(plans):
        fresh[str(p)], _ = scorer.score(p, remaining=plans[n + 1 :])
    primary = manifest["models"][lm.name]["tasks"][args.task]["primary"]
    gains_old = np.array([numbers(i)[f"metrics.{primary}"] for i in stored[str(base)]])
    gains_new = np.array([numbers(i)[f"metrics.{primary}"] for i in fresh[str(base)]])
    for p in map(str, plans):
        old, new = stored[p], fresh[p]
        diffs: dict[str, list[float]] = {}
        for a, b in zip(old, new, strict=True):
            na, nb = numbers(a), numbers(b)
            for k in na.keys() & nb.keys():
                diffs.setdefault(k, []).append(abs(na[k] - nb[k]))
        worst = ", ".join(f"{k} max {max(v):.2g} mean {np.mean(v):.2g}" for k, v in sorted(diffs.items()) if max(v) > 0)
        flips = sum(
            1
            for a, b in zip(old, new, strict=True)
            for k in ("acc", "acc_norm")
            if k in a["metrics"] and a["metrics"][k] != b["metrics"][k]
        )
        line = f"  {p}: {worst or 'identical'}"
        if any("acc" in i["metrics"] for i in old):
            line += f"; accuracy flips {flips}"
        if p != str(base):
            po = np.array([numbers(i)[f"metrics.{primary}"] for i in old]) - gains_old
            pn = np.array([numbers(i)[f"metrics.{primary}"] for i in new]) - gains_new
            line += f"; paired mean difference of {primary} moved by {abs(po.mean() - pn.mean()):.3g}"
        print(line, flush=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
