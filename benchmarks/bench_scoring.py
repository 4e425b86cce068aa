"""Benchmark scoring: lm-eval's own `simple_evaluate` with HFLM vs frankenlm's scorer, on the same items.

For each task, lm-eval 0.4.13 evaluates its own task (its YAML over the offline rows,
`frankenlm.eval.lmeval_tasks.local_task`) on its first N documents with HFLM wrapping the already-loaded model;
frankenlm evaluates the same N items (`--limit-mode first`) with its scorer in fast mode (and, with
`--exact`, in lm-eval mode too). Same model object, dtype, threads, batch size and context length; the two run
alternately, `--rounds` times, and the best time of each is kept. Printed per task: the work (request tokens:
context + continuation of every request, the same count for both), each side's seconds and request tokens/s,
the speed-up, and the largest per-request |log-likelihood| difference against lm-eval's logged responses. The load
average is printed beside every figure (the machine is shared).

Beside each speed-up, the bound the layouts set: the forward FLOPs of HFLM's batches (its Collator's rows, padding
included, the head on every position; reproduced by frankenlm's lm-eval mode) over those of the fast layout's
batches (padding included, the head once per scored hidden state). At equal FLOP rates the speed-up is this
ratio; more than it comes from HFLM's per-request overhead.

`--peak` also measures the machine's bf16 matmul peak (4096² GEMMs) and the FLOP rate a plain bf16 forward of
the model reaches (512-token rows), from one run.

    python benchmarks/bench_scoring.py [--model smollm2-135m] [--dtype float32] [--limit 150]
        [--tasks arc_easy,hellaswag,piqa] [--batch-size 8] [--threads 2] [--rounds 2] [--exact] [--peak]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch

from frankenlm.eval.evaluate import run_task, select_docs
from frankenlm.eval.lmeval_tasks import local_task
from frankenlm.eval.scorer import Scorer
from frankenlm.eval.tasks import get_task
from frankenlm.model.loading import load_model

HFLM = "lm-eval HFLM"  # the lm-eval side (frankenlm's own modes are "fast" and "lm-eval")


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f}/{b:.2f}/{c:.2f}"


def lmeval_side(lm, task: str, limit: int, batch_size: int, max_length: int) -> tuple[float, list[list[float]]]:
    """Seconds of lm-eval's simple_evaluate on its first `limit` docs, and its per-doc choice log-likelihoods."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size, max_length=max_length)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=hf, tasks=[local_task.__wrapped__(task)], limit=limit, log_samples=True, verbosity="ERROR"
    )
    seconds = time.perf_counter() - t0
    samples = sorted(next(iter(out["samples"].values())), key=lambda s: s["doc_id"])
    return seconds, [[float(r[0][0]) for r in s["resps"]] for s in samples]


def frankenlm_side(lm, task: str, limit: int, batch_size: int, max_length: int, scoring: str):
    t = get_task(task)
    docs = select_docs(t, limit=limit, seed=0, split="all", limit_mode="first")
    scorer = Scorer(lm.model, lm.tokenizer, batch_size=batch_size, max_length=max_length, scoring=scoring)
    t0 = time.perf_counter()
    _, items = run_task(scorer, t, docs)
    seconds = time.perf_counter() - t0
    lls = [list(it.extras["logprobs"]) if "logprobs" in it.extras else [-it.extras["nll"]] for it in items]
    work = sum(len(scorer.encode(r.context + r.continuation)) for d in docs for r in d.requests)
    return seconds, lls, work


def layout_flops(lm, task: str, limit: int, batch_size: int, max_length: int) -> tuple[float, float]:
    """Forward FLOPs of (HFLM's batches, the fast layout's batches) for the task's first `limit` items."""
    from frankenlm.eval.packing import fill_batches, make_packs
    from frankenlm.model.costs import plan_costs

    docs = select_docs(get_task(task), limit=limit, seed=0, split="all", limit_mode="first")
    scorer = Scorer(lm.model, lm.tokenizer, batch_size=batch_size, max_length=max_length, scoring="lm-eval")
    pairs = [scorer.encode_pair(r.context, r.continuation) for d in docs for r in d.requests]
    out = lm.model.get_output_embeddings()
    head = 2.0 * out.weight.numel()

    def body(width: int) -> float:  # per token: every layer at this row width (no head)
        return plan_costs(lm.model, None, context=width).flops_per_token - head

    hflm = 0.0
    for batch in scorer.batch_plan(pairs):
        width = max(min(len(pairs[i][0]) + len(pairs[i][1]), max_length + 1) - 1 for i in batch)
        hflm += len(batch) * width * (body(width) + head)
    fast = 0.0
    for rows in fill_batches(make_packs(pairs, max_length), batch_size):
        width = len(rows[0][0])
        scored = sum(len({i for idx in p.scored() for i in idx}) for row in rows for p in row)
        fast += len(rows) * width * body(width) + scored * head
    return hflm, fast


