"""What a study will cost and what it can detect, before it runs (`frankenlm study --dry-run`).

Per model and task: the items chosen (search / held-out), the tokens one configuration runs over the search
items in the spec's scoring mode (fast: packed contexts, `frankenlm.eval.packing`), the number of configurations
(static designs exactly; derived designs and the greedy search as upper bounds), and the base model's measured
forward speed on this machine in each dtype the tasks are scored in (a task may name its own). Two totals bound
the sweep's cost: every configuration on the full search budget (no racing), and racing at its best (only the
base and the protected top k run the full budget, every other configuration stops at the first look). The
held-out re-measure and the fp32 re-check are added to both.

Detectable effect (benchmarks scored by accuracy): the smallest paired accuracy difference a two-sided test at
level alpha finds with the given power on n items, for a discordance rate d (the fraction of items on which the
configuration and the base disagree; a difference delta needs d >= |delta|):
``mde = (z_{1-alpha/2} + z_power) * sqrt(d / n)`` (the normal approximation of McNemar's test). It is given on the
search items at alpha = 0.05 and Bonferroni-corrected over the study's configurations (Holm is no weaker), and on
the held-out items at alpha = 0.05 (one confirmation per re-measured configuration).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from frankenlm.eval.packing import make_packs
from frankenlm.eval.scorer import Scorer
from frankenlm.eval.tasks.requests import LoglikelihoodRequest, RollingRequest
from frankenlm.model.loading import LoadedModel
from frankenlm.model.plan import repeat_layer_plan
from frankenlm.study import designs
from frankenlm.study.items import select_items
from frankenlm.study.spec import StudySpec

DISCORDANCE = (0.10, 0.20)  # typical shares of items a layer change flips, either way


def mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest detectable paired accuracy difference (normal approximation of McNemar's test)."""
    from scipy.stats import norm

    if n <= 0:
        return math.nan
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * math.sqrt(discordance / n))


def config_counts(spec: StudySpec, depth: int, task: str | None = None) -> tuple[int, int]:
    """(configurations of the static designs, upper bound of the adaptive ones) for a model of `depth` layers,
    on `task` if given (a design may run on some tasks only)."""
    from frankenlm.study.runner import study_candidates

    static = len(study_candidates(spec, depth, task))
    adaptive = 0
    probe = [designs.Candidate(repeat_layer_plan(0, depth), "repeat-layer", {"layer": 0, "repeats": 1})]
    for d in spec.designs:
        if task is not None and not d.runs_on(task):
            continue
        if d.name == "search":
            adaptive += int(d.args.get("candidates", 6)) * int(d.args.get("steps", 3))
        elif designs.get_design(d.name).derivable and "from" in d.args:
            per_parent = len(designs.build(d.name, d.args, depth, parents=probe))
            adaptive += per_parent * int(d.args.get("top", 3))
        elif designs.get_design(d.name).cross_task:
            adaptive += int(d.args.get("top", 3))
    return static, adaptive


def run_tokens(scorer: Scorer, docs, fast: bool) -> int:
    """Tokens the model runs to score `docs` once (fast: packs; lm-eval: one row per request)."""
    pairs = []
    for d in docs:
        for r in d.requests:
            if isinstance(r, LoglikelihoodRequest):
                pairs.append(scorer.encode_pair(r.context, r.continuation))
            elif isinstance(r, RollingRequest):
                pairs.extend(scorer.rolling_pairs(scorer.encode(r.text)))
            else:  # generation: the context once, plus the new tokens (bounded by max_new_tokens)
                pairs.append((scorer.encode(r.context), [0] * int(getattr(r, "max_new_tokens", 1))))
    if fast:
        return sum(len(p) for p in make_packs(pairs, scorer.max_length))
    return sum(min(len(c) + len(t) - 1, scorer.max_length) for c, t in pairs)


def tokens_per_second(lm: LoadedModel, context: int, seconds: float = 3.0) -> float:
    """The base model's forward speed (tokens/s) on 4 rows of `min(context, 512)` tokens, best of a few runs."""
    n = min(context, 512)
    ids = torch.randint(100, 1000, (4, n), device=lm.model.get_input_embeddings().weight.device)
    best, spent = math.inf, 0.0
    with torch.inference_mode():
        lm.model(input_ids=ids, use_cache=False)
        while spent < seconds:
            t0 = time.perf_counter()
            lm.model(input_ids=ids, use_cache=False)
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
    return ids.numel() / best


@dataclass
class TaskCost:
    task: str
    search_items: int
    heldout_items: int
    tokens_per_config: int  # search items, one configuration
    heldout_tokens: int
    accuracy: bool  # ranked by an accuracy (a detectable-effect estimate applies)
    dtype: str = "bfloat16"  # the dtype the task is scored in
    configs: int = 0  # configurations on this task (static + the adaptive upper bound)


