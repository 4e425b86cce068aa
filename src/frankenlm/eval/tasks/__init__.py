"""Evaluation tasks scored the way EleutherAI's lm-evaluation-harness scores them, on offline data.

`get_task(name).load_docs(limit=..., seed=..., split=...)` gives `Doc`s; each holds its requests
(`LoglikelihoodRequest`, `RollingRequest`, `GenerateRequest`) and scores the responses to them.
`frankenlm.eval.evaluator` answers the requests with a model.
"""

from .base import SPLITS, Doc, MeanMetric, Metric, RatioMetric, Task, item_split, select_docs
from .gsm8k import GenerationDoc
from .lambada import LastWordDoc
from .multiple_choice import MultipleChoiceDoc
from .perplexity import RollingDoc
from .registry import get_task, list_tasks, register_task
from .requests import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    Result,
    RollingRequest,
    RollingResult,
)

__all__ = [
    "SPLITS",
    "Doc",
    "GenerateRequest",
    "GenerateResult",
    "GenerationDoc",
    "LastWordDoc",
    "LoglikelihoodRequest",
    "LoglikelihoodResult",
    "MeanMetric",
    "Metric",
    "MultipleChoiceDoc",
    "RatioMetric",
    "Request",
    "Result",
    "RollingDoc",
    "RollingRequest",
    "RollingResult",
    "Task",
    "get_task",
    "item_split",
    "list_tasks",
    "register_task",
    "select_docs",
]
