"""The typed results schema: one frozen `ResultRow` per (model, configuration, task), the one writer of
``results.csv`` and the one reader of ``results.csv`` + ``study.json`` — the contract between the analysis
(which builds rows from the store) and the report (which only renders them).

Every verdict is defined here, once, as a function of a row's stored numbers, and set when the row is built
(`__post_init__`): the analysis builds rows through it and the reader rebuilds the same rows from the files,
so the two cannot disagree (tests check `read_results(...) == analysis rows`). Gains are signed so that
positive = better than the base, in the metric's own units.

Verdicts (ALPHA = 0.05, Holm across one model's configurations on one task, applied by the analysis):
  better     Holm-significant, gain > 0 and the search CI's low end > 0
  worse      Holm-significant, gain < 0 and the search CI's high end < 0
  remeasured has a held-out gain
  confirmed  better, and the held-out gain and its CI's low end > 0 (the pre-registered rule: both stages)
  heldout_better  the held-out gain > 0, its CI's low end > 0 and its p-value Holm-adjusted across the task's
             re-measured configurations (the confirmatory family) < ALPHA, whatever the search verdict: the
             select-on-search, test-on-held-out reading, which `confirmed` tightens with the search-stage test
  fp32_agrees  None when not re-checked in fp32; else whether the fp32 gain lies inside the search CI
A `Group` (one model × task) holds the search ranking (full-budget rows by gain, ties by plan text), the
winner's-curse shrinkage, the quality-vs-cost Pareto front and the rows by design shape. Shapes come from the
design parameters, never from rebuilding plans: a single-layer repeat (layer k, r extra copies) is also the
block (k, k) repeated r times, so the sweep's deduplicated plans are found under every design they belong to.

Imports nothing but ``errors`` and (lazily, for plans of designs without layer parameters) ``model.plan``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from frankenlm.errors import FrankenError

__all__ = [
    "ALPHA",
    "RESULT_COLUMNS",
    "ResultRow",
    "Group",
    "StudyResults",
    "write_csv",
    "read_csv",
    "read_results",
    "groups",
    "PLAIN_DESIGNS",
]

ALPHA = 0.05
RESULT_COLUMNS = [
    "model",
    "depth",
    "config",
    "design",
    "i",
    "j",
    "layer",
    "repeats",
    "sublayer",
    "task",
    "metric",
    "higher_is_better",
    "base_value",
    "value",
    "gain",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "p_bh",
    "significant",
    "n_items",
    "n_tokens",
    "stopped_early",
    "heldout_gain",
    "heldout_ci_low",
    "heldout_ci_high",
    "heldout_p",
    "heldout_p_holm",
    "fp32_gain",
    "extra_flops_per_token",
    "flops_ratio",
    "effective_params",
    "kv_bytes_per_token",
    "export_command",
]
# designs whose parameters (layer / i, j / repeats / sublayer) fully describe an unscaled repeat
PLAIN_DESIGNS = ("repeat-block", "repeat-layer", "sublayer", "search")
_INT_COLS = ("depth", "i", "j", "layer", "repeats", "n_items", "n_tokens")
_BOOL_COLS = ("higher_is_better", "significant", "stopped_early")
_STR_COLS = ("model", "config", "design", "sublayer", "task", "metric", "export_command")
NAN = math.nan


def slug(s: str) -> str:
    """`s` as a file name: every run of characters other than letters, digits, '.', '_' and '-' becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def fin(*xs: Any) -> bool:
    """All of xs are finite numbers."""
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


def _number(v: Any) -> float:
    """A stored number as int or float (ints stay ints so the CSV keeps '23040', not '23040.0'); NaN if none."""
    if v is None or v == "":
        return NAN
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if hasattr(v, "item"):  # numpy scalar
        return _number(v.item())
    if isinstance(v, float):
        return v
    s = str(v).strip()
    if not s:
        return NAN
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        raise FrankenError(f"results: {v!r} is not a number") from None


