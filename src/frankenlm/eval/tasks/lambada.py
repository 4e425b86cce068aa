"""lm-eval `lambada_openai`: predict the last word of a passage.

context = the passage up to its last space (`" ".join(text.split(" ")[:-1])`), continuation = " " + last word.
acc = 1 when greedy decoding produces the continuation (`is_greedy`); perplexity = exp(-mean log-likelihood)
over items (lm-eval's `perplexity` aggregation). The test passages come from the OLMES LAMBADA dump, rebuilt as
text = query + " " + answer (OLMES splits at the last space, so lm-eval's split gives back the same pair).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .base import Doc
from .data import read_oe_eval_docs
from .requests import LoglikelihoodRequest, LoglikelihoodResult, Result


@dataclass(frozen=True)
class LastWordDoc(Doc):
    """One `LoglikelihoodRequest` (context, " " + last word)."""

    def _result(self, responses: Sequence[Result]) -> LoglikelihoodResult:
        if len(responses) != 1 or not isinstance(responses[0], LoglikelihoodResult):
            raise TypeError(f"{self.task}/{self.item_id}: expected one LoglikelihoodResult, got {responses!r}")
        return responses[0]

    def score(self, responses: Sequence[Result]) -> dict[str, float]:
        r = self._result(responses)
        return {"acc": float(r.is_greedy), "perplexity": math.exp(-r.logprob)}

    def extras(self, responses: Sequence[Result]) -> dict[str, Any]:
        r = self._result(responses)
        continuation = self.requests[0].continuation  # type: ignore[union-attr]
        return {
            "logprob": r.logprob,
            "nll": -r.logprob,
            "is_greedy": r.is_greedy,
            "n_tokens": r.n_continuation_tokens,
            "n_context_tokens": r.n_context_tokens,
            "n_bytes": len(continuation.encode("utf-8")),
        }


def last_word_doc(task: str, item_id: str, text: str) -> LastWordDoc:
    words = text.split(" ")
    return LastWordDoc(task, item_id, (LoglikelihoodRequest(" ".join(words[:-1]), " " + words[-1]),))


def load_lambada_openai(task: str) -> list[Doc]:
    docs = read_oe_eval_docs("lambada/bpb_0shot")
    return [last_word_doc(task, str(d["id"]), f"{d['query']} {d['answers_text'][0]}") for d in docs]
