"""Run named tasks through a `Scorer` and aggregate: `evaluate` (whole tasks) and `run_task` (given docs).

`evaluate` chooses each task's items (`limit`, `limit_mode`, `seed`, `split`), answers every request type in
one batched run per type, scores items, aggregates the task's declared metrics with standard errors (via
`frankenlm.eval.stats`) and returns an `EvalResult`. It draws nothing: progress goes to an optional callback
(`progress(task_name, n_requests) -> advance(n)`), messages to the `frankenlm.eval` logger.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from frankenlm.errors import FrankenError
from frankenlm.eval import stats
from frankenlm.eval.forward import ForwardFn, ProgressFn
from frankenlm.eval.results import EvalResult, ItemResult, MetricValue, TaskResult
from frankenlm.eval.scorer import DEFAULT_BATCH_SIZE, Scorer
from frankenlm.eval.tasks import get_task, list_tasks
from frankenlm.eval.tasks.base import Doc, MeanMetric, RatioMetric, Task, check_selection
from frankenlm.eval.tasks.requests import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    Result,
    RollingRequest,
    RollingResult,
)

log = logging.getLogger(__name__)

TaskProgress = Callable[[str, int], "ProgressFn | None"]  # (task name, requests) -> advance(n), once per task
LIMIT_MODES = ("random", "first")


def select_docs(task: Task, *, limit: int | None, seed: int, split: str, limit_mode: str = "random") -> list[Doc]:
    """A task's items of `split`, in stored order: with `limit`, a seeded random subset of that many
    (`limit_mode="random"`, see `Task.load_docs`) or the first `limit` items (`"first"`, as lm-eval's --limit)."""
    if limit_mode not in LIMIT_MODES:
        raise FrankenError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, got {limit_mode!r}")
    check_selection(limit, seed, split)
    if limit_mode == "first":
        docs = task.load_docs(limit=None, seed=seed, split=split)
        return docs if limit is None else docs[: int(limit)]
    return task.load_docs(limit=limit, seed=seed, split=split)


def aggregate(task: Task, items: Sequence[ItemResult]) -> dict[str, MetricValue]:
    """Task-level metrics from item results, as the task's metric specs declare."""
    out: dict[str, MetricValue] = {}
    for spec in task.metrics:
        if not items:
            continue
        if isinstance(spec, MeanMetric):
            value, se = stats.mean_and_se([it.metrics[spec.name] for it in items])
        elif isinstance(spec, RatioMetric):
            # the stats helpers pick the transform by name: exp for any perplexity, r/ln2 for bits per byte
            stats_name = "bits_per_byte" if spec.kind == "bits" else "token_perplexity"
            nll = [it.extras["nll"] for it in items]
            denom = [1.0 if spec.denominator is None else it.extras[spec.denominator] for it in items]
            value = stats.ratio_metric(stats_name, nll, denom)
            se = stats.ratio_metric_se(stats_name, nll, denom)
        else:  # pragma: no cover - Metric is a closed union
            raise TypeError(spec)
        out[spec.name] = MetricValue(float(value), None if not math.isfinite(se) else float(se))
    return out


def answer_requests(scorer: Scorer, docs: Sequence[Doc], progress: ProgressFn | None = None) -> list[list[Result]]:
    """Responses to every doc's requests (per doc, in request order); each request type in one batched run."""
    flat: list[tuple[int, int, Request]] = [
        (d, r, req) for d, doc in enumerate(docs) for r, req in enumerate(doc.requests)
    ]
    responses: list[list[Result | None]] = [[None] * len(doc.requests) for doc in docs]
    kinds: list[tuple[type, Callable[..., Sequence[Result]]]] = [
        (LoglikelihoodRequest, scorer.loglikelihood_detailed),
        (RollingRequest, scorer.loglikelihood_rolling_detailed),
        (GenerateRequest, scorer.generate_until_detailed),
    ]
    for kind, run in kinds:
        selected = [(d, r, req) for d, r, req in flat if isinstance(req, kind)]
        if not selected:
            continue
        answers = run([req for _, _, req in selected], progress)
        for (d, r, _), ans in zip(selected, answers, strict=True):
            responses[d][r] = ans
    return [[r for r in rs if r is not None] for rs in responses]


def _token_counts(results: Sequence[Result]) -> tuple[int, int]:
    processed = scored = 0
    for r in results:
        if isinstance(r, LoglikelihoodResult):
            processed += r.n_input_tokens
            scored += r.n_continuation_tokens
        elif isinstance(r, RollingResult):
            processed += r.n_input_tokens
            scored += r.n_tokens
        elif isinstance(r, GenerateResult):
            processed += r.n_context_tokens + r.n_generated_tokens
            scored += r.n_generated_tokens
    return processed, scored


def run_task(
    scorer: Scorer, task: Task, docs: Sequence[Doc], progress: ProgressFn | None = None
) -> tuple[TaskResult, list[ItemResult]]:
    """Answer, score and aggregate one task's docs."""
    start = time.perf_counter()
    responses = answer_requests(scorer, docs, progress)
    wall = time.perf_counter() - start
    items = [
        ItemResult(task.name, doc.item_id, doc.split, doc.score(res), doc.extras(res))
        for doc, res in zip(docs, responses, strict=True)
    ]
    processed = scored = 0
    for res in responses:
        p, s = _token_counts(res)
        processed += p
        scored += s
    result = TaskResult(
        task=task.name,
        n_items=len(items),
        metrics=aggregate(task, items),
        n_requests=sum(len(d.requests) for d in docs),
        tokens_processed=processed,
        tokens_scored=scored,
        wall_s=wall,
        tokens_per_s=processed / wall if wall > 0 else float("nan"),
        source=task.source,
        notes=task.notes,
    )
    return result, items


def _model_info(model: Any) -> dict[str, Any]:
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    config = getattr(model, "config", None)
    return {
        "model_class": type(model).__name__,
        "model_name": getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "dtype": str(params[0].dtype).replace("torch.", "") if params else None,
    }


def evaluate(
    model: Any,
    tokenizer: Any,
    task_names: str | Sequence[str],
    *,
    limit: int | None = None,
    seed: int = 1234,
    split: str = "all",
    limit_mode: str = "random",
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    max_length: int | None = None,
    forward: ForwardFn | None = None,
    progress: TaskProgress | bool | None = None,
    scoring: str = "fast",
) -> EvalResult:
    """Evaluate `model` on the named tasks (items chosen by limit/limit_mode/seed/split, see `select_docs`).

    Works in whatever dtype the model has (log-probabilities are always accumulated in fp32). `device` is where
    inputs are sent (the model must already be there; default: the model's device). `forward` replaces the
    model call (see `Scorer`). `max_length` (default min(2048, the model's limit)) bounds
    every model input: rolling-perplexity window size and the left truncation of long contexts.
    `scoring`: "fast" (contexts packed, head only at scored positions; within 1e-4 of lm-eval per item in fp32) or
    "lm-eval" (HFLM's batching, identical log-likelihoods); a custom `forward` always uses lm-eval's layout.
    `progress`, when callable, is called once per task as `progress(task_name, n_requests)` and may return a
    function that is then called with the number of requests each batch finished (a bool means no callback).
    """
    names = [task_names] if isinstance(task_names, str) else list(task_names)
    if not names:
        raise FrankenError("no tasks given; valid tasks: " + ", ".join(list_tasks()))
    check_selection(limit, seed, split)
    if limit_mode not in LIMIT_MODES:
        raise FrankenError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, got {limit_mode!r}")
    tasks = [get_task(n) for n in names]  # unknown names fail before any work
    scorer = Scorer(
        model, tokenizer, batch_size=batch_size, device=device, max_length=max_length, forward=forward, scoring=scoring
    )
    start = progress if callable(progress) else None
    results: dict[str, TaskResult] = {}
    items: list[ItemResult] = []
    for task in tasks:
        docs = select_docs(task, limit=limit, seed=seed, split=split, limit_mode=limit_mode)
        n_requests = sum(len(d.requests) for d in docs)
        log.info("task %s: %d items, %d requests", task.name, len(docs), n_requests)
        advance = start(task.name, n_requests) if start is not None else None
        result, task_items = run_task(scorer, task, docs, advance)
        results[task.name] = result
        items.extend(task_items)
    config = {
        "tasks": names,
        "limit": limit,
        "limit_mode": limit_mode,
        "seed": seed,
        "split": split,
        "batch_size": scorer.batch_size,
        "max_length": scorer.max_length,
        "device": str(scorer.device),
        "custom_forward": forward is not None,
        "scoring": scorer.scoring,
        "prefix_token_id": scorer.prefix_token_id,
        **_model_info(model),
        "versions": _versions(),
    }
    return EvalResult(results, items, config)


def _versions() -> dict[str, str]:
    import transformers

    from frankenlm import __version__

    return {
        "frankenlm": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
