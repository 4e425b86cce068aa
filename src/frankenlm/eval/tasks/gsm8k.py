"""lm-eval `gsm8k` (generative grade-school maths), zero-shot, greedy.

Prompt "Question: {question}\\nAnswer:", generation until "Question:", "</s>" or "<|im_end|>" (lm-eval's
`generation_kwargs`; the scorer adds the tokenizer's EOS like HFLM) or 256 new tokens (HFLM's `max_gen_toks`).
Scored by lm-eval's two filters, then `exact_match` with ignore_case and regexes_to_ignore
[",", "\\$", "(?s).*#### ", "\\.$"] applied to both answer and reference:
- `exact_match_strict` (lm-eval "strict-match"): the first `#### (\\-?[0-9\\.\\,]+)` group;
- `exact_match_flexible` (lm-eval "flexible-extract"): the last number `(-?[$0-9.,]{2,})|(-?[0-9]+)`.
lm-eval's default is 5-shot from the train split, which is not available offline: this task is zero-shot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .base import Doc
from .data import read_oe_eval_docs
from .requests import GenerateRequest, GenerateResult, Result

UNTIL = ["Question:", "</s>", "<|im_end|>"]
MAX_NEW_TOKENS = 256
STRICT_PATTERN = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
IGNORE_PATTERNS = (",", "\\$", "(?s).*#### ", "\\.$")
INVALID = "[invalid]"


def regex_extract(text: str, pattern: str, group_select: int) -> str:
    """lm-eval's `RegexFilter`: the `group_select`-th match (first non-empty group of it), stripped."""
    matches = re.findall(pattern, text)
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        nonempty = [m for m in match if m]
        match = nonempty[0] if nonempty else INVALID
    return match.strip()


def _normalise(text: str) -> str:
    for pattern in IGNORE_PATTERNS:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(prediction: str, reference: str) -> float:
    """lm-eval's `exact_match` with gsm8k's options."""
    return float(_normalise(prediction) == _normalise(reference))


@dataclass(frozen=True)
class GenerationDoc(Doc):
    """One `GenerateRequest`; `reference` is the full reference solution ending in "#### answer"."""

    reference: str

    def _result(self, responses: Sequence[Result]) -> GenerateResult:
        if len(responses) != 1 or not isinstance(responses[0], GenerateResult):
            raise TypeError(f"{self.task}/{self.item_id}: expected one GenerateResult, got {responses!r}")
        return responses[0]

    def answers(self, responses: Sequence[Result]) -> tuple[str, str]:
        text = self._result(responses).text
        return regex_extract(text, STRICT_PATTERN, 0), regex_extract(text, FLEXIBLE_PATTERN, -1)

    def score(self, responses: Sequence[Result]) -> dict[str, float]:
        strict, flexible = self.answers(responses)
        return {
            "exact_match_strict": exact_match(strict, self.reference),
            "exact_match_flexible": exact_match(flexible, self.reference),
        }

    def extras(self, responses: Sequence[Result]) -> dict[str, Any]:
        r = self._result(responses)
        strict, flexible = self.answers(responses)
        return {
            "generation": r.text,
            "answer_strict": strict,
            "answer_flexible": flexible,
            "reference": _normalise(self.reference),
            "n_context_tokens": r.n_context_tokens,
            "n_tokens": r.n_generated_tokens,
        }


def load_gsm8k(task: str) -> list[Doc]:
    docs = read_oe_eval_docs("gsm8k/gold_bpb_5shot")
    return [
        GenerationDoc(
            task,
            str(d["id"]),
            (GenerateRequest(f"Question: {d['question']}\nAnswer:", list(UNTIL), MAX_NEW_TOKENS),),
            d["answer"],
        )
        for d in docs
    ]
