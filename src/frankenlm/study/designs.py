"""Study designs: named, parameterised generators of layer plans, held in one registry (`DESIGNS`).

Each design yields `Candidate`s — a plan plus the design parameters the report plots against (block bounds,
layer, repeat count, sublayer, scale, branch, the plan a variant was made `of`). Block bounds are inclusive:
block (i, j) repeated once runs layers 0..j, then i..j again, then j+1..N-1 (RYS's pair (i, j+1)).

Three kinds of design:

* static (`repeat-layer`, `repeat-block`, `sublayer`, `custom`, and `damped`/`substep` given explicit `layers`
  or `blocks`): a function of the model's depth, swept together first;
* `search`: the greedy composition (study/search.py), adaptive;
* derived (`damped`/`substep`/`repeat-layer` given ``{"from": DESIGN, "top": k}``): variants of the k best configurations of an
  earlier design of the same study, ranked on the search items; they run after the designs they derive from;
* cross-task (`selected`, ``{"from_task": TASK, "top": k}``): the k configurations another task of the study
  selected for the model (its held-out-checked top, best first), measured on this task too — does the plan one
  measure picks (bits per byte) win on another (a benchmark)? They run once TASK has run for the model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from frankenlm.errors import FrankenError
from frankenlm.model.plan import (
    LayerPlan,
    LayerRef,
    identity_plan,
    parse_plan,
    repeat_block_plan,
    repeat_layer_plan,
)


@dataclass(frozen=True)
class Candidate:
    """One configuration a study measures: a plan, the design that proposed it, and that design's parameters."""

    plan: LayerPlan
    design: str
    params: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        """The plan's canonical text (what store keys and the manifest use)."""
        return str(self.plan)

    def manifest_entry(self) -> dict:
        return {"plan": self.text, "design": self.design, **self.params}


def base_candidate(depth: int) -> Candidate:
    """The base model itself (identity plan): what every configuration is paired with."""
    return Candidate(identity_plan(depth), "base", {})


base_config = base_candidate  # the old name (study/analysis.py still imports it)


