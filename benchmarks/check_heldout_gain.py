"""Is a held-out accuracy gain real? Re-scores the items it rests on through a second code path.

A study scores held-out items with frankenlm's scorer on the zero-copy frankenmodel (shared weights, prefix
reuse). This script scores the same items with nothing of that: the configuration is exported as a materialized
Hugging Face directory (`frankenlm.export`), loaded back with transformers' own `from_pretrained`, and both it
and the base are scored by lm-eval's `HFLM.loglikelihood` (its tokenization, batching and log-softmax). Items:
every held-out item on which the stored base and configuration disagree on the task's accuracy metric (the
items the gain rests on) and `--agree` items on which they agree (seeded sample). It prints, per model, the
largest |Δ log-likelihood| against the stored results and the items whose stored accuracy is not reproduced,
then the fixed and broken counts as stored and as recomputed.

    python benchmarks/check_heldout_gain.py RUN_DIR MODEL TASK PLAN [--agree 30] [--threads 1]

RUN_DIR is a study's run directory, or a folder of committed results (`findings/`: it is rebuilt first).
Memory: the base, then the export, are loaded one at a time (plus the export's write).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from check_reproduction import open_run  # noqa: E402  (this folder's: a run's spec, manifest and store)
from frankenlm.eval.tasks.requests import LoglikelihoodResult  # noqa: E402
from frankenlm.model.loading import configure_cpu, load_model  # noqa: E402
from frankenlm.model.plan import coerce_plan, identity_plan  # noqa: E402
from frankenlm.study.items import select_items  # noqa: E402
from frankenlm.study.store import Unit, item_set_digest  # noqa: E402


def hflm_results(model, tokenizer, docs) -> list[list[LoglikelihoodResult]]:
    """Each doc's choice log-likelihoods, from lm-eval's HFLM on `model` (a transformers model)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, max_length=2048)
    flat = [(k, r) for k, d in enumerate(docs) for r in d.requests]
    reqs = [
        Instance(request_type="loglikelihood", doc={}, arguments=(r.context, r.continuation), idx=n)
        for n, (_, r) in enumerate(flat)
    ]
    got = hf.loglikelihood(reqs, disable_tqdm=True)
    out: list[list[LoglikelihoodResult]] = [[] for _ in docs]
    for (k, _), (lp, greedy) in zip(flat, got, strict=True):
        out[k].append(LoglikelihoodResult(float(lp), bool(greedy), 0, 0))  # token counts: not compared here
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("model")
    ap.add_argument("task")
    ap.add_argument("plan")
    ap.add_argument("--agree", type=int, default=30, help="items on which base and configuration agree, also checked")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    configure_cpu(args.threads)
    spec, manifest, store = open_run(args.run_dir)
    dtype = spec.task_dtype(args.task)
    lm = load_model(args.model, dtype="float32")
    info = ((manifest["models"].get(lm.name) or {}).get("tasks") or {}).get(args.task)
    if not info or not info.get("heldout"):
        sys.exit(f"the run has no held-out items of {lm.name} · {args.task}")
    metric = info["primary"]
    if metric not in ("acc", "acc_norm"):
        sys.exit(f"{args.task} is measured in {metric}: this check re-scores multiple-choice accuracy only")
    docs = select_items(
        next(b for b in spec.tasks if b.name == args.task), lm.tokenizer, spec.slices, spec.seed
    ).heldout
    assert [d.item_id for d in docs] == info["heldout"], "the held-out items differ from the run's"
    key = item_set_digest(args.task, info["heldout"])
    plan, base = coerce_plan(args.plan), identity_plan(lm.depth)
    stored = {
        name: store.get(Unit(lm.digest, str(p), args.task, key, dtype)) for name, p in (("base", base), ("plan", plan))
    }
    if any(v is None for v in stored.values()):
        sys.exit(f"no stored held-out unit of {args.plan} and the base for {lm.name} · {args.task} ({dtype})")
    acc = {name: np.array([i["metrics"][metric] for i in items]) for name, items in stored.items()}
    differ = [k for k in range(len(docs)) if acc["base"][k] != acc["plan"][k]]
    agree = [k for k in range(len(docs)) if k not in differ]
    same = sorted(random.Random(0).sample(agree, min(args.agree, len(agree))))
    picked = sorted(differ + same)
    print(
        f"{lm.name} · {args.task} · {args.plan}: {len(docs)} held-out items stored ({dtype}); base {metric} "
        f"{acc['base'].mean():.4f}, configuration {acc['plan'].mean():.4f}; rescoring the {len(differ)} items they "
        f"disagree on and {len(same)} they agree on with lm-eval's HFLM",
        flush=True,
    )
    fresh = {}
    t0 = time.perf_counter()
    fresh["base"] = hflm_results(lm.model, lm.tokenizer, [docs[k] for k in picked])
    with tempfile.TemporaryDirectory(prefix="frankenlm-check-export-") as tmp:
        from frankenlm.export import export_hf

        export_hf({None: lm}, plan, Path(tmp) / "hf", lm.tokenizer)
        tokenizer = lm.tokenizer
        del lm
        gc.collect()
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype="float32").eval()
        fresh["plan"] = hflm_results(model, tokenizer, [docs[k] for k in picked])
        del model
    # each item's accuracy by the task's own scoring (`Doc.score`, checked against lm-eval's in the test suite)
    re_acc = {n: np.array([docs[k].score(res)[metric] for k, res in zip(picked, fresh[n], strict=True)]) for n in fresh}
    for name in ("base", "plan"):
        diffs = [
            float(np.abs(np.array(stored[name][k]["extras"]["logprobs"]) - [x.logprob for x in res]).max())
            for k, res in zip(picked, fresh[name], strict=True)
        ]
        wrong = [docs[k].item_id for n, k in enumerate(picked) if re_acc[name][n] != acc[name][k]]
        print(
            f"  {name}: max |Δ log-likelihood| {max(diffs):.2e} nats (mean {np.mean(diffs):.1e}); stored {metric} "
            f"not reproduced on {len(wrong)} of {len(picked)} items{': ' + ', '.join(wrong) if wrong else ''}"
        )
    idx = {k: n for n, k in enumerate(picked)}
    d = [idx[k] for k in differ]
    print(
        f"  the disagreeing items: stored {int((acc['plan'][differ] > acc['base'][differ]).sum())} fixed / "
        f"{int((acc['plan'][differ] < acc['base'][differ]).sum())} broken; recomputed "
        f"{int((re_acc['plan'][d] > re_acc['base'][d]).sum())} fixed / {int((re_acc['plan'][d] < re_acc['base'][d]).sum())} broken "
        f"({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
