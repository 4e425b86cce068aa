"""Racing replayed on a full-budget store: which configurations racing keeps after each slice, whether the top 5
by the task's metric change, and the measured seconds of the units racing would have run.

The units of a full-budget sweep (`bench_study.py`'s "engine, prefix reuse, no racing" store) are the units a
racing sweep computes, with the same numbers, so racing's decisions can be replayed on them with the study's own
decision functions; the time racing needs is the sum of the stored seconds of the units it keeps.

    python benchmarks/replay_racing.py STORE.sqlite [--task arc_easy --items 400 --stride 3]
"""

from __future__ import annotations

import argparse
import json

from frankenlm.model.loading import load_model
from frankenlm.study import racing, sweep
from frankenlm.study.analysis import point_gain
from frankenlm.study.items import select_items
from frankenlm.study.runner import study_candidates
from frankenlm.study.spec import DesignSpec, EarlyStopping, StudySpec, TaskBudget
from frankenlm.study.store import Store
from frankenlm.study.units import UnitRunner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--task", default="arc_easy")
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--slices", type=int, default=8)
    args = ap.parse_args()
    spec = StudySpec(
        "bench",
        ["smollm2-135m"],
        [TaskBudget(args.task, search_items=args.items)],
        [DesignSpec("repeat-block", {"stride": args.stride})],
        dtype="bfloat16",
        slices=args.slices,
        early_stopping=EarlyStopping(),
        batch_size=16,
        context_length=1024,
    )
    lm = load_model("smollm2-135m", dtype=spec.dtype)
    items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
    store = Store(args.store, context_length=spec.context_length, scoring=spec.scoring)
    runner = UnitRunner(spec, lm, store, spec.dtype)
    alive = [c.plan for c in study_candidates(spec, lm.depth)]
    seen = dict.fromkeys(alive, 0)

    def seconds(p, s: int) -> float:
        key = store.key(runner.unit(p, items.task, items.search_slices[s]))
        return json.loads(store.db.execute("SELECT meta FROM results WHERE key=?", (key,)).fetchone()[0])["seconds"]

    full = sum(seconds(p, s) for p in [runner.base, *alive] for s in range(spec.slices))
    raced = 0.0
    for s in range(spec.slices):
        raced += sum(seconds(p, s) for p in [runner.base, *alive])
        for p in alive:
            seen[p] = s + 1
        looked = sum(len(x) for x in items.search_slices[: s + 1])
        if racing.may_decide(s + 1, spec.slices, looked, spec.early_stopping):
            alive = sweep._race_step(runner, items, alive, s + 1, spec.early_stopping.level, spec.heldout_top_k)
        print(f"after slice {s + 1}: {len(alive)} alive")
    base = runner.collect(runner.base, items.task, items.search_slices)

    def gain(p) -> float:
        got = runner.collect(p, items.task, items.search_slices)
        return point_gain(items.task, items.primary, items.higher_is_better, base, got)

    top_full = sorted(seen, key=lambda p: (-gain(p), str(p)))[:5]
    top_race = sorted([p for p in seen if seen[p] == spec.slices], key=lambda p: (-gain(p), str(p)))[:5]
    print(f"unit seconds: full budget {full:.1f} s, racing {raced:.1f} s ({full / raced:.2f}x fewer)")
    print(f"stopped early: {sum(k < spec.slices for k in seen.values())} of {len(seen)}")
    print(f"top-5 full budget: {[str(p) for p in top_full]}\ntop-5 racing:      {[str(p) for p in top_race]}")
    print(f"same top-5: {top_full == top_race}")


if __name__ == "__main__":
    main()