def _int(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FrankenError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _layers(depth: int, every: int = 1, layers: list[int] | None = None) -> list[int]:
    if layers is not None:
        if not isinstance(layers, list) or not layers:
            raise FrankenError(f"layers must be a non-empty list of layer indices, got {layers!r}")
        for k in layers:
            _int(k, "a layer index", 0)
        bad = [k for k in layers if not 0 <= k < depth]
        if bad:
            raise FrankenError(f"layer {bad[0]} is out of range: the model has layers 0..{depth - 1}")
        return list(layers)
    _int(every, "the layer stride 'every'", 1)
    return list(range(0, depth, every))


def _blocks(depth: int, blocks) -> list[tuple[int, int]]:
    if not isinstance(blocks, list) or not blocks:
        raise FrankenError(f"blocks must be a non-empty list of [i, j] pairs, got {blocks!r}")
    out = []
    for b in blocks:
        if not (isinstance(b, (list, tuple)) and len(b) == 2):
            raise FrankenError(f"block {b!r} must be a pair [i, j] (inclusive layer bounds)")
        i, j = (_int(x, "a block bound", 0) for x in b)
        if not i <= j < depth:
            raise FrankenError(f"block [{i}, {j}] is out of range: need i <= j <= {depth - 1}")
        out.append((i, j))
    return out


# ------------------------------------------------------------------------------------------- static designs


def repeat_layer(
    depth: int,
    max_repeats: int = 3,
    every: int = 1,
    layers: list[int] | None = None,
    parents: list[Candidate] | None = None,
) -> list[Candidate]:
    """Each layer (or every k-th) repeated r = 1..R extra times: the diminishing-returns curve. Derived
    (``{"from": DESIGN, "top": k}``): the layers the k best configurations of DESIGN repeat, e.g. r up to 6 for
    the best layers of a first r <= 3 scan."""
    _int(max_repeats, "max_repeats", 1)
    if parents is not None:
        chosen = [k for p in parents for k in (_repeated_layers(p.plan) or [])]
        if not chosen:
            return []
        layers = list(dict.fromkeys(chosen))
        every = 1
    return [
        Candidate(repeat_layer_plan(k, depth, extra=r), "repeat-layer", {"layer": k, "repeats": r, "sublayer": "block"})
        for k in _layers(depth, every, layers)
        for r in range(1, max_repeats + 1)
    ]


def repeat_block(depth: int, stride: int = 1, max_len: int | None = None, min_len: int = 1) -> list[Candidate]:
    """Contiguous blocks (i, j), i <= j, repeated once; stride 1 gives the full depth*(depth+1)/2 scan."""
    _int(stride, "the block stride", 1)
    _int(min_len, "min_len", 1)
    if max_len is not None:
        _int(max_len, "max_len", 1)
    out = []
    for i in range(0, depth, stride):
        for j in range(i + min_len - 1, depth, stride):
            if max_len is not None and j - i + 1 > max_len:
                break
            out.append(Candidate(repeat_block_plan(i, j, depth), "repeat-block", {"i": i, "j": j, "repeats": 1}))
    return out


def sublayer(depth: int, every: int = 1, layers: list[int] | None = None) -> list[Candidate]:
    """Attention-only vs MLP-only vs whole-block single repeats of each layer."""
    return [
        Candidate(
            repeat_layer_plan(k, depth, extra=1, sublayer=s), "sublayer", {"layer": k, "repeats": 1, "sublayer": s}
        )
        for k in _layers(depth, every, layers)
        for s in ("block", "attn", "mlp")
    ]


def custom(depth: int, path: str) -> list[Candidate]:
    """A file of plans, one per line (blank lines and # comments ignored)."""
    if not isinstance(path, str):
        raise FrankenError(f"custom design: path must be a file name, got {path!r}")
    p = Path(path)
    if not p.is_file():
        raise FrankenError(f"plan file {path!r} does not exist")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            plan = parse_plan(line)
            plan.validate({None: depth})
        except FrankenError as e:
            raise FrankenError(f"{path}:{n}: {e}") from None
        out.append(Candidate(plan, "custom", {}))
    if not out:
        raise FrankenError(f"plan file {path!r} holds no plans")
    return out


# ------------------------------------------------------------------------------ healed repeats: damped, substep

DAMPED_SCALES = (0.25, 0.5, 0.75, 1.0)
BRANCHES = ("both", "attn", "mlp")
MERGEKIT_MLP = math.sqrt(0.5)  # down_proj x sqrt(1/2) on each duplicate
MERGEKIT_QK = 0.5  # q_proj and k_proj x sqrt(1/2) each: attention logits x 1/2, on the first duplicate
SUBSTEPS = (2, 3, 4)


def _duplicates(plan: LayerPlan) -> list[int]:
    """Positions that repeat a (source, layer) already run earlier in the plan: the repeated copies."""
    seen: set = set()
    out = []
    for pos, r in enumerate(plan.refs):
        if (r.source, r.layer) in seen:
            out.append(pos)
        seen.add((r.source, r.layer))
    return out


def _explicit_parents(depth: int, layers, blocks) -> list[Candidate]:
    if (layers is None) == (blocks is None):
        raise FrankenError("give exactly one of layers, blocks, or from (with top)")
    if layers is not None:
        return [
            Candidate(repeat_layer_plan(k, depth), "repeat-layer", {"layer": k, "repeats": 1})
            for k in _layers(depth, layers=layers)
        ]
    return [
        Candidate(repeat_block_plan(i, j, depth), "repeat-block", {"i": i, "j": j, "repeats": 1})
        for i, j in _blocks(depth, blocks)
    ]


def _where(parent: Candidate) -> dict:
    """The layer/block coordinates a variant inherits from the configuration it varies."""
    return {k: parent.params[k] for k in ("layer", "i", "j", "repeats", "layers") if k in parent.params}


def damp(parent: Candidate, scale: float, branch: str) -> Candidate:
    """`parent` with its repeated copies' branch outputs scaled by `scale` (branch both | attn | mlp), or with
    the `mergekit` healing (MLP x sqrt(1/2) on every repeated copy, attention logits x 1/2 on the first copy of
    each repeated layer)."""
    refs = list(parent.plan.refs)
    dups = _duplicates(parent.plan)
    if not dups:
        raise FrankenError(f"plan {parent.text!r} repeats no layer: damped needs repeated copies to scale")
    firsts: set = set()
    for pos in dups:
        r = refs[pos]
        if branch == "mergekit":
            first = (r.source, r.layer) not in firsts
            firsts.add((r.source, r.layer))
            refs[pos] = replace(r, mlp_scale=MERGEKIT_MLP, **({"qk_scale": MERGEKIT_QK} if first else {}))
        elif branch == "both":
            refs[pos] = replace(r, attn_scale=scale, mlp_scale=scale)
        elif branch == "attn":
            refs[pos] = replace(r, attn_scale=scale)
        else:
            refs[pos] = replace(r, mlp_scale=scale)
    params = {**_where(parent), "scale": scale, "branch": branch, "of": parent.text}
    if branch == "mergekit":
        params["qk_scale"] = MERGEKIT_QK
    return Candidate(LayerPlan(tuple(refs)), "damped", params)


def damped(
    depth: int,
    layers: list[int] | None = None,
    blocks: list | None = None,
    scales: list[float] | None = None,
    branches: list[str] | None = None,
    mergekit: bool = True,
    parents: list[Candidate] | None = None,
) -> list[Candidate]:
    """Repeats with their repeated copies scaled: for each layer / block (one extra copy) or each parent
    configuration, every scale of the grid (default 0.25, 0.5, 0.75, 1.0) on the whole block, the attention
    branch only and the MLP branch only, plus (unless `mergekit` is false) the mergekit healing preset."""
    scales = list(DAMPED_SCALES if scales is None else scales)
    branches = list(BRANCHES if branches is None else branches)
    if not scales or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s >= 0 for s in scales
    ):
        raise FrankenError(f"damped: scales must be a non-empty list of finite numbers >= 0, got {scales!r}")
    bad = [b for b in branches if b not in BRANCHES]
    if bad or not branches:
        raise FrankenError(f"damped: branch {bad[0] if bad else branches!r} is not one of {', '.join(BRANCHES)}")
    if not isinstance(mergekit, bool):
        raise FrankenError(f"damped: mergekit must be true or false, got {mergekit!r}")
    out = []
    for p in parents if parents is not None else _explicit_parents(depth, layers, blocks):
        out.extend(damp(p, float(s), b) for b in branches for s in scales)
        if mergekit:
            out.append(damp(p, MERGEKIT_MLP, "mergekit"))
    return dedupe(out)


