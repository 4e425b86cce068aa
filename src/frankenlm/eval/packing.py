"""Fast scoring layout: each context run once, the output head only where a log-probability is scored.

lm-eval's HFLM runs every (context, continuation) request as its own row: the four choices of an ARC item run
their shared question four times, and the head (often the costliest layer) runs on every position although only
the continuation's are read. Here requests that share their context tokens become one *pack*: a single row

    context  cont_1[:-1]  cont_2[:-1]  ...

whose continuation segments each attend to the whole context and causally to themselves, never to each other
(a block mask), with position ids that restart after the context for every segment — so each segment sees exactly
the inputs its own lm-eval row would, and the log-probabilities agree with HFLM's up to matmul rounding (the
tests hold them within 1e-4 in fp32). Continuation token k of segment j is predicted by the hidden state of the
context's last token (k = 0, shared by every segment) or of segment token k-1; only those rows go through the
final head (`Pack.scored`).

Short packs share a row (`fill_batches`): each batch's width is set by its longest pack, and the room that the
shorter rows leave is filled with the shortest packs still waiting, each pack in its own attention group (keys of
other packs in the row are masked, positions restart), so padding — 5-20% of a benchmark's tokens when every row
holds one pack — is mostly not run.

`model_inputs` turns a batch of packs into a model's keyword arguments: a plain 2-D padding mask when every row
is one causal sequence (no block structure, the model's fast causal path), else a boolean 4-D mask — per
attention type for models with per-layer types (gemma3's sliding window is applied on position distance, as the
model's own mask does).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from frankenlm.eval.forward import PAD_TOKEN_ID

HeadFn = Callable[[torch.Tensor], torch.Tensor]  # hidden rows [n, d] -> logits [n, V]

# The version of the batch layout below, part of a study unit's key under fast scoring: bump it whenever a change
# puts tokens in other rows or columns (in bf16 that moves per-item results well beyond rounding; see study.store).
# 1: packs by context, short packs sharing rows; 2: one-token contexts unshared, packs at most max_length long.
LAYOUT_VERSION = "2"


@dataclass(frozen=True)
class Pack:
    """One model row: a shared context and continuation segments (each scored request: one segment).

    `segments[j]` is the continuation of request `owners[j]`; requests with identical continuations of one
    context share a segment (`owners[j]` lists them all).
    """

    context: tuple[int, ...]
    segments: tuple[tuple[int, ...], ...]
    owners: tuple[tuple[int, ...], ...]

    @property
    def tokens(self) -> list[int]:
        """The row's input tokens: the context, then each segment's continuation without its last token."""
        out = list(self.context)
        for seg in self.segments:
            out.extend(seg[:-1])
        return out

    def __len__(self) -> int:
        return len(self.context) + sum(len(s) - 1 for s in self.segments)

    @property
    def single(self) -> bool:
        """One causal sequence (a plain mask suffices)."""
        return len(self.segments) == 1

    def layout(self) -> tuple[list[int], list[int]]:
        """(position ids, segment ids: 0 context, j + 1 segment j) of the row's tokens."""
        n = len(self.context)
        pos, seg = list(range(n)), [0] * n
        for j, s in enumerate(self.segments):
            pos.extend(range(n, n + len(s) - 1))
            seg.extend([j + 1] * (len(s) - 1))
        return pos, seg

    def scored(self) -> list[list[int]]:
        """Per segment, the row indices whose hidden states predict its tokens (first: the context's last)."""
        out, start = [], len(self.context)
        for s in self.segments:
            out.append([len(self.context) - 1, *range(start, start + len(s) - 1)])
            start += len(s) - 1
        return out


