"""Fast scoring (packed contexts, head only at scored positions) against lm-eval's layout, the second code path."""

from __future__ import annotations

import random

import pytest
import torch

from frankenlm.eval.packing import Pack, fill_batches, make_packs, order_packs, pack_batch
from frankenlm.eval.scorer import Scorer
from frankenlm.model.frankenmodel import build_frankenmodel
from frankenlm.model.plan import parse_plan
from frankenlm.study.prefix_cache import PrefixCache
from test_study import tiny_dir  # noqa: F401  (fixture re-export)
from tiny import ARCHS, VOCAB, tiny_model


class IdTokenizer:
    """Token ids as text ("3 5 7"): enough for the scorer's token-level paths."""

    bos_token_id, eos_token_id, eos_token, pad_token_id = 1, 2, "<eos>", 0

    def encode(self, text, add_special_tokens=True):
        return [int(t) for t in text.split()]

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids)


def test_packs_group_choices_by_context_and_lay_out_segments():
    pairs = [((5, 6, 7), (8, 9)), ((5, 6, 7), (10,)), ((4,), (3, 2, 1)), ((5, 6, 7), (8, 9))]
    packs = make_packs(pairs, max_length=64)
    assert [p.context for p in packs] == [(5, 6, 7), (4,)]
    first = packs[0]
    assert first.segments == ((8, 9), (10,)) and first.owners == ((0, 3), (1,))
    assert first.tokens == [5, 6, 7, 8] and len(first) == 4  # each segment without its last token
    pos, seg = first.layout()
    assert pos == [0, 1, 2, 3] and seg == [0, 0, 0, 1]
    # (8, 9) is predicted from rows 2 (the context's last) and 3; (10,) from row 2 alone
    assert first.scored() == [[2, 3], [2]]
    assert [len(p) for p in order_packs(packs)] == [4, 3]


def test_a_one_token_context_is_not_shared_and_no_pack_outgrows_max_length():
    # rolling windows all start from the prefix token: sharing it saved one token per passage and made a slice
    # of passages one row with attention over all of them (only a duplicate continuation shares a pack)
    rolling = [((1,), (5, 6, 7)), ((1,), (8, 9)), ((1,), (5, 6, 7))]
    packs = make_packs(rolling, max_length=64)
    assert [(p.context, p.segments, p.owners) for p in packs] == [
        ((1,), ((5, 6, 7),), ((0, 2),)),
        ((1,), ((8, 9),), ((1,),)),
    ]
    assert all(p.single for p in packs) and pack_batch([[p] for p in packs]).plain
    choices = [((5, 6, 7), (10 + k, 20 + k, 30 + k)) for k in range(5)] + [((5, 6, 7), (10, 20, 30))]
    packs = make_packs(choices, max_length=8)  # 3 context tokens + 2 per segment: two segments per pack
    assert [len(p) for p in packs] == [7, 7, 5] and all(p.context == (5, 6, 7) for p in packs)
    assert sorted(i for p in packs for o in p.owners for i in o) == list(range(6))
    assert packs[0].owners[0] == (0, 5)  # the duplicate joins its segment in the earlier pack


def test_long_pairs_are_cut_on_the_left_as_lm_eval_cuts_them():
    (pack,) = make_packs([(tuple(range(10, 20)), (1, 2, 3))], max_length=6)
    # lm-eval's row: (ctx + cont)[-(max_length + 1):][:-1] = 16..19, 1, 2
    assert pack.tokens == [16, 17, 18, 19, 1, 2]


def test_block_mask_keeps_segments_apart_and_restarts_positions():
    batch = pack_batch([Pack((5, 6), ((7, 8, 9), (3, 4)), ((0,), (1,))), Pack((1,), ((2,),), ((2,),))])
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 2]
    m = batch.attention_4d()[0, 0]
    assert m[4].tolist() == [True, True, False, False, True]  # segment 2 sees the context and itself only
    assert m[3].tolist() == [True, True, True, True, False]
    assert not batch.plain
    pad = batch.attention_4d()[1, 0]
    assert pad[1].tolist() == [False, True, False, False, False]  # a padding query sees only itself
    sliding = batch.attention_4d(window=2)[0, 0]
    assert sliding[3].tolist() == [False, False, True, True, False]  # positions 1 back at most


def test_two_packs_in_one_row_never_see_each_other():
    a, b = Pack((5, 6), ((7, 8),), ((0,),)), Pack((1, 2), ((3,), (4,)), ((1,), (2,)))
    batch = pack_batch([[a, b], Pack((9,), ((9, 9, 9, 9),), ((3,),))])
    assert batch.group_ids[0].tolist() == [0, 0, 0, 1, 1] and batch.position_ids[0].tolist() == [0, 1, 2, 0, 1]
    m = batch.attention_4d()[0, 0]
    assert m[3].tolist() == [False, False, False, True, False]  # b's first token: its own pack only
    assert m[4].tolist() == [False, False, False, True, True]
    assert m[2].tolist() == [True, True, True, False, False]
    assert not batch.plain and pack_batch([a]).plain
    assert batch.key_digest() != pack_batch([[b, a], Pack((9,), ((9, 9, 9, 9),), ((3,),))]).key_digest()