def _repeated_layers(plan: LayerPlan) -> list[int]:
    """Default-source layers a plan runs more than once, in order."""
    dup = {plan.refs[p].layer for p in _duplicates(plan) if plan.refs[p].source is None}
    return sorted(dup)


def substep_plan(depth: int, layers: list[int], n: int) -> LayerPlan:
    """The base plan with each of `layers` replaced by n sub-steps (`k~n`: n copies, both branches x 1/n)."""
    refs: list[LayerRef] = []
    for r in identity_plan(depth).refs:
        if r.layer in layers:
            refs.extend([replace(r, attn_scale=1 / n, mlp_scale=1 / n)] * n)
        else:
            refs.append(r)
    return LayerPlan(tuple(refs))


def substep(
    depth: int,
    layers: list[int] | None = None,
    blocks: list | None = None,
    substeps: list[int] | None = None,
    parents: list[Candidate] | None = None,
) -> list[Candidate]:
    """Sub-stepped layers: layer k replaced by n applications at 1/n each (`k~n`, n = 2, 3, 4 by default), for
    each given layer, each layer of a given block, or the layers a parent configuration repeats."""
    ns = list(SUBSTEPS if substeps is None else substeps)
    if not ns:
        raise FrankenError("substep: substeps must list at least one n >= 2")
    for n in ns:
        _int(n, "substep: a sub-step count", 2)
    out = []
    if parents is not None:
        where = []
        for p in parents:
            lay = _repeated_layers(p.plan)
            if lay:
                where.append((lay, {**_where(p), "of": p.text}))
    elif layers is not None and blocks is None:
        where = [([k], {"layer": k}) for k in _layers(depth, layers=layers)]
    elif blocks is not None and layers is None:
        where = [(list(range(i, j + 1)), {"i": i, "j": j}) for i, j in _blocks(depth, blocks)]
    else:
        raise FrankenError("substep: give exactly one of layers, blocks, or from (with top)")
    for lay, params in where:
        out.extend(Candidate(substep_plan(depth, lay, n), "substep", {**params, "substeps": n}) for n in ns)
    return dedupe(out)


def selected(depth: int, from_task: str, parents: list[Candidate] | None = None) -> list[Candidate]:
    """The configurations `from_task` selected for the model (`parents`, best first; the runner passes them once
    that task has run, none before), as they are: rank k is the k-th best on `from_task`'s search items."""
    return dedupe(
        [Candidate(p.plan, "selected", {"from_task": from_task, "rank": k}) for k, p in enumerate(parents or [], 1)]
    )


# ------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Design:
    """A registered design: how to build its candidates and which arguments it takes."""

    name: str
    build: Callable[..., list[Candidate]] | None  # (depth, **args) -> candidates; None for `search`
    args: tuple[str, ...]  # argument names a spec may give
    derivable: bool = False  # accepts {"from": DESIGN, "top": k}: variants of an earlier design's best
    cross_task: bool = False  # takes {"from_task": TASK, "top": k}: another task's selection

    def is_static(self, args: dict) -> bool:
        return self.build is not None and "from" not in args and not self.cross_task


