"""Answer task requests with a model, the way lm-evaluation-harness's HFLM does, and aggregate the scores.

`Scorer` implements lm-eval's three request types for a transformers causal LM:

- `loglikelihood`: HFLM tokenization (`_encode_pair`: trailing context spaces move to the continuation; the whole
  string is encoded and split after the context's tokens; an empty context becomes the prefix token), left
  truncation to `max_length`, log-softmax over the continuation positions, `is_greedy` = every continuation
  token is the argmax.
- `loglikelihood_rolling`: each text scored in the disjoint windows of `rolling_windows` (lm-eval's
  `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`), first token predicted from the prefix
  token (BOS, else EOS).
- `generate_until`: greedy decoding, stopping at any `until` string or the tokenizer's EOS.

Special tokens follow HFLM's default (`add_bos_token=None`): the tokenizer's own `encode` default decides, so
Llama/Qwen-style tokenizers add nothing and Gemma's adds `<bos>`; texts already starting with the prefix token's
string are encoded without special tokens.

Every model call goes through one function, `forward(input_ids, attention_mask) -> logits [b, t, V]` (default:
`model(input_ids=..., attention_mask=...).logits`), so that a caller can substitute it (e.g. to reuse cached
hidden states). Batching is deterministic and follows HFLM's (default `logits_cache=True`) Collator: requests
sharing one model input are run once, inputs are sorted longest first (ties by token ids), cut into
`batch_size` rows and right-padded with token 0; the same requests always give the same batches in the same
order (`Scorer.batch_plan`), and loglikelihood requests give the very batches HFLM runs. Log-softmax is computed only at the scored positions and in
chunks, so large vocabularies never need a second [b, t, V] tensor. Log-probabilities are computed in fp32
(lm-eval keeps the model dtype unless `softmax_dtype` is set, which only matters for bf16/fp16 models).

`evaluate` runs named tasks and returns an `EvalResult`: per-task metrics with standard errors (via
`frankenlm.eval.stats`), throughput, and per-item results with everything paired comparisons need.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from frankenlm.eval import stats
from frankenlm.eval.batching import AUTO, auto_batch_size, parse_batch_size
from frankenlm.errors import FrankenError
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

ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int], None]  # called with the number of requests finished by the last batch

DEFAULT_MAX_LENGTH = 2048
DEFAULT_BATCH_SIZE = 16
PAD_TOKEN_ID = 0  # right padding never influences scored positions (causal attention); lm-eval pads with 0 too
_LOGSOFTMAX_CHUNK_ELEMENTS = 1 << 24  # positions x vocab per log-softmax chunk (64 MiB in fp32)


# --------------------------------------------------------------------------------------------- windows


def rolling_windows(token_ids: Sequence[int], max_length: int, prefix_token_id: int) -> list[tuple[list[int], list[int]]]:
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


# ---------------------------------------------------------------------------------------------- scorer


def model_max_length(model: Any, default: int = DEFAULT_MAX_LENGTH) -> int:
    """The model's positional limit from its config (HFLM's `resolve_max_length` attributes), else `default`."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    return default


