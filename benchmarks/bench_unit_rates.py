"""What one unit of the findings protocol costs per model and task, to size the run (`findings/protocol.json`).

A unit is one configuration scored on one search slice. For each task named, this times the base pass over the
first slice and one mid-depth single-layer repeat scored with prefix reuse (the sweep's own `SliceScorer`), in
the protocol's dtype and batch size. Multiply by the units a task needs (racing decides how many) for its cost.

    python benchmarks/bench_unit_rates.py MODEL TASK [TASK ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from frankenlm.model.loading import configure_cpu, load_model  # noqa: E402
from frankenlm.model.plan import coerce_plan, identity_plan  # noqa: E402
from frankenlm.study.items import select_items  # noqa: E402
from frankenlm.study.spec import StudySpec  # noqa: E402
from frankenlm.study.units import SliceScorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spec", default=str(ROOT / "findings" / "protocol.json"))
    args = ap.parse_args()
    configure_cpu(args.threads)
    spec = StudySpec.from_json(Path(args.spec).read_text())
    lm = load_model(args.model, dtype=spec.dtype)
    d = lm.depth
    base, plan = identity_plan(d), coerce_plan(f"0..{d // 2},{d // 2}..{d - 1}")
    for name in args.tasks:
        budget = next(t for t in spec.tasks if t.name == name)
        docs = select_items(budget, lm.tokenizer, spec.slices, spec.seed).search_slices[0]
        scorer = SliceScorer(spec, lm, True)
        t0 = time.perf_counter()
        scorer.prepare(docs, [base, plan])
        scorer.score(base, remaining=[plan])
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer.score(plan, remaining=[])
        t_unit = time.perf_counter() - t0
        load = os.getloadavg()
        print(
            f"{args.model} {name}: {len(docs)} items per slice, base pass {t_base:.1f} s, a mid-depth repeat "
            f"({plan}) {t_unit:.1f} s per unit [load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}]",
            flush=True,
        )


if __name__ == "__main__":
    main()