def make_packs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int) -> list[Pack]:
    """Group (context, continuation) token pairs into packs by their context tokens, in first-seen order.

    lm-eval truncates each request's input on the left to `max_length` tokens (the continuation's last token is
    never input): the context of a long pair is cut the same way here, so its segment sees what HFLM's row sees.

    Sharing a context saves its tokens once per extra segment, but a pack's row attends densely (the block mask
    only hides keys), so a pack never grows past `max_length` tokens (the next segment opens another pack of the
    same context), and a one-token context is never shared: it saves one token per segment, while every rolling
    window of lm-eval's `loglikelihood_rolling` starts from the same one-token context (the prefix token), so
    sharing it made a slice of passages one row whose attention cost grew with the square of the slice (8k
    tokens of LAMBADA: 66M attention scores where the passages need 0.7M). Such pairs share a pack only with an
    identical continuation (a duplicate request).
    """
    packs: list[tuple[tuple[int, ...], dict[tuple[int, ...], list[int]]]] = []  # (context, segment -> owners)
    length: list[int] = []
    open_pack: dict[tuple, int] = {}  # sharing key -> the pack that takes the context's next new segment
    has_segment: dict[tuple, int] = {}  # (context, continuation) -> the pack holding that segment
    for i, (ctx, cont) in enumerate(pairs):
        cont = tuple(cont)
        keep = max_length + 1 - len(cont)  # context tokens that fit beside the continuation
        c = tuple(ctx)[-keep:] if keep < len(ctx) else tuple(ctx)
        k = has_segment.get((c, cont))
        if k is None:
            key = (c,) if len(c) > 1 else (c, cont)  # a one-token context is not shared (see the docstring)
            k = open_pack.get(key)
            if k is None or length[k] + len(cont) - 1 > max_length:
                k = open_pack[key] = len(packs)  # a new context, or its pack is full
                packs.append((c, {}))
                length.append(len(c))
            length[k] += len(cont) - 1
            has_segment[(c, cont)] = k
        packs[k][1].setdefault(cont, []).append(i)
    return [Pack(c, tuple(segs), tuple(tuple(o) for o in segs.values())) for c, segs in packs]


def order_packs(packs: Sequence[Pack]) -> list[Pack]:
    """Longest first (ties by tokens): rows of similar length share a batch, so little padding is run."""
    return sorted(packs, key=lambda p: (-len(p), p.tokens))


Row = Sequence[Pack]  # packs run back to back in one model row


def fill_batches(packs: Sequence[Pack], rows: int) -> list[list[list[Pack]]]:
    """Batches of at most `rows` model rows for `packs`, longest first, with no pack split and none repeated.

    A batch opens rows for the longest waiting packs (as `order_packs` + fixed-size batches would); its width is
    its longest pack's length, and each row's remaining room then takes the longest waiting packs that still fit
    (in practice the shortest ones, from the end of the queue). Deterministic for the same packs."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    waiting = order_packs(packs)[::-1]  # shortest first: the longest is popped from the end
    lengths = [len(p) for p in waiting]
    out: list[list[list[Pack]]] = []
    while waiting:
        batch = [[waiting.pop()]]
        lengths.pop()
        width = len(batch[0][0])
        while waiting and len(batch) < rows:
            batch.append([waiting.pop()])
            lengths.pop()
        for row in batch:
            room = width - sum(len(p) for p in row)
            while waiting and lengths[0] <= room:
                k = bisect_right(lengths, room) - 1
                row.append(waiting.pop(k))
                room -= lengths.pop(k)
        out.append(batch)
    return out


def row_offsets(row: Row) -> list[int]:
    """Where each pack of a row starts."""
    out, at = [], 0
    for p in row:
        out.append(at)
        at += len(p)
    return out


@dataclass(frozen=True)
class PackedBatch:
    """A right-padded batch of rows of packs: tensors [b, t] and the layout needed for the masks."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor  # -1 padding, 0 context, j + 1 segment j (of the token's own pack)
    group_ids: torch.Tensor  # -1 padding, k: the row's k-th pack
    plain: bool  # every row one causal sequence

    @property
    def padding_mask(self) -> torch.Tensor:
        return (self.segment_ids >= 0).long()

    def attention_4d(self, window: int | None = None) -> torch.Tensor:
        """Boolean [b, 1, t, t] mask: query q sees key k (k <= q) of its own pack when k is context or in q's
        segment; with `window`, only keys less than `window` positions back. Padding queries see themselves."""
        seg, pos, grp = self.segment_ids, self.position_ids, self.group_ids
        t = seg.shape[1]
        idx = torch.arange(t, device=seg.device)
        causal = idx[None, :, None] >= idx[None, None, :]
        sq, sk = seg[:, :, None], seg[:, None, :]
        same_pack = grp[:, :, None] == grp[:, None, :]
        allowed = causal & same_pack & (sk >= 0) & (sq >= 0) & ((sk == 0) | (sk == sq))
        if window is not None:
            allowed &= (pos[:, :, None] - pos[:, None, :]) < window
        allowed |= (sq < 0) & (idx[None, :, None] == idx[None, None, :])
        return allowed[:, None]

    def key_digest(self) -> str:
        """Identifies the batch (tokens and layout), e.g. for caches of hidden states."""
        h = hashlib.sha1(str(tuple(self.input_ids.shape)).encode())
        for t in (self.input_ids, self.position_ids, self.segment_ids, self.group_ids):
            h.update(t.detach().cpu().numpy().tobytes())
        return h.hexdigest()


