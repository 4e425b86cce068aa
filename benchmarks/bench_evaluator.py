"""Scoring throughput of frankenlm's evaluator vs a plain HF forward loop over the same tokens, in one run.

The plain loop feeds the same padded batches to the model and gathers the target log-probabilities; the
evaluator does that plus lm-eval's request handling. Target: ratio >= 0.9.

    python benchmarks/bench_evaluator.py [--tokens 8192] [--dtype bfloat16] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from frankenlm.eval.evaluator import Scorer, rolling_windows  # noqa: E402
from frankenlm.eval.tasks import get_task  # noqa: E402
from frankenlm.model.loading import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model("smollm2-135m", dtype=args.dtype)
    docs, n = [], 0
    for d in get_task("lambada_passages").load_docs(split="search"):
        if n >= args.tokens:
            break
        docs.append(d.requests[0])
        n += len(lm.tokenizer(d.requests[0].text).input_ids)
    scorer = Scorer(lm.model, lm.tokenizer, batch_size=args.batch_size, max_length=1024)
    # the same token windows and batches the evaluator uses, for the plain loop
    pairs = []
    for r in docs:
        for inp, tgt in rolling_windows(scorer.encode(r.text), 1024, scorer.prefix_token_id):
            pairs.append((inp, tgt))
    batches = []
    for batch in scorer.batch_plan(pairs):
        width = max(len(pairs[i][0]) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        tgt = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            k = len(pairs[i][0])
            ids[row, :k] = torch.tensor(pairs[i][0])
            tgt[row, :k] = torch.tensor(pairs[i][1][-k:]) if len(pairs[i][1]) >= k else 0
            mask[row, :k] = 1
        batches.append((ids, mask, tgt))
    n_tokens = sum(int(m.sum()) for _, m, _ in batches)

    @torch.inference_mode()
    def plain():
        total = 0.0
        for ids, mask, tgt in batches:
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
            lp = torch.log_softmax(logits, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            total += float((lp * mask).sum())
        return total

    def evaluator():
        return sum(scorer.loglikelihood_rolling(docs))

    print(
        f"load average before: {os.getloadavg()[0]:.2f}; {n_tokens} tokens in {len(batches)} batches; "
        f"{args.dtype}, {args.threads} threads"
    )
    plain(), evaluator()  # warm-up
    t_plain, t_eval = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both
        t0 = time.perf_counter()
        plain()
        t_plain.append(time.perf_counter() - t0)  # noqa: E702
        t0 = time.perf_counter()
        evaluator()
        t_eval.append(time.perf_counter() - t0)  # noqa: E702
    tp, te = min(t_plain), min(t_eval)
    print(f"plain HF loop: {n_tokens / tp:8.0f} tokens/s   (best of {args.repeats}: {tp:.2f} s)")
    print(f"evaluator:     {n_tokens / te:8.0f} tokens/s   (best of {args.repeats}: {te:.2f} s)")
    print(f"ratio evaluator / plain: {tp / te:.3f}  (target >= 0.9)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
