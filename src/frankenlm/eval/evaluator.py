"""Compatibility re-exports (the old single-module evaluator, split up). New code imports from the modules:

- `frankenlm.eval.forward`: the `forward(ids, mask) -> logits` waist, `model_max_length`, `rolling_windows`,
  `continuation_logprob`;
- `frankenlm.eval.scorer`: `Scorer` (lm-eval's three request types);
- `frankenlm.eval.evaluate`: `evaluate`, `run_task`, `aggregate`, `answer_requests`;
- `frankenlm.eval.results`: `EvalResult`, `TaskResult`, `ItemResult`, `MetricValue`.
"""

from frankenlm.eval.evaluate import (
    LIMIT_MODES,
    TaskProgress,
    aggregate,
    answer_requests,
    evaluate,
    run_task,
    select_docs,
)
from frankenlm.eval.forward import (
    DEFAULT_MAX_LENGTH,
    PAD_TOKEN_ID,
    ForwardFn,
    ProgressFn,
    continuation_logprob,
    model_max_length,
    rolling_windows,
)
from frankenlm.eval.results import EvalResult, ItemResult, MetricValue, TaskResult
from frankenlm.eval.scorer import DEFAULT_BATCH_SIZE, Scorer

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_LENGTH",
    "LIMIT_MODES",
    "PAD_TOKEN_ID",
    "EvalResult",
    "ForwardFn",
    "ItemResult",
    "MetricValue",
    "ProgressFn",
    "Scorer",
    "TaskProgress",
    "TaskResult",
    "aggregate",
    "answer_requests",
    "continuation_logprob",
    "evaluate",
    "model_max_length",
    "rolling_windows",
    "run_task",
    "select_docs",
]