@dataclass
class ModelCost:
    model: str
    depth: int
    static_configs: int
    adaptive_configs: int  # upper bound
    tokens_per_s: dict[str, float]  # the base model's forward speed per dtype
    tasks: list[TaskCost]

    @property
    def configs(self) -> int:
        return self.static_configs + self.adaptive_configs

    def task_tokens(self, spec: StudySpec, t: TaskCost, racing: bool) -> float:
        """Tokens of one task (racing at its best, or none), at its dtype's speed: an fp32 re-check of a task
        in a lower precision counts 3x (fp32 runs about 3x slower)."""
        full = spec.heldout_top_k + 1 if racing else t.configs + 1
        rest = max(0, t.configs - spec.heldout_top_k) if racing else 0
        total = t.tokens_per_config * (full + rest / spec.slices) + t.heldout_tokens * (spec.heldout_top_k + 1)
        if t.dtype != "float32":
            total += 3.0 * t.tokens_per_config * (spec.fp32_top_k + 1)
        return total

    def tokens(self, spec: StudySpec, racing: bool) -> float:
        """Tokens of the whole study for this model (racing at its best, or none)."""
        return sum(self.task_tokens(spec, t, racing) for t in self.tasks)

    def hours(self, spec: StudySpec, racing: bool) -> float:
        return sum(self.task_tokens(spec, t, racing) / self.tokens_per_s[t.dtype] for t in self.tasks) / 3600


def size_model(spec: StudySpec, lm: LoadedModel, measure: bool = True, load=None) -> ModelCost:
    """The cost of `spec` for one loaded model; `load(dtype)` gives the model in another dtype a task is scored
    in (its speed is measured too)."""
    scorer = Scorer(lm.model, lm.tokenizer, max_length=spec.context_length, scoring=spec.scoring)
    fast = spec.scoring == "fast"
    tasks = []
    for budget in spec.tasks:
        items = select_items(budget, lm.tokenizer, spec.slices, spec.seed)
        tasks.append(
            TaskCost(
                budget.name,
                len(items.search),
                len(items.heldout),
                run_tokens(scorer, items.search, fast),
                run_tokens(scorer, items.heldout, fast),
                items.primary in ("acc", "acc_norm", "exact_match"),
                spec.task_dtype(budget.name),
                sum(config_counts(spec, lm.depth, budget.name)),
            )
        )
    static, adaptive = config_counts(spec, lm.depth)
    speed = {}
    for dtype in dict.fromkeys([spec.dtype, *(t.dtype for t in tasks)]):
        if not measure:
            speed[dtype] = math.nan
        else:  # without `load`, lm's speed stands for every dtype
            speed[dtype] = tokens_per_second(
                lm if dtype == spec.dtype or load is None else load(dtype), spec.context_length
            )
    return ModelCost(lm.name, lm.depth, static, adaptive, speed, tasks)


def report_lines(spec: StudySpec, costs: list[ModelCost]) -> list[str]:
    """A plain-text account of the costs and the detectable effects (what `--dry-run` prints)."""
    out = []
    for c in costs:
        out.append(
            f"{c.model} ({c.depth} layers): {c.static_configs} static configurations + up to {c.adaptive_configs} "
            f"adaptive; base forward "
            + ", ".join(f"{v:,.0f} tokens/s ({d})" for d, v in c.tokens_per_s.items())
            + " on this machine"
        )
        for t in c.tasks:
            m = t.configs
            line = (
                f"  {t.task}: {t.search_items} search / {t.heldout_items} held-out items, {m} configurations, "
                f"{t.tokens_per_config:,} tokens per configuration ({spec.scoring} scoring, {t.dtype})"
            )
            if t.accuracy:
                parts = []
                for d in DISCORDANCE:
                    parts.append(
                        f"d={d:.2f}: search {100 * mde(t.search_items, d):.1f} pts "
                        f"({100 * mde(t.search_items, d, alpha=0.05 / max(m, 1)):.1f} Bonferroni over {m}), "
                        f"held-out {100 * mde(t.heldout_items, d):.1f} pts"
                    )
                line += "; detectable at 80% power: " + "; ".join(parts)
            out.append(line)
        full, best = c.tokens(spec, racing=False), c.tokens(spec, racing=True)
        out.append(
            f"  total: {full / 1e6:,.1f}M tokens ({c.hours(spec, False):,.1f} h) without racing; "
            f"{best / 1e6:,.1f}M tokens ({c.hours(spec, True):,.1f} h) if racing stops every non-leader at "
            f"the first look (1/{spec.slices} of the search items)"
        )
    return out