def pack_batch(rows: Sequence[Pack | Row], pad: int = PAD_TOKEN_ID) -> PackedBatch:
    """The batch whose rows are the given packs (a `Pack`, or a sequence of packs run back to back)."""
    rows = [[r] if isinstance(r, Pack) else list(r) for r in rows]
    width = max(sum(len(p) for p in r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    grp = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        for k, (at, p) in enumerate(zip(row_offsets(row), row, strict=True)):
            n = len(p)
            ids[r, at : at + n] = torch.tensor(p.tokens, dtype=torch.long)
            ppos, pseg = p.layout()
            pos[r, at : at + n] = torch.tensor(ppos, dtype=torch.long)
            seg[r, at : at + n] = torch.tensor(pseg, dtype=torch.long)
            grp[r, at : at + n] = k
    plain = all(len(r) == 1 and r[0].single for r in rows)
    return PackedBatch(ids, pos, seg, grp, plain)


def model_inputs(config, batch: PackedBatch, device: torch.device) -> dict:
    """Keyword arguments (input_ids, attention_mask, position_ids) for a transformers decoder on `batch`.

    Plain batches get the 2-D padding mask (the model builds its own causal and sliding-window masks). Packed
    batches get a boolean 4-D mask, or for models with per-layer attention types (``config.layer_types``) a
    mapping type -> mask, where sliding layers also drop keys ``config.sliding_window`` or more positions back.
    An eager attention implementation takes additive masks: 0 where allowed, the dtype's minimum elsewhere.
    """
    ids = batch.input_ids.to(device)
    pos = batch.position_ids.to(device)
    if batch.plain:
        return {"input_ids": ids, "attention_mask": batch.padding_mask.to(device), "position_ids": pos}
    impl = getattr(config, "_attn_implementation", None) or "sdpa"

    def prepared(mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(device)
        if impl == "eager":
            dtype = getattr(config, "dtype", None) or torch.float32
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
        return mask

    types = getattr(config, "layer_types", None)
    if not types:
        return {"input_ids": ids, "attention_mask": prepared(batch.attention_4d()), "position_ids": pos}
    masks: dict[str, torch.Tensor] = {}
    full = None
    for t in dict.fromkeys(types):
        if t == "sliding_attention":
            window = getattr(config, "sliding_window", None)
            masks[t] = prepared(batch.attention_4d(window))
        else:
            full = full if full is not None else prepared(batch.attention_4d())
            masks[t] = full
    return {"input_ids": ids, "attention_mask": masks, "position_ids": pos}


HiddenFn = Callable[[PackedBatch], torch.Tensor]  # a batch -> final hidden states [b, t, d] (after the final norm)


def decoder_hidden(model, device: torch.device | None = None) -> HiddenFn:
    """The final hidden states (after the final norm) of a transformers causal LM on a batch, no KV cache."""
    decoder = model.get_decoder()
    config = model.config

    def hidden(batch: PackedBatch) -> torch.Tensor:
        dev = device if device is not None else decoder.get_input_embeddings().weight.device
        return decoder(**model_inputs(config, batch, dev), use_cache=False).last_hidden_state

    return hidden


def output_head(model) -> HeadFn:
    """Logits from final hidden rows: the model's output embedding, with gemma's logit soft-capping if set."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)

    def logits(h: torch.Tensor) -> torch.Tensor:
        out = head(h)
        if cap is not None:
            out = torch.tanh(out / cap) * cap
        return out

    return logits