def _int(v: Any) -> int | None:
    x = _number(v)
    return int(round(x)) if fin(x) else None


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "1.0", "true", "yes")
    return bool(v) and not (isinstance(v, float) and math.isnan(v))


@dataclass(frozen=True)
class ResultRow:
    """One results.csv row (the columns, in order) plus `params` (the design's parameters, from study.json)
    and the derived verdicts and shape keys (not stored; computed from the columns when the row is built)."""

    model: str
    depth: int | None
    config: str
    design: str
    i: int | None = None
    j: int | None = None
    layer: int | None = None
    repeats: int | None = None
    sublayer: str = "block"
    task: str = ""
    metric: str = ""
    higher_is_better: bool = False
    base_value: float = NAN
    value: float = NAN
    gain: float = NAN
    ci_low: float = NAN
    ci_high: float = NAN
    p_value: float = NAN
    p_holm: float = NAN
    p_bh: float = NAN
    significant: bool = False
    n_items: int | None = None
    n_tokens: int | None = None
    stopped_early: bool = False
    heldout_gain: float = NAN
    heldout_ci_low: float = NAN
    heldout_ci_high: float = NAN
    heldout_p: float = NAN
    heldout_p_holm: float = NAN
    fp32_gain: float = NAN
    extra_flops_per_token: float = NAN
    flops_ratio: float = NAN
    effective_params: float = NAN
    kv_bytes_per_token: float = NAN
    export_command: str = ""
    params: dict = field(default_factory=dict, hash=False)
    # ---- derived once, in __post_init__
    better: bool = field(init=False)
    worse: bool = field(init=False)
    remeasured: bool = field(init=False)
    confirmed: bool = field(init=False)
    heldout_better: bool = field(init=False)
    fp32_agrees: bool | None = field(init=False)
    extra_flops_pct: float = field(init=False)
    repeated_layers: tuple[int, ...] = field(init=False)
    block_key: tuple[int, int] | None = field(init=False)  # (i, j): block i..j run twice
    layer_key: tuple[int, int] | None = field(init=False)  # (layer, r): one layer with r extra copies
    sub_key: tuple[int, str] | None = field(init=False)  # (layer, 'attn' | 'mlp' | 'block'): repeated once

    def __post_init__(self) -> None:
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        better = self.significant and fin(self.gain, self.ci_low) and self.gain > 0 and self.ci_low > 0
        s("better", bool(better))
        s("worse", bool(self.significant and fin(self.gain, self.ci_high) and self.gain < 0 and self.ci_high < 0))
        s("remeasured", fin(self.heldout_gain))
        s(
            "confirmed",
            bool(
                better
                and fin(self.heldout_gain, self.heldout_ci_low)
                and self.heldout_gain > 0
                and self.heldout_ci_low > 0
            ),
        )
        s(
            "heldout_better",
            bool(
                fin(self.heldout_p_holm, self.heldout_gain, self.heldout_ci_low)
                and self.heldout_p_holm < ALPHA
                and self.heldout_gain > 0
                and self.heldout_ci_low > 0
            ),
        )
        s(
            "fp32_agrees",
            None
            if not fin(self.fp32_gain)
            else bool(fin(self.ci_low, self.ci_high) and self.ci_low <= self.fp32_gain <= self.ci_high),
        )
        s("extra_flops_pct", 100.0 * (self.flops_ratio - 1.0) if fin(self.flops_ratio) else NAN)
        s("repeated_layers", self._repeated_layers())
        s("block_key", None)
        s("layer_key", None)
        s("sub_key", None)
        if self.design not in PLAIN_DESIGNS:
            return
        reps = self.repeats or 1
        if self.design == "repeat-block" and self.i is not None and self.j is not None:
            if reps == 1:
                s("block_key", (self.i, self.j))
            if self.i == self.j:
                s("layer_key", (self.i, reps))
        elif self.layer is not None and self.i is None and self.j is None:
            if self.sublayer == "block":
                s("layer_key", (self.layer, reps))
                if reps == 1:
                    s("block_key", (self.layer, self.layer))
            elif reps == 1:
                s("sub_key", (self.layer, self.sublayer))
        if self.layer_key is not None and self.layer_key[1] == 1 and self.sub_key is None:
            s("sub_key", (self.layer_key[0], "block"))

    def _repeated_layers(self) -> tuple[int, ...]:
        """The layers run more than once: from the design parameters (i..j, layer, layers), else the plan."""
        p = self.params or {}
        i, j = (self.i, self.j) if self.i is not None else (p.get("i"), p.get("j"))
        if isinstance(i, int) and isinstance(j, int):
            return tuple(range(i, j + 1))
        layer = self.layer if self.layer is not None else p.get("layer")
        if isinstance(layer, int):
            return (layer,)
        if isinstance(p.get("layers"), list) and all(isinstance(k, int) for k in p["layers"]):
            return tuple(sorted(set(p["layers"])))
        if self.design == "base":
            return ()
        try:
            from frankenlm.model.plan import parse_plan

            counts = Counter(ref.layer for ref in parse_plan(self.config))
        except Exception:  # noqa: BLE001 - an unparsable plan text simply names no layers
            return ()
        return tuple(sorted(k for k, n in counts.items() if n > 1))

    @property
    def centre(self) -> float:
        """Centre of the repeated layers (layer units), NaN when none."""
        ks = self.repeated_layers
        return (min(ks) + max(ks)) / 2.0 if ks else NAN

    @property
    def is_base(self) -> bool:
        return self.design == "base"

    # ------------------------------------------------------------------------------------------ storage

    @classmethod
    def from_record(cls, rec: dict, params: dict | None = None) -> ResultRow:
        """A row from a column -> value mapping (the analysis's dict, or a csv.DictReader row)."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if not f.init or f.name == "params" or f.name not in rec:
                continue
            v = rec[f.name]
            if f.name in _INT_COLS:
                kw[f.name] = _int(v)
            elif f.name in _BOOL_COLS:
                kw[f.name] = _bool(v)
            elif f.name in _STR_COLS:
                kw[f.name] = "" if v is None else str(v).strip()
            else:
                kw[f.name] = _number(v)
        kw["sublayer"] = (kw.get("sublayer") or "block").lower()
        kw["design"] = kw.get("design") or "custom"
        kw.setdefault("model", "")
        kw.setdefault("depth", None)
        kw.setdefault("config", "")
        if params is None:
            params = {k: kw[k] for k in ("i", "j", "layer", "repeats") if kw.get(k) is not None}
            if kw["design"] in ("repeat-layer", "sublayer"):
                params["sublayer"] = kw["sublayer"]
        return cls(**kw, params=dict(params))

    def csv_record(self) -> dict[str, Any]:
        """The row's results.csv cells: NaN and None as empty cells, flags as 0/1; the base row has no test
        (empty significant)."""
        out: dict[str, Any] = {}
        for c in RESULT_COLUMNS:
            v = getattr(self, c)
            if c == "significant" and self.is_base:
                v = ""
            elif isinstance(v, bool):
                v = int(v)
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                v = ""
            out[c] = v
        return out


def write_csv(rows: list[ResultRow], path: Path) -> Path:
    """Write results.csv: RESULT_COLUMNS, one line per row."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(r.csv_record())
    return path


