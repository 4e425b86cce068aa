"""The scorer and evaluate() on tiny random llamas (fast): hand-computed log-likelihoods, lm-eval's window
function and HFLM itself as references, metric definitions by hand."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from frankenlm.errors import FrankenError
from frankenlm.eval import evaluate as evaluate_module
from frankenlm.eval import forward as forward_module
from frankenlm.eval.evaluate import evaluate
from frankenlm.eval.forward import continuation_logprob, rolling_windows
from frankenlm.eval.results import EvalResult, ItemResult
from frankenlm.eval.scorer import Scorer
from frankenlm.eval.tasks import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingDoc,
    RollingRequest,
    RollingResult,
    get_task,
)
from frankenlm.eval.tasks.multiple_choice import choice_doc

REQUESTS = [
    LoglikelihoodRequest("Question: what is a list?\nAnswer:", " a mutable sequence"),
    LoglikelihoodRequest("The for statement", " is used to iterate"),
    LoglikelihoodRequest("Trailing spaces move  ", "to the continuation"),
    LoglikelihoodRequest("", "An empty context uses the prefix token"),
    LoglikelihoodRequest("x", " y"),
    LoglikelihoodRequest(
        "Identifiers (also referred to as names) are described by the following lexical definitions. " * 3, " Yes"
    ),
    LoglikelihoodRequest("The for statement", " is used to iterate"),  # a duplicate
]


def _hflm(model, tokenizer, batch_size: int, max_length: int):
    pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)


def _instances(kind: str, args_list):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, args, i) for i, args in enumerate(args_list)]


def _manual_loglikelihood(model, ctx: list[int], cont: list[int], max_length: int) -> tuple[float, bool]:
    """Unbatched reference: one sequence, plain log_softmax over the whole vocabulary, float64 sum."""
    ids = (ctx + cont)[-(max_length + 1) :][:-1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)[len(ids) - len(cont) :]
    target = torch.tensor(cont)
    total = float(logp[torch.arange(len(cont)), target].sum())
    return total, bool((logp.argmax(-1) == target).all())


# -------------------------------------------------------------------------------------------- loglikelihood


def test_batched_loglikelihood_equals_unbatched_by_hand(tiny_lm):
    model, tok = tiny_lm
    scorer = Scorer(model, tok, batch_size=3, max_length=48)
    got = scorer.loglikelihood_detailed(REQUESTS)
    for req, res in zip(REQUESTS, got):
        ctx, cont = scorer.encode_pair(req.context, req.continuation)
        ll, greedy = _manual_loglikelihood(model, ctx, cont, 48)
        assert res.logprob == pytest.approx(ll, abs=1e-4)
        assert res.is_greedy == greedy
        assert res.n_continuation_tokens == len(cont)
        assert res.n_context_tokens == min(len(ctx), 48 + 1 - len(cont))
    # the long context was left-truncated to fit max_length
    assert got[5].n_context_tokens + got[5].n_continuation_tokens - 1 == 48


def test_batch_size_does_not_change_results(tiny_lm):
    model, tok = tiny_lm
    one = Scorer(model, tok, batch_size=1).loglikelihood(REQUESTS)
    many = Scorer(model, tok, batch_size=16).loglikelihood(REQUESTS)
    assert [g for _, g in one] == [g for _, g in many]
    np.testing.assert_allclose([x for x, _ in one], [x for x, _ in many], atol=1e-4)


def test_encode_pair_follows_hflm(tiny_lm):
    model, tok = tiny_lm
    hf = _hflm(model, tok, 4, 64)
    scorer = Scorer(model, tok, max_length=64)
    for req in REQUESTS:
        if req.context:
            assert scorer.encode_pair(req.context, req.continuation) == hf._encode_pair(req.context, req.continuation)
    assert scorer.encode("hello there") == hf.tok_encode("hello there")
    assert scorer.prefix_token_id == hf.prefix_token_id


@pytest.mark.parametrize("max_length", [24, 512])
def test_loglikelihood_matches_hflm(tiny_lm, max_length):
    model, tok = tiny_lm
    hf = _hflm(model, tok, 4, max_length)
    theirs = hf.loglikelihood(
        _instances("loglikelihood", [(r.context, r.continuation) for r in REQUESTS]), disable_tqdm=True
    )
    mine = Scorer(model, tok, batch_size=4, max_length=max_length).loglikelihood(REQUESTS)
    for (a, ga), (b, gb) in zip(mine, theirs):
        assert a == pytest.approx(b, abs=1e-5)
        assert ga == gb


def test_empty_continuation_is_an_error(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(FrankenError, match="continuation"):
        Scorer(model, tok).loglikelihood([LoglikelihoodRequest("abc", "")])


def test_bad_scorer_settings(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(FrankenError, match="batch size"):
        Scorer(model, tok, batch_size=0)
    with pytest.raises(FrankenError, match="max_length"):
        Scorer(model, tok, max_length=4096)  # the model has 512 positions
    assert Scorer(model, tok).max_length == 512  # default: min(2048, the model's limit)


def test_chunked_log_softmax_equals_full(monkeypatch):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 1000, generator=g) * 4
    targets = torch.randint(0, 1000, (9,), generator=g).tolist()
    targets[3] = int(logits[3].argmax())
    full = float(torch.log_softmax(logits.double(), -1)[torch.arange(9), torch.tensor(targets)].sum())
    monkeypatch.setattr(forward_module, "_LOGSOFTMAX_CHUNK_ELEMENTS", 2000)  # 2 positions per chunk
    chunked, greedy = continuation_logprob(logits, targets)
    assert chunked == pytest.approx(full, abs=1e-4)
    assert not greedy
    argmaxes = logits.argmax(-1).tolist()
    assert continuation_logprob(logits, argmaxes)[1]


# -------------------------------------------------------------------------------------------- rolling windows


def test_rolling_windows_reproduce_lmeval():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    rng = random.Random(0)
    for _ in range(400):
        n = rng.randint(0, 60)
        max_length = rng.randint(1, 12)
        tokens = [rng.randint(3, 99) for _ in range(n)]
        theirs = [
            make_disjoint_window(w)
            for w in get_rolling_token_windows(token_list=tokens, prefix_token=1, max_seq_len=max_length, context_len=1)
        ]
        mine = rolling_windows(tokens, max_length, 1)
        assert len(mine) == len(theirs)
        for (inp, target), (ctx, cont) in zip(mine, theirs):
            assert target == cont
            assert inp == (ctx + cont)[-(max_length + 1) :][:-1]  # HFLM's model input for the window
            assert len(inp) <= max_length
        # every token is predicted exactly once, in order
        assert [t for _, target in mine for t in target] == tokens


def test_rolling_windows_by_hand():
    assert rolling_windows([5, 6, 7, 8, 9], 2, 0) == [([0, 5], [5, 6]), ([6, 7], [7, 8]), ([7, 8], [9])]
    assert rolling_windows([], 4, 0) == []
    with pytest.raises(FrankenError):
        rolling_windows([1], 0, 0)


def test_rolling_short_text_equals_one_pass(tiny_lm):
    model, tok = tiny_lm
    scorer = Scorer(model, tok, max_length=256)
    text = "Assert statements are a convenient way to insert debugging assertions."
    tokens = scorer.encode(text)
    ll, _ = _manual_loglikelihood(model, [scorer.prefix_token_id], tokens, 256)
    (res,) = scorer.loglikelihood_rolling_detailed([RollingRequest(text)])
    assert res.logprob == pytest.approx(ll, abs=1e-4)
    assert (res.n_tokens, res.n_windows) == (len(tokens), 1)


def test_rolling_matches_hflm(tiny_lm):
    from pydoc_data.topics import topics

    model, tok = tiny_lm
    texts = [topics["assert"][:900], topics["if"][:500], "short", ""]
    hf = _hflm(model, tok, 3, 32)
    theirs = hf.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True)
    mine = Scorer(model, tok, batch_size=3, max_length=32).loglikelihood_rolling_detailed(texts)
    assert mine[0].n_windows > 3
    for a, b in zip(mine, theirs):
        assert a.logprob == pytest.approx(b, rel=1e-5, abs=1e-5)


# -------------------------------------------------------------------------------------------- forward hook


def test_every_model_call_goes_through_forward_and_batches_are_deterministic(tiny_lm):
    model, tok = tiny_lm
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(input_ids, attention_mask):
        calls.append((input_ids.clone(), attention_mask.clone()))
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    def run():
        calls.clear()
        s = Scorer(model, tok, batch_size=3, max_length=40, forward=forward)
        out = (s.loglikelihood(REQUESTS), s.loglikelihood_rolling(["some text " * 20, "abc"]))
        return out, [(a.tolist(), b.tolist()) for a, b in calls]

    out1, batches1 = run()
    out2, batches2 = run()
    plain = (Scorer(model, tok, batch_size=3, max_length=40).loglikelihood(REQUESTS),)
    assert batches1 == batches2 and len(batches1) >= 4
    assert out1 == out2 and out1[0] == plain[0]
    for ids, mask in batches1:  # right padding with token 0, longest row first
        lengths = [sum(m) for m in mask]
        assert lengths == sorted(lengths, reverse=True)
        assert all(m == [1] * n + [0] * (len(m) - n) for m, n in zip(mask, lengths))
        assert all(row[n:] == [0] * (len(row) - n) for row, n in zip(ids, lengths))


def test_shared_inputs_run_once_and_batches_equal_hflms(tiny_lm):
    """One-token choices after one context share a model input (lm-eval's logits cache): one row for all four;
    and the batches sent to the model are exactly the ones HFLM sends."""
    model, tok = tiny_lm
    mmlu_like = [LoglikelihoodRequest("Which letter?\nAnswer:", f" {c}") for c in "ABCD"]
    reqs = REQUESTS + mmlu_like
    mine_calls: list[list[list[int]]] = []
    n_real = 0

    def forward(input_ids, attention_mask):
        nonlocal n_real
        mine_calls.append(input_ids.tolist())
        n_real += int(attention_mask.sum())
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    detailed = Scorer(model, tok, batch_size=3, max_length=40, forward=forward).loglikelihood_detailed(reqs)
    mine = [r.as_tuple() for r in detailed]
    assert sum(r.n_input_tokens for r in detailed) == n_real  # shared inputs are counted once
    hf = _hflm(model, tok, 3, 40)
    hf_calls: list[list[list[int]]] = []
    real_call = hf._model_call

    def record(inps, attn_mask=None, labels=None):
        hf_calls.append(inps.tolist())
        return real_call(inps)

    hf._model_call = record
    theirs = hf.loglikelihood(
        _instances("loglikelihood", [(r.context, r.continuation) for r in reqs]), disable_tqdm=True
    )
    assert mine_calls == hf_calls
    assert sum(len(b) for b in mine_calls) == len(reqs) - 1 - 3  # the duplicate and 3 of the 4 letters share rows
    np.testing.assert_allclose([x for x, _ in mine], [x for x, _ in theirs], atol=1e-5)
    separately = [Scorer(model, tok, max_length=40).loglikelihood([r])[0][0] for r in mmlu_like]
    np.testing.assert_allclose([x for x, _ in mine[-4:]], separately, atol=1e-5)


def test_forward_shape_is_checked(tiny_lm):
    model, tok = tiny_lm
    bad = Scorer(model, tok, forward=lambda ids, mask: torch.zeros(ids.shape[0], 3))
    with pytest.raises(ValueError, match="shape"):
        bad.loglikelihood(REQUESTS[:1])


# -------------------------------------------------------------------------------------------- generation


def test_generation_matches_hflm_and_the_forward_loop(tiny_lm):
    model, tok = tiny_lm
    prompts = ["The for statement is used", "Assert statements are", "x"]
    # stop strings that the random model may or may not produce; EOS is added as in HFLM
    reqs = [GenerateRequest(p, ["e", "\n\n"], 12) for p in prompts]
    mine = Scorer(model, tok, batch_size=2, max_length=64).generate_until_detailed(reqs)
    loop = Scorer(
        model, tok, batch_size=2, max_length=64, forward=lambda i, m: model(input_ids=i, attention_mask=m).logits
    ).generate_until(reqs)
    hf = _hflm(model, tok, 2, 64)
    theirs = hf.generate_until(
        _instances(
            "generate_until",
            [(r.context, {"until": list(r.until), "max_gen_toks": 12, "do_sample": False}) for r in reqs],
        ),
        disable_tqdm=True,
    )
    assert [r.text for r in mine] == theirs == loop
    assert all("e" not in r.text for r in mine)


def test_generation_settings_checked(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(FrankenError, match="max_new_tokens"):
        Scorer(model, tok, max_length=64).generate_until([GenerateRequest("a", [], 64)])


# -------------------------------------------------------------------------------------------- metrics by hand


def test_acc_and_acc_norm_by_hand():
    doc = choice_doc("t", "0", "Q:", ["a", "bbbbbbbbbb", "cc"], gold=1)
    lls = [-2.0, -5.0, -4.5]  # acc picks 0; per char: -2, -0.5, -2.25 -> acc_norm picks 1
    res = [LoglikelihoodResult(x, False, 3, 1) for x in lls]
    assert doc.score(res) == {"acc": 0.0, "acc_norm": 1.0}
    extras = doc.extras(res)
    assert extras["pred"] == 0 and extras["pred_norm"] == 1 and extras["gold"] == 1
    assert extras["nll"] == 5.0 and extras["logprobs"] == lls and extras["choice_chars"] == [1, 10, 2]
    assert doc.requests[1] == LoglikelihoodRequest("Q:", " bbbbbbbbbb")
    # ties go to the first index, as numpy argmax in lm-eval
    tie = choice_doc("t", "1", "Q:", ["ab", "cd"], gold=0)
    assert tie.score([LoglikelihoodResult(-1.0, False, 1, 1)] * 2) == {"acc": 1.0, "acc_norm": 1.0}


def test_rolling_metrics_and_aggregation_by_hand():
    task = get_task("pydoc_topics")
    docs = [
        RollingDoc("pydoc_topics", "a", (RollingRequest("one two three"),), 3, 13),
        RollingDoc("pydoc_topics", "b", (RollingRequest("four five"),), 2, 9),
    ]
    results = [[RollingResult(-6.0, 4, 1, 4)], [RollingResult(-3.0, 2, 1, 2)]]
    items = [ItemResult(d.task, d.item_id, d.split, d.score(r), d.extras(r)) for d, r in zip(docs, results)]
    assert items[0].metrics["word_perplexity"] == pytest.approx(math.exp(6 / 3))
    agg = evaluate_module.aggregate(task, items)
    assert agg["word_perplexity"].value == pytest.approx(math.exp(9 / 5))
    assert agg["byte_perplexity"].value == pytest.approx(math.exp(9 / 22))
    assert agg["bits_per_byte"].value == pytest.approx(9 / 22 / math.log(2))
    assert agg["token_perplexity"].value == pytest.approx(math.exp(9 / 6))
    assert agg["bits_per_byte"].se is not None and agg["bits_per_byte"].se > 0


def test_lambada_perplexity_is_exp_of_minus_mean_loglik():
    task = get_task("lambada_openai")
    docs = task.load_docs(limit=3)
    lls = [-1.0, -2.0, -6.0]
    items = [
        ItemResult(d.task, d.item_id, d.split, d.score([r]), d.extras([r]))
        for d, r in zip(docs, [LoglikelihoodResult(x, x > -1.5, 20, 1) for x in lls])
    ]
    agg = evaluate_module.aggregate(task, items)
    assert agg["perplexity"].value == pytest.approx(math.exp(3.0))
    assert agg["acc"].value == pytest.approx(1 / 3)
    assert agg["acc"].se == pytest.approx(np.std([1, 0, 0], ddof=1) / math.sqrt(3))


# -------------------------------------------------------------------------------------------- evaluate()


def test_evaluate_end_to_end(tiny_lm):
    model, tok = tiny_lm
    res = evaluate(
        model,
        tok,
        ["copa", "pydoc_topics", "lambada_openai"],
        limit=3,
        seed=5,
        batch_size=4,
        max_length=64,
        progress=False,
    )
    assert set(res.tasks) == {"copa", "pydoc_topics", "lambada_openai"}
    assert len(res.items) == 9
    copa = res.tasks["copa"]
    assert copa.n_items == 3 and copa.n_requests == 6 and copa.tokens_processed > 0 and copa.tokens_per_s > 0
    assert copa.metrics["acc"].value == pytest.approx(np.mean([it.metrics["acc"] for it in res.items_of("copa")]))
    item = res.items_of("copa")[0]
    assert {"logprobs", "gold", "nll", "n_context_tokens", "n_continuation_tokens", "choice_chars"} <= set(item.extras)
    assert item.split in ("search", "heldout")
    ppl = res.tasks["pydoc_topics"]
    assert ppl.tokens_scored == sum(it.extras["n_tokens"] for it in res.items_of("pydoc_topics"))
    data = json.loads(json.dumps(res.to_json()))
    back = EvalResult.from_json(data)
    assert back.tasks["copa"].metrics["acc"] == copa.metrics["acc"]
    assert [i.item_id for i in back.items] == [i.item_id for i in res.items]
    assert data["config"]["max_length"] == 64 and data["config"]["seed"] == 5
    # same settings, same item ids and numbers (determinism), also with a progress callback
    calls: list[tuple[str, int]] = []
    advanced: list[int] = []

    def start(task: str, total: int):
        calls.append((task, total))
        return advanced.append

    again = evaluate(model, tok, ["copa"], limit=3, seed=5, batch_size=2, max_length=64, progress=start)
    np.testing.assert_allclose(
        [i.extras["logprobs"] for i in again.items], [i.extras["logprobs"] for i in res.items_of("copa")], atol=1e-5
    )
    assert calls == [("copa", 6)] and sum(advanced) == 6  # 3 items x 2 choices, reported batch by batch
    assert len(advanced) == 2  # fast scoring: an item's two choices share one packed row; 3 rows, batch size 2
    advanced.clear()
    calls.clear()
    evaluate(model, tok, ["copa"], limit=3, seed=5, batch_size=2, max_length=64, progress=start, scoring="lm-eval")
    assert sum(advanced) == 6 and len(advanced) == 3  # lm-eval's layout: one row per choice, three model calls


def test_evaluate_draws_nothing(tiny_lm, capsys):
    model, tok = tiny_lm
    evaluate(model, tok, ["copa"], limit=2, max_length=64, progress=True)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_limit_mode_first_takes_the_first_items_in_stored_order(tiny_lm):
    from frankenlm.eval.tasks import get_task

    model, tok = tiny_lm
    stored = [d.item_id for d in get_task("copa").load_all_docs()]
    first = evaluate(model, tok, ["copa"], limit=4, limit_mode="first", max_length=64)
    assert [i.item_id for i in first.items] == stored[:4]
    assert first.config["limit_mode"] == "first"
    held = [d.item_id for d in get_task("copa").load_all_docs() if d.split == "heldout"]
    first_held = evaluate(model, tok, ["copa"], limit=3, limit_mode="first", split="heldout", max_length=64)
    assert [i.item_id for i in first_held.items] == held[:3]
    rand = evaluate(model, tok, ["copa"], limit=4, seed=5, max_length=64)  # the default is unchanged
    assert [i.item_id for i in rand.items] == [d.item_id for d in get_task("copa").load_docs(limit=4, seed=5)]
    with pytest.raises(FrankenError, match="limit mode"):
        evaluate(model, tok, ["copa"], limit=4, limit_mode="last")


def test_old_evaluator_path_still_imports():
    from frankenlm.eval import evaluator

    assert evaluator.Scorer is Scorer and evaluator.evaluate is evaluate and evaluator.EvalResult is EvalResult


def test_evaluate_bad_inputs_fail_before_work(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(FrankenError, match="valid tasks"):
        evaluate(model, tok, ["copa", "nope"], progress=False)
    with pytest.raises(FrankenError, match="limit"):
        evaluate(model, tok, ["copa"], limit=0, progress=False)
    with pytest.raises(FrankenError, match="split"):
        evaluate(model, tok, ["copa"], split="dev", progress=False)
