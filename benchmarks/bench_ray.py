"""Throughput of the in-process executor vs Ray with 1 worker (2 threads) and 2 workers (1 thread each), on the
same sweep in one run. Each variant writes a fresh store; the numbers are checked to agree.

    python benchmarks/bench_ray.py [--tokens 4096] [--stride 6] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from frankenlm.model.loading import load_model  # noqa: E402
from frankenlm.study.executors import LocalExecutor, RayExecutor  # noqa: E402
from frankenlm.study.items import select_items  # noqa: E402
from frankenlm.study.runner import study_candidates  # noqa: E402
from frankenlm.study.spec import DesignSpec, StudySpec, TaskBudget  # noqa: E402
from frankenlm.study.store import Store  # noqa: E402
from frankenlm.study.sweep import race  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--stride", type=int, default=6, help="repeat-block stride (6 gives 15 configs on 30 layers)")
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    import ray

    spec = StudySpec(
        "bench",
        ["smollm2-135m"],
        [TaskBudget("lambada_passages", search_tokens=args.tokens)],
        [DesignSpec("repeat-block", {"stride": args.stride})],
        dtype=args.dtype,
        slices=2,
        early_stopping=None,
        batch_size=16,
        context_length=1024,
    )
    torch.set_num_threads(2)
    lm = load_model("smollm2-135m", dtype=args.dtype)
    items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
    configs = study_candidates(spec, lm.depth)
    units = (len(configs) + 1) * spec.slices
    print(
        f"load average before: {os.getloadavg()[0]:.2f}; {len(configs)} configurations x {items.search_tokens} "
        f"tokens ({units} units), {args.dtype}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    results = {}
    variants = [
        ("in-process, 2 threads", "local", 1, 2),
        ("ray, 1 worker x 2 threads", "ray", 1, 2),
        ("ray, 2 workers x 1 thread", "ray", 2, 1),
    ]
    for label, kind, workers, threads in variants:
        store = Store(tmp / f"{kind}-{workers}.sqlite")
        if kind == "local":
            torch.set_num_threads(threads)
            ex = LocalExecutor(spec, lm, store, args.dtype)
        else:
            t_start = time.perf_counter()
            ex = RayExecutor(spec, "smollm2-135m", store, args.dtype, workers=workers, threads=threads)
            print(f"  ({label}: workers started and models loaded in {time.perf_counter() - t_start:.1f} s)")
        t0 = time.perf_counter()
        race(spec, lm, items, configs, store, executor=ex, early_stopping=False)
        dt = time.perf_counter() - t0
        ex.close()
        rows = {
            k: json.loads(store.db.execute("SELECT items FROM results WHERE key=?", (k,)).fetchone()[0])
            for k, *_ in store.rows()
        }
        results[label] = (dt, rows)
        print(
            f"{label:28} {dt:8.1f} s   {units / dt:6.2f} units/s   {units * items.search_tokens / spec.slices / dt:8.0f} tokens/s"
        )
    base_t = results[variants[0][0]][0]
    for label, (dt, _) in results.items():
        print(f"{label:28} speed-up vs in-process: {base_t / dt:5.2f}x")
    ref = results[variants[0][0]][1]
    worst = max(
        abs(a["extras"]["nll"] - b["extras"]["nll"])
        for _, rows in results.values()
        for k in ref
        for a, b in zip(ref[k], rows[k])
    )
    print(f"largest per-document nll difference between executors: {worst:.3g} (same dtype, different threads)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