def read_csv(path: Path, design_params: dict | None = None) -> list[ResultRow]:
    """The rows of a results.csv; `design_params` ({model: {plan: params}}, from study.json) adds each row's
    design parameters (else they are taken from the i/j/layer/repeats/sublayer columns)."""
    path = Path(path)
    if not path.is_file():
        raise FrankenError(f"{path} does not exist: run the study (or its analysis) before writing the report")
    dp = design_params or {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("model", "config", "task", "gain") if c not in (reader.fieldnames or [])]
        if missing:
            raise FrankenError(
                f"{path} is not a frankenlm results table: column(s) {', '.join(missing)} missing "
                f"(expected {', '.join(RESULT_COLUMNS)})"
            )
        rows = []
        for d in reader:
            model, config = (d.get("model") or "").strip(), (d.get("config") or "").strip()
            rows.append(ResultRow.from_record(d, (dp.get(model) or {}).get(config)))
    return [r for r in rows if r.model and r.task]


# ------------------------------------------------------------------------------------------------ groups


@dataclass
class Group:
    """One model × task on its primary metric: the base row and every configuration's row, with the search
    ranking, the shrinkage, the Pareto front and lookups by design shape."""

    model: str
    task: str
    metric: str
    higher_is_better: bool
    depth: int | None
    base: ResultRow | None
    rows: list[ResultRow]
    # ---- from study.json (None / 0 where it predates them)
    heldout_done: bool | None = None  # the task's held-out check has finished, not merely begun
    heldout_k: int = 0  # how many configurations the held-out check re-measures: its Holm family's size
    # ---- derived from `rows` in __post_init__ (not init fields, so `dataclasses.replace(g, rows=...)` rebuilds them)
    blocks: dict[tuple[int, int], ResultRow] = field(default_factory=dict, init=False)
    layer_reps: dict[tuple[int, int], ResultRow] = field(default_factory=dict, init=False)
    subs: dict[tuple[int, str], ResultRow] = field(default_factory=dict, init=False)
    ranked: list[ResultRow] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # rows of the design a shape belongs to first, then rows of other designs with the same plan
        for key, table, native in (
            ("block_key", self.blocks, "repeat-block"),
            ("layer_key", self.layer_reps, "repeat-layer"),
            ("sub_key", self.subs, "sublayer"),
        ):
            for r in sorted(self.rows, key=lambda r: r.design != native):
                if getattr(r, key) is not None:
                    table.setdefault(getattr(r, key), r)
        ok = [r for r in self.rows if not r.stopped_early and fin(r.gain)]
        self.ranked = sorted(ok, key=lambda r: (-r.gain, r.config))

    def checked(self) -> bool:
        """The held-out check has run: as study.json records it, else (an older one) any row re-measured."""
        return self.heldout_done if self.heldout_done is not None else self.n_remeasured() > 0

    def n_remeasured(self) -> int:
        """The number of configurations re-measured on held-out items so far."""
        return sum(r.remeasured for r in self.rows)

    def heldout_family(self) -> int:
        """The number of held-out tests the Holm adjustment counts: those made, and at least the number the
        protocol makes (`analysis.adjust_pvalues` counts the tests a running check has not made yet as p = 1)."""
        return max(self.n_remeasured(), self.heldout_k)

    def has(self, design: str) -> bool:
        return any(r.design == design for r in self.rows)

    def block_rows(self) -> list[ResultRow]:
        """The rows of the (i, j) block-repeat design with a finite gain (the scan; not the same plans measured
        under another design)."""
        return [
            r for r in self.rows if r.design == "repeat-block" and r.i is not None and r.j is not None and fin(r.gain)
        ]

    def block(self, i: int, j: int) -> ResultRow | None:
        return self.blocks.get((i, j))

    def layer_rep(self, k: int, r: int) -> ResultRow | None:
        return self.layer_reps.get((k, r))

    def sub(self, k: int, s: str) -> ResultRow | None:
        return self.subs.get((k, s))

    def n_layers(self) -> int:
        if self.depth:
            return self.depth
        ks = [x for r in self.rows for x in (r.i, r.j, r.layer) if x is not None]
        return max(ks) + 1 if ks else 0

    def shrinkage(self) -> tuple[int, float, float, float]:
        """Over rows re-measured on held-out items: count, mean search gain, mean held-out gain, mean shrinkage."""
        re_ = [r for r in self.rows if r.remeasured and fin(r.gain)]
        if not re_:
            return 0, NAN, NAN, NAN
        s = sum(r.gain for r in re_) / len(re_)
        h = sum(r.heldout_gain for r in re_) / len(re_)
        return len(re_), s, h, sum(r.gain - r.heldout_gain for r in re_) / len(re_)

    @property
    def cost_in_percent(self) -> bool:
        """Costs are extra FLOPs per token in % of the base (else in GFLOP, when no ratio is known)."""
        return any(fin(r.flops_ratio) for r in self.rows)

    def cost(self, r: ResultRow) -> float:
        if self.cost_in_percent:
            return r.extra_flops_pct
        return r.extra_flops_per_token / 1e9 if fin(r.extra_flops_per_token) else NAN

    def pareto(self) -> list[ResultRow]:
        """Full-budget rows not dominated in (lower cost, higher gain), cheapest first; the base (0, 0) anchors
        the front, so a row is on it only if it beats the base."""
        pts = [(0.0, 0.0, None)] + [
            (self.cost(r), r.gain, r) for r in self.rows if not r.stopped_early and fin(self.cost(r), r.gain)
        ]
        front, best = [], -math.inf
        for _x, y, r in sorted(pts, key=lambda p: (p[0], -p[1])):
            if y > best:
                front.append(r)
                best = y
        return [r for r in front if r is not None]

    def repeat_curves(self) -> tuple[list[int], dict[int, list[tuple[int, ResultRow]]]]:
        """Repeat counts measured, and per repeat-layer layer its (r, row) points with a finite gain."""
        src = [r for r in self.rows if r.design == "repeat-layer" and r.layer is not None]
        counts = sorted({r.repeats or 1 for r in src} | {1})
        curves = {}
        for k in sorted({r.layer for r in src}):
            pts = [(c, row) for c in counts if (row := self.layer_rep(k, c)) is not None and fin(row.gain)]
            if pts:
                curves[k] = pts
        return counts, curves


