"""Multiple-choice items scored by comparing the log-likelihoods of their choices (lm-eval `multiple_choice`).

lm-eval's definitions (`ConfigurableTask.process_results`): `acc` is 1 when argmax of the choice log-likelihoods
is the gold index; `acc_norm` divides each log-likelihood by the length **in characters** of the choice string
(without the target delimiter) before the argmax. Ties go to the lowest index (numpy argmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Doc
from .requests import LoglikelihoodRequest, LoglikelihoodResult, Result

MC_METRICS = ("acc", "acc_norm")


@dataclass(frozen=True)
class MultipleChoiceDoc(Doc):
    """Requests are one `LoglikelihoodRequest` per choice; `choices` are the strings lm-eval measures for acc_norm.

    Usually the choices are the continuations; for partial evaluation (winogrande) they are the contexts.
    """

    choices: tuple[str, ...]
    gold: int
    metric_names: tuple[str, ...] = MC_METRICS

    def _logprobs(self, responses: Sequence[Result]) -> np.ndarray:
        if len(responses) != len(self.requests):
            raise ValueError(
                f"{self.task}/{self.item_id}: {len(responses)} responses for {len(self.requests)} requests"
            )
        if not all(isinstance(r, LoglikelihoodResult) for r in responses):
            raise TypeError("multiple-choice items are scored from LoglikelihoodResult responses")
        return np.array([r.logprob for r in responses], dtype=np.float64)

    def predictions(self, responses: Sequence[Result]) -> tuple[int, int]:
        """(argmax of log-likelihoods, argmax of log-likelihood per character)."""
        lls = self._logprobs(responses)
        lengths = np.array([float(len(c)) for c in self.choices])
        return int(np.argmax(lls)), int(np.argmax(lls / lengths))

    def score(self, responses: Sequence[Result]) -> dict[str, float]:
        pred, pred_norm = self.predictions(responses)
        values = {"acc": float(pred == self.gold), "acc_norm": float(pred_norm == self.gold)}
        return {k: values[k] for k in self.metric_names}

    def extras(self, responses: Sequence[Result]) -> dict[str, Any]:
        lls = self._logprobs(responses)
        pred, pred_norm = self.predictions(responses)
        res = [r for r in responses if isinstance(r, LoglikelihoodResult)]
        return {
            "gold": self.gold,
            "pred": pred,
            "pred_norm": pred_norm,
            "logprobs": [float(x) for x in lls],
            "is_greedy": [bool(r.is_greedy) for r in res],
            "choice_chars": [len(c) for c in self.choices],
            "choice_bytes": [len(c.encode("utf-8")) for c in self.choices],
            "n_context_tokens": [r.n_context_tokens for r in res],
            "n_continuation_tokens": [r.n_continuation_tokens for r in res],
            "nll": float(-lls[self.gold]),  # negative log-likelihood of the gold choice
            "n_tokens": res[self.gold].n_continuation_tokens,
            "n_bytes": len(self.requests[self.gold].continuation.encode("utf-8")),  # type: ignore[union-attr]
        }


def choice_doc(
    task: str,
    item_id: str,
    context: str,
    choices: Sequence[str],
    gold: int,
    metric_names: tuple[str, ...] = MC_METRICS,
    target_delimiter: str = " ",
) -> MultipleChoiceDoc:
    """An item whose choices are continuations of one context (lm-eval: `context`, `delimiter + choice`)."""
    requests = tuple(LoglikelihoodRequest(context, f"{target_delimiter}{c}") for c in choices)
    return MultipleChoiceDoc(task, item_id, requests, tuple(choices), int(gold), metric_names)


def partial_doc(
    task: str,
    item_id: str,
    contexts: Sequence[str],
    continuation: str,
    gold: int,
    metric_names: tuple[str, ...] = ("acc",),
    target_delimiter: str = " ",
) -> MultipleChoiceDoc:
    """An item whose choices are contexts for one shared continuation (lm-eval "multiple input", winogrande)."""
    requests = tuple(LoglikelihoodRequest(c, f"{target_delimiter}{continuation}") for c in contexts)
    return MultipleChoiceDoc(task, item_id, requests, tuple(contexts), int(gold), metric_names)
