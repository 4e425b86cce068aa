"""Load time and peak RSS of the base model vs a frankenmodel with 10 repeated layers, and KV-cache bytes per
token of both, each measured in a fresh subprocess. Parameter memory must not grow.

    python benchmarks/bench_memory.py [--model smollm2-135m] [--plan 0..19,10..29]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from frankenlm.model.loading import load_model
from frankenlm.model.frankenmodel import build_frankenmodel, storage_ptrs
from frankenlm.model.costs import plan_costs
model, plan = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
lm = load_model(model, dtype="bfloat16")
m = lm.model
fm = build_frankenmodel(m, plan) if plan != "-" else m
t_load = time.perf_counter() - t0
ids = torch.randint(0, 1000, (1, 256))
with torch.inference_mode():
    out = fm(input_ids=ids, use_cache=True)
cache = out.cache
kv = sum(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size() for l in cache.layers)
c = plan_costs(m, None if plan == "-" else plan, frankenmodel=None if plan == "-" else fm, dtype=torch.bfloat16)
param_bytes = sum(storage_ptrs(m, fm).values())
print(json.dumps({"load_s": t_load, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "param_bytes": param_bytes, "kv_bytes_per_token_measured": kv / 256,
                  "kv_bytes_per_token": c.kv_bytes_per_token, "extra_param_bytes": c.extra_param_bytes,
                  "depth": c.depth}))
"""


def run(model: str, plan: str) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, plan], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--plan", default="0..19,10..29", help="default repeats layers 10..19 (10 layers)")
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    run(args.model, "-")  # warm the safetensors cache and the page cache
    base, fm = run(args.model, "-"), run(args.model, args.plan)
    print(f"{'':28}{'base':>14}{'frankenmodel':>16}{'ratio':>8}")
    for key in ("depth", "load_s", "peak_rss_mb", "param_bytes", "kv_bytes_per_token", "kv_bytes_per_token_measured"):
        print(f"{key:28}{base[key]:>14,.2f}{fm[key]:>16,.2f}{fm[key] / base[key]:>8.3f}")
    print(f"extra parameter bytes of the frankenmodel: {fm['extra_param_bytes']}")
    assert fm["param_bytes"] == base["param_bytes"], "parameter memory grew"


if __name__ == "__main__":
    main()