def test_fill_batches_runs_every_pack_once_within_each_batch_width():
    packs = make_packs(_random_pairs(40, seed=11), max_length=64)
    batches = fill_batches(packs, rows=3)
    placed = [p for b in batches for row in b for p in row]
    assert sorted(placed, key=lambda p: p.tokens) == sorted(packs, key=lambda p: p.tokens)
    for b in batches:
        assert len(b) <= 3
        assert all(sum(len(p) for p in row) <= len(b[0][0]) for row in b)  # the first pack sets the width
    # fewer padded tokens than one pack per row in the same longest-first order
    one_per_row = [order_packs(packs)[i : i + 3] for i in range(0, len(packs), 3)]
    cost = sum(len(b) * max(sum(len(p) for p in row) for row in b) for b in batches)
    assert cost < sum(len(c) * len(c[0]) for c in one_per_row)
    assert any(len(row) > 1 for b in batches for row in b)
    assert fill_batches(packs, rows=3) == batches  # deterministic


def _random_pairs(n_items: int, seed: int):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n_items):
        ctx = [rng.randrange(3, VOCAB) for _ in range(rng.randrange(1, 14))]
        for _ in range(rng.randrange(1, 5)):
            pairs.append((ctx, [rng.randrange(3, VOCAB) for _ in range(rng.randrange(1, 6))]))
    return pairs


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("plan", [None, "0..3,2*2,3..5.mlp,4..5", "0..2,2@0.5,3..5"])
def test_fast_scoring_equals_lm_eval_layout(arch, plan):
    """Shared contexts (longer than gemma3's 4-token window), several choices, right padding, frankenmodels."""
    base = tiny_model(arch)
    model = build_frankenmodel(base, plan) if plan else base
    pairs = _random_pairs(12, seed=7)
    tok = IdTokenizer()
    exact = Scorer(model, tok, batch_size=5, max_length=16, scoring="lm-eval").score_token_pairs(pairs)
    fast = Scorer(model, tok, batch_size=3, max_length=16, scoring="fast").score_token_pairs(pairs)
    diffs = [abs(a.logprob - b.logprob) for a, b in zip(exact, fast, strict=True)]
    assert max(diffs) <= 1e-4
    assert [a.is_greedy for a in exact] == [b.is_greedy for b in fast]
    assert [a.n_continuation_tokens for a in exact] == [b.n_continuation_tokens for b in fast]
    # every token of a pack is counted once: fewer tokens run than lm-eval's rows
    assert sum(b.n_input_tokens for b in fast) < sum(a.n_input_tokens for a in exact)


@pytest.mark.parametrize("arch", ARCHS)
def test_rolling_windows_fast_equal_exact(arch):
    model = tiny_model(arch)
    tok = IdTokenizer()
    texts = [" ".join(str(random.Random(k).randrange(3, VOCAB)) for _ in range(9 + 7 * k)) for k in range(4)]
    exact = Scorer(model, tok, batch_size=2, max_length=8, scoring="lm-eval").loglikelihood_rolling(texts)
    fast = Scorer(model, tok, batch_size=2, max_length=8).loglikelihood_rolling(texts)
    assert max(abs(a - b) for a, b in zip(exact, fast, strict=True)) <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_cache_hidden_states_equal_the_full_frankenmodel(arch):
    base = tiny_model(arch)
    plan = "0..3,3*2,4..5"
    batch = pack_batch(order_packs(make_packs(_random_pairs(4, seed=3), max_length=32)))
    cache = PrefixCache(base, {4})
    cache.base_hidden(batch)
    hidden, k = cache.hidden_for(parse_plan(plan))
    assert k == 4
    full = Scorer(build_frankenmodel(base, plan), IdTokenizer()).hidden(batch)
    real = batch.segment_ids >= 0
    assert torch.allclose(hidden(batch)[real], full[real], atol=1e-5)


def test_generation_with_custom_calls_uses_the_kv_cached_generator(tiny_dir):  # noqa: F811
    """Inside studies greedy generation runs `generate` (KV cache) on the frankenmodel; it equals the cache-free
    loop through the scorer's hidden-state calls."""
    from frankenlm.eval.packing import decoder_hidden
    from frankenlm.eval.tasks.requests import GenerateRequest
    from frankenlm.model.loading import load_model

    lm = load_model(str(tiny_dir))
    fm = build_frankenmodel(lm.model, "0..3,2..5")
    reqs = [GenerateRequest(c, ("\n\n",), 8) for c in ("Question: 2+2?\nAnswer:", "The sky is", "Once upon a")]
    loop = Scorer(lm.model, lm.tokenizer, hidden=decoder_hidden(fm), batch_size=1)
    assert loop.generator is None
    cached = Scorer(lm.model, lm.tokenizer, hidden=decoder_hidden(fm), generator=fm, batch_size=1)
    a, b = loop.generate_until_detailed(reqs), cached.generate_until_detailed(reqs)
    assert [r.text for r in a] == [r.text for r in b]
    assert all(r.n_generated_tokens > 0 for r in b)
