"""The narrow waist between scoring and the model: `forward(input_ids, attention_mask) -> logits [b, t, V]`.

Everything the scorer asks of a model goes through a `ForwardFn` (default: `model(...).logits` without a KV
cache), so a caller can substitute it (the study engine reuses cached hidden states this way). This module holds
what sits on either side of that call and knows nothing of tasks:

- `model_max_length`: the model's positional limit (HFLM's `resolve_max_length` attributes);
- `right_padded`: a batch of token lists as right-padded `input_ids` / `attention_mask` (pad token 0, as lm-eval;
  right padding never influences the scored positions of a causal model);
- `continuation_logprob`: log P(targets) from the logits at the scored positions, in lm-eval's fp32 arithmetic;
- `rolling_windows`: lm-eval's disjoint windows for rolling log-likelihood of a whole text;
- `eval_mode`: inference mode (and eval mode, restored afterwards) for a block of scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from frankenlm.errors import FrankenError

ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int], None]  # called with the number of requests finished by the last batch

DEFAULT_MAX_LENGTH = 2048
PAD_TOKEN_ID = 0  # right padding never influences scored positions (causal attention); lm-eval pads with 0 too
_LOGSOFTMAX_CHUNK_ELEMENTS = 1 << 24  # positions x vocab per log-softmax chunk (64 MiB in fp32)


def model_max_length(model: Any, default: int = DEFAULT_MAX_LENGTH) -> int:
    """The model's positional limit from its config (HFLM's `resolve_max_length` attributes), else `default`."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    return default


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def plain_forward(model: Any) -> ForwardFn:
    """The default `forward`: the model's logits for a batch, without a KV cache."""

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return forward


def right_padded(rows: Sequence[Sequence[int]], pad: int = PAD_TOKEN_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [len(rows), longest row], each row left-aligned and padded on the right."""
    width = max(len(x) for x in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def call_forward(
    forward: ForwardFn, device: torch.device, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """`forward` on `device`, checking that it returned logits [b, t, V] for inputs [b, t]."""
    logits = forward(input_ids.to(device), attention_mask.to(device))
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(input_ids.shape):
        raise ValueError(f"forward returned logits of shape {tuple(logits.shape)} for inputs {tuple(input_ids.shape)}")
    return logits


def token_logprobs(
    logits: torch.Tensor, target: torch.Tensor, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target: log-softmax(logits[row])[target] in lm-eval's arithmetic (fp32 log_softmax, gather) and
    whether the target is the row's argmax; rows [n] index logits [m, V] (default: target k reads row k)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    if rows is None:
        return logp.gather(1, target[:, None]).squeeze(1), logp.argmax(dim=-1) == target
    return logp[rows, target], logp.argmax(dim=-1)[rows] == target


def continuation_logprob(logits: torch.Tensor, targets: Sequence[int]) -> tuple[float, bool]:
    """(sum of log-softmax(logits)[t, targets[t]], all targets are argmax) for logits [len(targets), V].

    lm-eval's arithmetic (fp32 log_softmax, gather, fp32 sum), so results agree with it to rounding; computed
    in chunks of positions so that only a bounded slice of the vocabulary-sized log-softmax exists at a time.
    (A logsumexp in float64 is more accurate but differs from lm-eval by up to ~1e-3 on long continuations.)
    """
    n, vocab = logits.shape
    chunk = max(1, _LOGSOFTMAX_CHUNK_ELEMENTS // max(1, vocab))
    target = torch.tensor(list(targets), dtype=torch.long, device=logits.device)
    picked = []
    greedy = True
    for s in range(0, n, chunk):
        lp, is_max = token_logprobs(logits[s : s + chunk], target[s : s + chunk])
        picked.append(lp)
        greedy = greedy and bool(is_max.all())
    return float(torch.cat(picked).sum()), greedy


def rolling_windows(
    token_ids: Sequence[int], max_length: int, prefix_token_id: int
) -> list[tuple[list[int], list[int]]]:
    """Disjoint scoring windows for a whole text, lm-eval `loglikelihood_rolling` semantics (context_len=1).

    Returns `(input_ids, target_ids)` pairs: `input_ids` is the model input (at most `max_length` tokens) and
    `target_ids` are predicted by its last `len(target_ids)` positions. Every token is predicted exactly once:
    the first window is `[prefix] + tokens[:max_length-1]` predicting `tokens[:max_length]`; later windows
    predict the next `max_length` tokens (fewer at the end) from the `max_length` tokens just before each
    target's end, so the last window still gets a full-size context.
    """
    if max_length < 1:
        raise FrankenError(f"max_length must be at least 1, got {max_length}")
    tokens = list(token_ids)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix_token_id] + tokens[: first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        end = min(done + max_length, len(tokens))
        windows.append((tokens[end - max_length - 1 : end - 1], tokens[done:end]))
        done = end
    return windows


def batched(seq: Sequence[int], n: int) -> Iterator[list[int]]:
    """Consecutive chunks of `seq` of `n` elements (the last one shorter)."""
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Inference mode, with the model in eval mode for the block (a training model is switched back after)."""
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()