def _arg_names(fn) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(fn).parameters if p not in ("depth", "parents"))


SEARCH_ARGS = ("signal", "candidates", "steps")
SIGNALS = ("block_influence", "angular_distance")
FRACTION_ARGS = {"fraction_every": "every", "fraction_stride": "stride"}  # sizes preset: normalised positions

DESIGNS: dict[str, Design] = {
    d.name: d
    for d in (
        Design(
            "repeat-layer", repeat_layer, _arg_names(repeat_layer) + ("fraction_every", "from", "top"), derivable=True
        ),
        Design("repeat-block", repeat_block, _arg_names(repeat_block) + ("fraction_stride",)),
        Design("sublayer", sublayer, _arg_names(sublayer) + ("fraction_every",)),
        Design("custom", custom, _arg_names(custom)),
        Design("search", None, SEARCH_ARGS),
        Design("damped", damped, _arg_names(damped) + ("from", "top"), derivable=True),
        Design("substep", substep, _arg_names(substep) + ("from", "top"), derivable=True),
        Design("selected", selected, ("from_task", "top"), cross_task=True),
    )
}


def get_design(name: str) -> Design:
    if not isinstance(name, str) or name not in DESIGNS:
        raise FrankenError(f"unknown design {name!r}: use {', '.join(DESIGNS)}")
    return DESIGNS[name]


def check_args(name: str, args: dict, earlier: list[str]) -> None:
    """Depth-free checks of a design's arguments (names, `from`/`top`, search settings); `earlier` names the
    designs listed before it in the spec."""
    d = get_design(name)
    if not isinstance(args, dict):
        raise FrankenError(f"design {name}: args must be an object, got {args!r}")
    unknown = [a for a in args if a not in d.args]
    if unknown:
        raise FrankenError(f"design {name}: unknown argument {unknown[0]!r}: use {', '.join(d.args)}")
    for a in FRACTION_ARGS:
        if a in args:
            f = args[a]
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
                raise FrankenError(f"design {name}: {a} must be a fraction of the depth in (0, 1], got {f!r}")
    if name == "search":
        if args.get("signal", "block_influence") not in SIGNALS:
            raise FrankenError(f"design search: signal {args['signal']!r} is not one of {', '.join(SIGNALS)}")
        _int(args.get("candidates", 6), "design search: candidates", 1)
        _int(args.get("steps", 3), "design search: steps", 1)
    if d.cross_task:
        if not isinstance(args.get("from_task"), str) or not args["from_task"]:
            raise FrankenError(f"design {name}: from_task must name a task of the study, got {args.get('from_task')!r}")
        _int(args.get("top", 3), f"design {name}: top", 1)
    elif "top" in args and "from" not in args:
        raise FrankenError(f"design {name}: top needs from (the design whose best configurations it varies)")
    if "from" in args:
        src = args["from"]
        if src not in earlier:
            listed = ", ".join(earlier) or "none"
            raise FrankenError(f"design {name}: from {src!r} must name a design listed before it (listed: {listed})")
        if any(a in args for a in ("layers", "blocks")):
            raise FrankenError(f"design {name}: give from (with top) or layers/blocks, not both")
        _int(args.get("top", 3), f"design {name}: top", 1)


def build(name: str, args: dict, depth: int, parents: list[Candidate] | None = None) -> list[Candidate]:
    """The candidates of one design for a model of `depth` layers (`parents` for a derived design)."""
    d = get_design(name)
    a = {k: v for k, v in args.items() if k not in ("from", "top")}  # (a cross-task design keeps from_task)
    for frac, arg in FRACTION_ARGS.items():
        if frac in a:
            a[arg] = max(1, round(depth * a.pop(frac)))
    try:
        return d.build(depth, **a, **({"parents": parents} if parents is not None else {}))
    except TypeError as e:  # a value of the wrong type deep inside a generator
        raise FrankenError(f"design {name}: bad arguments {args}: {e}") from None


def dedupe(candidates: list[Candidate], known: set[str] | None = None) -> list[Candidate]:
    """Drop candidates whose plan already appeared (earlier in the list, or in `known`): e.g. a sublayer
    'block' repeat equals repeat-layer r=1."""
    seen: set[str] = set(known or ())
    out = []
    for c in candidates:
        if c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out
