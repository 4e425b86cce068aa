"""The lm-eval model type `frankenlm`: lm-eval's own request path over a frankenmodel gives frankenlm's
evaluator's numbers, and the plan reaches the model."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from frankenlm.eval.lmeval import FrankenLM  # noqa: E402
from frankenlm.eval.scorer import Scorer  # noqa: E402
from frankenlm.model.frankenmodel import build_frankenmodel  # noqa: E402
from frankenlm.model.loading import load_model  # noqa: E402


@pytest.mark.slow
def test_registered_model_scores_a_frankenmodel_like_the_evaluator():
    assert get_model("frankenlm") is FrankenLM
    lm = get_model("frankenlm").create_from_arg_string("model=smollm2-135m,plan=0..20;10..29,batch_size=2")
    assert lm.frankenlm_plan == "0..20,10..29"
    assert lm.model.config.num_hidden_layers == 41
    pairs = [("The capital of France is", " Paris"), ("One, two, three,", " four"), ("Water boils at", " 100 degrees")]
    reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    theirs = [x[0] for x in lm.loglikelihood(reqs)]
    base = load_model("smollm2-135m")
    ours = Scorer(build_frankenmodel(base.model, "0..20,10..29"), base.tokenizer).loglikelihood(pairs)
    base_scores = Scorer(base.model, base.tokenizer).loglikelihood(pairs)
    for t, (o, _), (b, _) in zip(theirs, ours, base_scores):
        assert abs(t - o) <= 1e-4
        assert abs(t - b) > 1e-3  # the plan really changed the model