def _batched(seq: Sequence[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


class Scorer:
    """Answers loglikelihood / rolling / generation requests for one causal LM (lm-eval HFLM semantics)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        forward: ForwardFn | None = None,
        add_bos_token: bool | None = None,
    ) -> None:
        batch_size = parse_batch_size(batch_size)
        limit = model_max_length(model)
        if max_length is None:
            max_length = min(DEFAULT_MAX_LENGTH, limit)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= limit:
            raise FrankenError(f"max_length must be an integer in [2, {limit}] (the model's positional limit), got {max_length!r}")
        if batch_size == AUTO:  # from free GPU memory (a fixed size on the CPU), once per model
            batch_size = auto_batch_size(model, max_length)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.add_bos_token = add_bos_token
        if device is None:
            params = getattr(model, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.forward: ForwardFn = forward if forward is not None else self.model_forward
        self.custom_forward = forward is not None
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.prefix_token_id: int = bos if bos is not None else eos
        if self.prefix_token_id is None:
            raise FrankenError("the tokenizer has neither a BOS nor an EOS token, needed as the prefix token")
        self._prefix_string = tokenizer.decode([self.prefix_token_id])

    # ------------------------------------------------------------------------------------ model access

    def model_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The default `forward`: the model's logits for a batch."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # ------------------------------------------------------------------------------------ tokenization

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """HFLM `tok_encode`: the tokenizer's default special tokens unless told (or the text starts with BOS)."""
        kwargs: dict[str, bool] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            kwargs["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None and self._prefix_string and text.startswith(self._prefix_string):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """HFLM `loglikelihood` + `_encode_pair`: (context tokens, continuation tokens)."""
        if context == "":
            cont = self.encode(continuation, add_special_tokens=False)
            if not cont:
                raise FrankenError(f"empty continuation {continuation!r}: there is nothing to score")
            if cont[0] != self.prefix_token_id:
                return [self.prefix_token_id], cont
            return cont[:1], cont[1:]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]

    # ------------------------------------------------------------------------------------ batching

    def batch_plan(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[list[int]]:
        """Indices of the pairs that make the rows of each model call (see `_plan`)."""
        return self._plan(pairs)[0]

    def _plan(
        self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]
    ) -> tuple[list[list[int]], dict[int, list[int]]]:
        """lm-eval's Collator with `group_by="contexts"` (HFLM's default `logits_cache=True`).

        Pairs whose context + continuation[:-1] are the same token sequence share one model input (e.g. the
        one-token answers " A".." D" of MMLU): each group is run once, as its first member with the longest
        continuation, and every member reads its own positions. Groups are ordered longest first, ties by
        tokens, and cut into `batch_size` rows per call. Returns (batches of representatives, members per
        representative)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            groups.setdefault(tuple(ctx) + tuple(cont[:-1]), []).append(i)
        members = {max(g, key=lambda i: len(pairs[i][1])): g for g in groups.values()}
        order = sorted(
            members,
            key=lambda i: (-(len(pairs[i][0]) + len(pairs[i][1])), tuple(pairs[i][0]) + tuple(pairs[i][1])),
        )
        return list(_batched(order, self.batch_size)), members

    def score_token_pairs(
        self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], progress: ProgressFn | None = None
    ) -> list[LoglikelihoodResult]:
        """log P(continuation tokens | context tokens) for token-level pairs, batched per `batch_plan`."""
        for ctx, cont in pairs:
            if not ctx:
                raise FrankenError("a context tokenizes to nothing (whitespace only?): lm-eval cannot score it either")
            if not cont:
                raise FrankenError("a scored pair has no continuation tokens (continuation empty after tokenization)")
            if len(cont) > self.max_length:
                raise FrankenError(f"a continuation of {len(cont)} tokens exceeds max_length={self.max_length}")
        batches, members = self._plan(pairs)
        results: list[LoglikelihoodResult | None] = [None] * len(pairs)
        with _eval_mode(self.model):
            for batch in batches:
                inputs = [(list(pairs[i][0]) + list(pairs[i][1]))[-(self.max_length + 1) :][:-1] for i in batch]
                width = max(len(x) for x in inputs)
                input_ids = torch.full((len(batch), width), PAD_TOKEN_ID, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(inputs):
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, : len(ids)] = 1
                logits = self._call_forward(input_ids, attention_mask)
                done = 0
                for row, rep in enumerate(batch):
                    inplen = len(inputs[row])
                    for i in members[rep]:
                        cont = list(pairs[i][1])
                        logprob, greedy = continuation_logprob(logits[row, inplen - len(cont) : inplen], cont)
                        ran = inplen if i == rep else 0
                        results[i] = LoglikelihoodResult(logprob, greedy, inplen + 1 - len(cont), len(cont), ran)
                        done += 1
                if progress is not None:
                    progress(done)
        return [r for r in results if r is not None]

    def _call_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.forward(input_ids.to(self.device), attention_mask.to(self.device))
        if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(input_ids.shape):
            raise ValueError(f"forward returned logits of shape {tuple(logits.shape)} for inputs {tuple(input_ids.shape)}")
        return logits

    # ------------------------------------------------------------------------------------ request types

    def loglikelihood_detailed(
        self, requests: Sequence[LoglikelihoodRequest | tuple[str, str]], progress: ProgressFn | None = None
    ) -> list[LoglikelihoodResult]:
        pairs = [self.encode_pair(*_ll_args(r)) for r in requests]
        return self.score_token_pairs(pairs, progress)

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest | tuple[str, str]], progress: ProgressFn | None = None
    ) -> list[tuple[float, bool]]:
        """lm-eval `loglikelihood`: (summed log-probability in nats, is_greedy) per request."""
        return [r.as_tuple() for r in self.loglikelihood_detailed(requests, progress)]

    def loglikelihood_rolling_detailed(
        self, requests: Sequence[RollingRequest | str], progress: ProgressFn | None = None
    ) -> list[RollingResult]:
        texts = [r.text if isinstance(r, RollingRequest) else r for r in requests]
        owners: list[int] = []
        pairs: list[tuple[list[int], list[int]]] = []
        n_tokens = [0] * len(texts)
        for k, text in enumerate(texts):
            tokens = self.encode(text)
            n_tokens[k] = len(tokens)
            for inp, target in rolling_windows(tokens, self.max_length, self.prefix_token_id):
                owners.append(k)
                pairs.append((inp[: len(inp) - len(target) + 1], target))  # (context, continuation)
        window_progress = None if progress is None else _WindowProgress(len(pairs), len(texts), progress)
        scored = self.score_token_pairs(pairs, window_progress)
        if window_progress is not None:
            window_progress.advance_to(len(texts))
        logprob = [0.0] * len(texts)
        windows = [0] * len(texts)
        inputs = [0] * len(texts)
        for k, res in zip(owners, scored, strict=True):
            logprob[k] += res.logprob
            windows[k] += 1
            inputs[k] += res.n_input_tokens
        return [RollingResult(logprob[k], n_tokens[k], windows[k], inputs[k]) for k in range(len(texts))]

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest | str], progress: ProgressFn | None = None) -> list[float]:
        """lm-eval `loglikelihood_rolling`: log P(text) in nats per request (0.0 for an empty text)."""
        return [r.logprob for r in self.loglikelihood_rolling_detailed(requests, progress)]

    def generate_until_detailed(
        self, requests: Sequence[GenerateRequest], progress: ProgressFn | None = None
    ) -> list[GenerateResult]:
        eos = self.tokenizer.eos_token
        results: list[GenerateResult | None] = [None] * len(requests)
        encoded = [self.encode(r.context) for r in requests]
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        for i, r in enumerate(requests):
            if r.max_new_tokens < 1 or r.max_new_tokens >= self.max_length:
                raise FrankenError(f"max_new_tokens must be in [1, {self.max_length - 1}], got {r.max_new_tokens}")
            until = tuple(r.until) + ((eos,) if eos is not None and eos not in r.until else ())
            groups.setdefault((until, r.max_new_tokens), []).append(i)
        with _eval_mode(self.model):
            for (until, max_new), members in groups.items():
                order = sorted(members, key=lambda i: (-len(encoded[i]), requests[i].context))
                for batch in _batched(order, self.batch_size):
                    contexts = [encoded[i][-(self.max_length - max_new) :] for i in batch]
                    new_tokens = self._greedy(contexts, list(until), max_new)
                    for i, ctx, toks in zip(batch, contexts, new_tokens, strict=True):
                        text = self.tokenizer.decode(toks, skip_special_tokens=True)
                        for stop in until:
                            if stop:
                                text = text.split(stop)[0]
                        results[i] = GenerateResult(text, len(ctx), len(toks))
                    if progress is not None:
                        progress(len(batch))
        return [r for r in results if r is not None]

    def generate_until(self, requests: Sequence[GenerateRequest], progress: ProgressFn | None = None) -> list[str]:
        """lm-eval `generate_until` (greedy): the generated text up to the first stop string."""
        return [r.text for r in self.generate_until_detailed(requests, progress)]

    def _greedy(self, contexts: list[list[int]], until: list[str], max_new: int) -> list[list[int]]:
        """Greedy new tokens per context: `model.generate` with its KV cache, or, with a custom `forward`,
        a cache-free loop through `forward` (right padding, each row read at its own last position)."""
        if not self.custom_forward:
            width = max(len(c) for c in contexts)
            # finished rows are filled with `pad`: EOS (when there is one), so that `_trim_eos` removes the filler
            eos = self.tokenizer.eos_token_id
            pad = eos if eos is not None else (self.tokenizer.pad_token_id or 0)
            ids = torch.full((len(contexts), width), pad, dtype=torch.long)
            mask = torch.zeros((len(contexts), width), dtype=torch.long)
            for row, c in enumerate(contexts):  # left padding for generation
                ids[row, width - len(c) :] = torch.tensor(c, dtype=torch.long)
                mask[row, width - len(c) :] = 1
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new,
                do_sample=False,
                stop_strings=[s for s in until if s],
                tokenizer=self.tokenizer,
                pad_token_id=pad,
                use_cache=True,
            )
            return [self._trim_eos(row[width:].tolist()) for row in out]
        seqs = [list(c) for c in contexts]
        new: list[list[int]] = [[] for _ in contexts]
        active = list(range(len(contexts)))
        for _ in range(max_new):
            if not active:
                break
            width = max(len(seqs[i]) for i in active)
            ids = torch.full((len(active), width), PAD_TOKEN_ID, dtype=torch.long)
            mask = torch.zeros((len(active), width), dtype=torch.long)
            for row, i in enumerate(active):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
                mask[row, : len(seqs[i])] = 1
            logits = self._call_forward(ids, mask)
            still = []
            for row, i in enumerate(active):
                tok = int(logits[row, len(seqs[i]) - 1].argmax())
                seqs[i].append(tok)
                new[i].append(tok)
                text = self.tokenizer.decode(new[i], skip_special_tokens=False)
                if tok != self.tokenizer.eos_token_id and not any(s and s in text for s in until):
                    still.append(i)
            active = still
        return [self._trim_eos(t) for t in new]

    def _trim_eos(self, tokens: list[int]) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return tokens[: tokens.index(eos)] if eos is not None and eos in tokens else tokens