@dataclass
class StudyResults:
    """What a run directory's results.csv and study.json hold, typed."""

    rows: list[ResultRow]
    study: dict

    def groups(self) -> list[Group]:
        return groups(self.rows, self.study)


def read_results(run_dir: Path) -> StudyResults:
    """Read RUN_DIR/results.csv (required) and RUN_DIR/study.json (optional: {} when missing)."""
    run_dir = Path(run_dir)
    study: dict = {}
    sp = run_dir / "study.json"
    if sp.is_file():
        try:
            study = json.loads(sp.read_text(encoding="utf-8")) or {}
        except json.JSONDecodeError as e:
            raise FrankenError(f"{sp} is not valid JSON ({e})") from None
        if not isinstance(study, dict):
            raise FrankenError(f"{sp} must hold a JSON object")
    return StudyResults(read_csv(run_dir / "results.csv", study.get("design_params")), study)


def groups(rows: list[ResultRow], study: dict) -> list[Group]:
    """One Group per (model, task) in study.json's order (then results order), on the task's primary metric."""
    models = [m for m in study.get("models") or [] if isinstance(m, dict)]
    depths = {m.get("name"): _int(m.get("depth")) for m in models}
    tasks = {t.get("name"): t for t in study.get("tasks") or [] if isinstance(t, dict)}
    order_m = list(dict.fromkeys([*(m.get("name") for m in models), *(r.model for r in rows)]))
    order_t = list(dict.fromkeys([*tasks, *(r.task for r in rows)]))
    checked = study.get("heldout_checked")  # {model: [tasks]}; None in a study.json written before the record
    k = _int(study.get("heldout_top_k")) or 0
    out = []
    for m in order_m:
        for t in order_t:
            rs = [r for r in rows if r.model == m and r.task == t]
            if not rs:
                continue
            info = tasks.get(t) or {}
            metrics = list(dict.fromkeys(r.metric for r in rs))
            metric = info.get("primary_metric") if info.get("primary_metric") in metrics else metrics[0]
            rs = [r for r in rs if r.metric == metric]
            hib = bool(info["higher_is_better"]) if "higher_is_better" in info else rs[0].higher_is_better
            base = next((r for r in rs if r.is_base), None)
            depth = depths.get(m) or next((r.depth for r in rs if r.depth), None)
            done = None if not isinstance(checked, dict) else t in (checked.get(m) or [])
            out.append(Group(m, t, metric, hib, depth, base, [r for r in rs if not r.is_base], done, k))
    return out
