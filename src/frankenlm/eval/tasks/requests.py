"""What a task asks of a language model (requests) and what comes back (results).

The three request types mirror lm-evaluation-harness's request types: `loglikelihood`,
`loglikelihood_rolling` and `generate_until`. Results carry the token counts the scorer saw, so that
per-item analysis (tokens per item, throughput) needs no second tokenization.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context); word-boundary spaces belong to the continuation (lm-eval convention)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class RollingRequest:
    """log P(text) under the model, scored in disjoint windows (lm-eval `loglikelihood_rolling`)."""

    text: str


@dataclass(frozen=True)
class GenerateRequest:
    """Greedy generation from `context` until any string of `until` appears or `max_new_tokens` are made."""

    context: str
    until: list[str] = field(default_factory=list)
    max_new_tokens: int = 256

    def __hash__(self) -> int:  # `until` is a list (lm-eval's type), so hash a tuple of it
        return hash((self.context, tuple(self.until), self.max_new_tokens))


Request = LoglikelihoodRequest | RollingRequest | GenerateRequest


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Answer to a `LoglikelihoodRequest`: summed log-probability (nats) and whether greedy decoding yields it."""

    logprob: float
    is_greedy: bool
    n_context_tokens: int  # after left truncation
    n_continuation_tokens: int
    n_input_tokens: int = 0  # tokens of the model input this request ran (0 when it reused another's input)

    def as_tuple(self) -> tuple[float, bool]:
        """The lm-eval `(logprob, is_greedy)` pair."""
        return self.logprob, self.is_greedy


@dataclass(frozen=True)
class RollingResult:
    """Answer to a `RollingRequest`: log P(text) in nats, over `n_tokens` predicted tokens in `n_windows` windows."""

    logprob: float
    n_tokens: int
    n_windows: int
    n_input_tokens: int  # tokens fed through the model (windows overlap at the end of long texts)


@dataclass(frozen=True)
class GenerateResult:
    """Answer to a `GenerateRequest`: the text up to (not including) the first stop string."""

    text: str
    n_context_tokens: int
    n_generated_tokens: int  # tokens the model generated (up to EOS; may run past the stop string)


Result = LoglikelihoodResult | RollingResult | GenerateResult