class _WindowProgress:
    """Reports window-level progress in requests: the done fraction of windows, scaled to `n_requests`."""

    def __init__(self, n_windows: int, n_requests: int, report: ProgressFn) -> None:
        self.n_windows, self.n_requests, self.report = n_windows, n_requests, report
        self.windows_done = 0
        self.reported = 0

    def __call__(self, n: int) -> None:
        self.windows_done += n
        self.advance_to(self.n_requests * self.windows_done // max(1, self.n_windows))

    def advance_to(self, requests_done: int) -> None:
        if requests_done > self.reported:
            self.report(requests_done - self.reported)
            self.reported = requests_done


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
        logp = torch.log_softmax(logits[s : s + chunk].float(), dim=-1)
        picked.append(logp.gather(1, target[s : s + chunk, None]).squeeze(1))
        greedy = greedy and bool((logp.argmax(dim=-1) == target[s : s + chunk]).all())
    return float(torch.cat(picked).sum()), greedy


def _ll_args(request: LoglikelihoodRequest | tuple[str, str]) -> tuple[str, str]:
    if isinstance(request, LoglikelihoodRequest):
        return request.context, request.continuation
    context, continuation = request
    return context, continuation


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricValue:
    """A task-level metric: its value and standard error (None when undefined, e.g. one item)."""

    value: float
    se: float | None


@dataclass(frozen=True)
class ItemResult:
    """One item's metrics and extras (every choice's log-likelihood, gold, token/byte/word counts, nll...)."""

    task: str
    item_id: str
    split: str
    metrics: dict[str, float]
    extras: dict[str, Any]


@dataclass(frozen=True)
class TaskResult:
    """A task's aggregate metrics and throughput."""

    task: str
    n_items: int
    metrics: dict[str, MetricValue]
    n_requests: int
    tokens_processed: int  # tokens fed through the model (inputs shared by several requests count once)
    tokens_scored: int  # continuation / target / generated tokens
    wall_s: float
    tokens_per_s: float
    source: str
    notes: str


@dataclass
class EvalResult:
    """Per-task aggregates, per-item results, and the settings that produced them."""

    tasks: dict[str, TaskResult]
    items: list[ItemResult]
    config: dict[str, Any] = field(default_factory=dict)

    def items_of(self, task: str) -> list[ItemResult]:
        return [it for it in self.items if it.task == task]

    def metric(self, task: str, name: str) -> float:
        return self.tasks[task].metrics[name].value

    def to_json(self) -> dict[str, Any]:
        """Plain dicts/lists/numbers (NaN/inf become None), ready for `json.dumps`."""
        return _plain(
            {
                "config": self.config,
                "tasks": {name: asdict(t) for name, t in self.tasks.items()},
                "items": [asdict(it) for it in self.items],
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        tasks = {}
        for name, t in data["tasks"].items():
            metrics = {k: MetricValue(v["value"], v["se"]) for k, v in t["metrics"].items()}
            tasks[name] = TaskResult(**{**t, "metrics": metrics})
        items = [ItemResult(**it) for it in data["items"]]
        return cls(tasks, items, dict(data.get("config", {})))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item"):  # numpy / torch scalars
        return _plain(x.item())
    return str(x)


# ---------------------------------------------------------------------------------------------- evaluate


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
    flat: list[tuple[int, int, Request]] = [(d, r, req) for d, doc in enumerate(docs) for r, req in enumerate(doc.requests)]
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


def run_task(scorer: Scorer, task: Task, docs: Sequence[Doc], progress: ProgressFn | None = None) -> tuple[TaskResult, list[ItemResult]]:
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
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    max_length: int | None = None,
    forward: ForwardFn | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate `model` on the named tasks (items chosen by limit/seed/split, see `Task.load_docs`).

    Works in whatever dtype the model has (log-probabilities are always accumulated in fp32). `device` is where
    inputs are sent (the model must already be there; default: the model's device). `forward` replaces the
    model call (see `Scorer`). `max_length` (default min(2048, the model's limit)) bounds
    every model input: rolling-perplexity window size and the left truncation of long contexts.
    """
    names = [task_names] if isinstance(task_names, str) else list(task_names)
    if not names:
        raise FrankenError("no tasks given; valid tasks: " + ", ".join(list_tasks()))
    check_selection(limit, seed, split)
    tasks = [get_task(n) for n in names]  # unknown names fail before any work
    scorer = Scorer(model, tokenizer, batch_size=batch_size, device=device, max_length=max_length, forward=forward)
    results: dict[str, TaskResult] = {}
    items: list[ItemResult] = []
    with _progress_bar(progress) as bar:
        for task in tasks:
            docs = task.load_docs(limit=limit, seed=seed, split=split)
            n_requests = sum(len(d.requests) for d in docs)
            advance = bar(task.name, n_requests)
            result, task_items = run_task(scorer, task, docs, advance)
            results[task.name] = result
            items.extend(task_items)
    config = {
        "tasks": names,
        "limit": limit,
        "seed": seed,
        "split": split,
        "batch_size": scorer.batch_size,
        "max_length": scorer.max_length,
        "device": str(scorer.device),
        "custom_forward": forward is not None,
        "prefix_token_id": scorer.prefix_token_id,
        **_model_info(model),
        "versions": _versions(),
    }
    return EvalResult(results, items, config)


def _versions() -> dict[str, str]:
    import transformers

    from frankenlm import __version__

    return {"frankenlm": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[str, int], ProgressFn | None]]:
    """Yields `start(description, total) -> advance(n)`; a rich progress bar per task when enabled."""
    if not enabled:
        yield lambda description, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:

        def start(description: str, total: int) -> ProgressFn:
            task_id = bar.add_task(description, total=total)
            return lambda n: bar.advance(task_id, n)

        yield start