def peak(lm, threads: int) -> None:
    from frankenlm.model.costs import plan_costs

    n = 4096
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    reps, t0 = 5, time.perf_counter()
    for _ in range(reps):
        a @ b
    gemm = 2 * n**3 * reps / (time.perf_counter() - t0)
    model = lm.model.to(torch.bfloat16)
    ids = torch.randint(100, 1000, (4, 512))
    flops = plan_costs(model, None, context=512).flops_per_token * ids.numel()
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False)
        t0 = time.perf_counter()
        for _ in range(3):
            model(input_ids=ids, use_cache=False)
        fwd = 3 * flops / (time.perf_counter() - t0)
    print(
        f"peak ({threads} threads, {load()}): bf16 matmul 4096² {gemm / 1e9:,.0f} GFLOP/s; plain bf16 forward "
        f"(4 x 512 tokens) {fwd / 1e9:,.0f} GFLOP/s = {100 * fwd / gemm:.0f}% of the matmul peak"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tasks", default="arc_easy,hellaswag,piqa")
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--exact", action="store_true", help="also time frankenlm's lm-eval scoring mode")
    ap.add_argument("--peak", action="store_true", help="also measure the bf16 matmul peak and a forward's rate")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    lm = load_model(args.model, dtype=args.dtype)
    modes = ["fast", *(["lm-eval"] if args.exact else [])]
    print(f"{args.model} {args.dtype}, {args.threads} threads, batch {args.batch_size}, first {args.limit} items")
    total = {HFLM: 0.0, **{m: 0.0 for m in modes}}
    flops = [0.0, 0.0]
    for task in args.tasks.split(","):
        best: dict[str, float] = {}
        theirs: list[list[float]] = []
        mine: dict[str, list[list[float]]] = {}
        work = 0
        for r in range(args.rounds):
            order = [HFLM, *modes] if r % 2 == 0 else [*modes, HFLM]
            for side in order:
                if side == HFLM:
                    s, theirs = lmeval_side(lm, task, args.limit, args.batch_size, args.max_length)
                else:
                    s, mine[side], work = frankenlm_side(lm, task, args.limit, args.batch_size, args.max_length, side)
                best[side] = min(best.get(side, float("inf")), s)
        for side in best:
            total[side] += best[side]
        hflm_flops, fast_flops = layout_flops(lm, task, args.limit, args.batch_size, args.max_length)
        bound = hflm_flops / fast_flops
        flops = [flops[0] + hflm_flops, flops[1] + fast_flops]
        line = [f"{task}: {work:,} request tokens; lm-eval HFLM {best[HFLM]:.1f} s ({work / best[HFLM]:,.0f} tok/s)"]
        for m in modes:
            diff = max(abs(a - b) for x, y in zip(mine[m], theirs, strict=True) for a, b in zip(x, y, strict=True))
            line.append(
                f"frankenlm {m} {best[m]:.1f} s ({work / best[m]:,.0f} tok/s) = {best[HFLM] / best[m]:.2f}x, "
                f"max |Δ loglik| {diff:.1e}"
            )
        line.append(f"FLOP ratio of the layouts (HFLM / fast) {bound:.2f}x")
        print("; ".join(line) + f" [{load()}]", flush=True)
    print(
        "all tasks: "
        + ", ".join(f"{m} {total[HFLM] / total[m]:.2f}x lm-eval" for m in modes)
        + f"; FLOP ratio of the layouts {flops[0] / flops[1]:.2f}x [{load()}]"
    )
    if args.peak:
        peak(lm, args.threads)


if __name__ == "__main__":
    main()
