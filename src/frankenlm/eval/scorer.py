"""`Scorer`: lm-eval's three request types for a transformers causal LM, the way lm-eval's HFLM answers them.

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

Every model call goes through `forward(input_ids, attention_mask) -> logits [b, t, V]` (see
`frankenlm.eval.forward`), so that a caller can substitute it (e.g. to reuse cached hidden states). Batching is
deterministic and follows HFLM's (default `logits_cache=True`) Collator: requests sharing one model input are
run once, inputs are sorted longest first (ties by token ids), cut into `batch_size` rows and right-padded with
token 0; the same requests always give the same batches in the same order (`Scorer.batch_plan`), and
loglikelihood requests give the very batches HFLM runs. Log-softmax is computed only at the scored positions and
in chunks, so large vocabularies never need a second [b, t, V] tensor. Log-probabilities are computed in fp32
(lm-eval keeps the model dtype unless `softmax_dtype` is set, which only matters for bf16/fp16 models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from frankenlm.errors import FrankenError
from frankenlm.eval.batching import AUTO, auto_batch_size, parse_batch_size
from frankenlm.eval.forward import (
    DEFAULT_MAX_LENGTH,
    ForwardFn,
    ProgressFn,
    batched,
    call_forward,
    continuation_logprob,
    eval_mode,
    model_device,
    model_max_length,
    plain_forward,
    right_padded,
    rolling_windows,
    token_logprobs,
)
from frankenlm.eval.packing import (
    HeadFn,
    HiddenFn,
    Pack,
    decoder_hidden,
    fill_batches,
    make_packs,
    output_head,
    pack_batch,
    row_offsets,
)
from frankenlm.eval.tasks.requests import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingRequest,
    RollingResult,
)

DEFAULT_BATCH_SIZE = 16
SCORING_MODES = ("fast", "lm-eval")
# The head runs on chunks of scored rows: about 8M logits (32 MiB in fp32; measured faster than 128 MiB chunks,
# which glibc served with fresh, page-faulted mmaps every batch), but at least 128 rows, so that a large vocabulary
# (gemma3's 262k) does not re-read its output matrix for every few rows.
_HEAD_CHUNK_ELEMENTS = 1 << 23
_HEAD_MIN_ROWS = 128


def check_scoring(scoring: str) -> str:
    if scoring not in SCORING_MODES:
        raise FrankenError(
            f"scoring mode {scoring!r}: use fast (packed contexts, head only where scored) or "
            "lm-eval (HFLM's batching, bit-identical log-likelihoods)"
        )
    return scoring


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
        scoring: str = "fast",
        hidden: HiddenFn | None = None,
        head: HeadFn | None = None,
        generator: Any = None,
        token_cache: dict | None = None,
    ) -> None:
        batch_size = parse_batch_size(batch_size)
        check_scoring(scoring)
        if forward is not None and hidden is not None:
            raise ValueError("give a logits `forward` or a `hidden` function, not both")
        if hidden is not None and scoring != "fast":
            raise ValueError("a `hidden` function serves fast scoring; lm-eval scoring takes a logits `forward`")
        limit = model_max_length(model)
        if max_length is None:
            max_length = min(DEFAULT_MAX_LENGTH, limit)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= limit:
            raise FrankenError(
                f"max_length must be an integer in [2, {limit}] (the model's positional limit), got {max_length!r}"
            )
        if batch_size == AUTO:  # from free GPU memory (a fixed size on the CPU), once per model
            batch_size = auto_batch_size(model, max_length)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.add_bos_token = add_bos_token
        self.device = model_device(model) if device is None else torch.device(device)
        self.forward: ForwardFn = forward if forward is not None else plain_forward(model)
        self.custom_forward = forward is not None or hidden is not None
        self.hidden_given = hidden is not None
        # fast scoring needs hidden states and the head; a caller's logits `forward` keeps HFLM's layout
        self.scoring = scoring if forward is None else "lm-eval"
        self.hidden: HiddenFn = hidden if hidden is not None else decoder_hidden(model, self.device)
        self.head: HeadFn = head if head is not None else output_head(model)
        self.token_cache: dict[tuple[str, bool | None], list[int]] = token_cache if token_cache is not None else {}
        # greedy generation: `model.generate` (KV cache) on the generator, else on the model unless calls are custom
        self.generator = generator if generator is not None else (None if self.custom_forward else model)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.prefix_token_id: int = bos if bos is not None else eos
        if self.prefix_token_id is None:
            raise FrankenError("the tokenizer has neither a BOS nor an EOS token, needed as the prefix token")
        self._prefix_string = tokenizer.decode([self.prefix_token_id])

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
        key = (text, kwargs.get("add_special_tokens"))
        if key not in self.token_cache:
            self.token_cache[key] = list(self.tokenizer.encode(text, **kwargs))
        return list(self.token_cache[key])

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
        return list(batched(order, self.batch_size)), members

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
        if self.scoring == "fast":
            return self._score_packed(pairs, progress)
        batches, members = self._plan(pairs)
        results: list[LoglikelihoodResult | None] = [None] * len(pairs)
        with eval_mode(self.model):
            for batch in batches:
                inputs = [(list(pairs[i][0]) + list(pairs[i][1]))[-(self.max_length + 1) :][:-1] for i in batch]
                logits = self._call_forward(*right_padded(inputs))
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

    def _score_packed(
        self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], progress: ProgressFn | None = None
    ) -> list[LoglikelihoodResult]:
        """Fast scoring (see `frankenlm.eval.packing`): pairs sharing context tokens run as one packed row (short
        packs sharing a row), and the head runs once on each hidden state that predicts continuation tokens."""
        results: list[LoglikelihoodResult | None] = [None] * len(pairs)
        with eval_mode(self.model):
            for rows in fill_batches(make_packs(pairs, self.max_length), self.batch_size):
                batch = pack_batch(rows)
                hidden = self.hidden(batch)
                width = hidden.shape[1]
                where: dict[int, int] = {}  # hidden row [b * t] read by the head -> its place, each once
                row_of, targets, spans = [], [], []
                for r, row in enumerate(rows):
                    for at, pack in zip(row_offsets(row), row, strict=True):
                        for seg, idx in zip(pack.segments, pack.scored(), strict=True):
                            spans.append((len(targets), len(seg)))
                            for i in idx:
                                row_of.append(where.setdefault(r * width + at + i, len(where)))
                            targets.extend(seg)
                flat = list(where)
                selected = hidden.reshape(-1, hidden.shape[-1])[torch.tensor(flat, device=hidden.device)]
                logprob, greedy = self._token_logprobs(selected, row_of, targets)
                done = 0
                k = 0
                for pack in (p for row in rows for p in row):
                    ran = len(pack.context)
                    for seg, owners in zip(pack.segments, pack.owners, strict=True):
                        start, n = spans[k]
                        k += 1
                        lp, gr = float(logprob[start : start + n].sum()), bool(greedy[start : start + n].all())
                        ran += len(seg) - 1
                        for i in owners:
                            results[i] = LoglikelihoodResult(lp, gr, len(pack.context), n, ran)
                            ran = 0
                            done += 1
                if progress is not None:
                    progress(done)
        return [r for r in results if r is not None]

    def _token_logprobs(
        self, hidden: torch.Tensor, row_of: Sequence[int], targets: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per target: log-softmax(head(hidden[row]))[target] in fp32 and whether the target is the argmax, for
        hidden rows [n, d] each read by one or more targets (`row_of`). The head and lm-eval's arithmetic
        (`token_logprobs`: fp32 log_softmax, gather) run once per row, on bounded chunks of rows. (A logsumexp
        instead of the log_softmax is cheaper but rounds differently: up to 1.5e-4 from lm-eval on ARC-Easy.)"""
        dev = hidden.device
        row = torch.tensor(list(row_of), dtype=torch.long, device=dev)
        target = torch.tensor(list(targets), dtype=torch.long, device=dev)
        logprob = torch.empty(len(target), dtype=torch.float32, device=dev)
        greedy = torch.empty(len(target), dtype=torch.bool, device=dev)
        s, chunk = 0, _HEAD_MIN_ROWS  # the first chunk, before the vocabulary is known
        while s < len(hidden):
            logits = self.head(hidden[s : s + chunk])
            e = s + len(logits)
            mine = ((row >= s) & (row < e)).nonzero().squeeze(1)
            logprob[mine], greedy[mine] = token_logprobs(logits, target[mine], row[mine] - s)
            s = e
            chunk = max(_HEAD_MIN_ROWS, _HEAD_CHUNK_ELEMENTS // logits.shape[-1])  # then sized by the real one
        return logprob.cpu(), greedy.cpu()

    def _call_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return call_forward(self.forward, self.device, input_ids, attention_mask)

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

    def rolling_pairs(self, tokens: Sequence[int]) -> list[tuple[list[int], list[int]]]:
        """A text's rolling windows as (context, continuation) token pairs: what `score_token_pairs` scores."""
        return [
            (inp[: len(inp) - len(target) + 1], target)
            for inp, target in rolling_windows(tokens, self.max_length, self.prefix_token_id)
        ]

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
            for pair in self.rolling_pairs(tokens):
                owners.append(k)
                pairs.append(pair)
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

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest | str], progress: ProgressFn | None = None
    ) -> list[float]:
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
        with eval_mode(self.model):
            for (until, max_new), members in groups.items():
                order = sorted(members, key=lambda i: (-len(encoded[i]), requests[i].context))
                for batch in batched(order, self.batch_size):
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
        """Greedy new tokens per context: `generate` with its KV cache on the generator model, or, with custom
        model calls and no generator, a cache-free loop through `forward` (right padding, each row read at its own
        last position)."""
        if self.generator is not None:
            width = max(len(c) for c in contexts)
            # finished rows are filled with `pad`: EOS (when there is one), so that `_trim_eos` removes the filler
            eos = self.tokenizer.eos_token_id
            pad = eos if eos is not None else (self.tokenizer.pad_token_id or 0)
            ids = torch.full((len(contexts), width), pad, dtype=torch.long)
            mask = torch.zeros((len(contexts), width), dtype=torch.long)
            for row, c in enumerate(contexts):  # left padding for generation
                ids[row, width - len(c) :] = torch.tensor(c, dtype=torch.long)
                mask[row, width - len(c) :] = 1
            out = self.generator.generate(
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
            last = self._last_logits([seqs[i] for i in active])
            still = []
            for row, i in enumerate(active):
                tok = int(last[row].argmax())
                seqs[i].append(tok)
                new[i].append(tok)
                text = self.tokenizer.decode(new[i], skip_special_tokens=False)
                if tok != self.tokenizer.eos_token_id and not any(s and s in text for s in until):
                    still.append(i)
            active = still
        return [self._trim_eos(t) for t in new]

    def _last_logits(self, seqs: list[list[int]]) -> torch.Tensor:
        """Logits [len(seqs), V] at each sequence's last position, through the custom model calls."""
        if not self.hidden_given:
            logits = self._call_forward(*right_padded(seqs))
            return torch.stack([logits[row, len(s) - 1] for row, s in enumerate(seqs)])
        batch = pack_batch([Pack(tuple(s), ((0,),), ((row,),)) for row, s in enumerate(seqs)])
        hidden = self.hidden(batch)
        rows = torch.tensor([len(s) - 1 for s in seqs], device=hidden.device)
        return self.head(hidden[torch.arange(len(seqs), device=hidden.device), rows])

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


def _ll_args(request: LoglikelihoodRequest | tuple[str, str]) -> tuple[str, str]:
    if isinstance(request, LoglikelihoodRequest):
        return request.context, request.continuation
    context, continuation = request
    return context, continuation
