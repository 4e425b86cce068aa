"""Layer plans: the canonical description of a frankenmodel.

A plan is an ordered tuple of `LayerRef`s — (source alias, layer index, sublayer) — one per position of the new
model. Everything else parses into it and formats from it:

* compact text, e.g. ``0..15,10..29`` (inclusive ranges, the meaning of ExLlamaV3's ``layer_map``), ``7*3``
  (layer 7 three times), ``10..12*2`` (the range twice), ``b:4..9`` (layers of source ``b``), ``7.attn``
  (only the attention sublayer of layer 7, with its norm and residual), ``3..5.mlp*2``;
* mergekit ``passthrough`` YAML (``slices`` with ``layer_range: [start, end)``, end exclusive);
* RYS-style ``(i, j)`` pairs: layers ``0..j-1`` then ``i..N-1``.

The source alias ``None`` means the default source (the first model given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import yaml

from frankenlm.errors import FrankenError

SUBLAYERS = ("block", "attn", "mlp")


@dataclass(frozen=True, order=True)
class LayerRef:
    """One position of a frankenmodel: which source's layer, and which part of it runs."""

    layer: int
    source: str | None = None
    sublayer: str = "block"

    def __post_init__(self) -> None:
        if self.sublayer not in SUBLAYERS:
            raise FrankenError(f"sublayer {self.sublayer!r} is not one of {', '.join(SUBLAYERS)}")
        if self.layer < 0:
            raise FrankenError(f"layer index {self.layer} is negative: layers are numbered from 0")


@dataclass(frozen=True)
class LayerPlan:
    """An ordered, immutable list of layer references."""

    refs: tuple[LayerRef, ...]

    def __post_init__(self) -> None:
        if not self.refs:
            raise FrankenError("the layer plan is empty: it must name at least one layer, e.g. '0..29'")

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self):
        return iter(self.refs)

    def __getitem__(self, i):
        return self.refs[i]

    @property
    def sources(self) -> list[str | None]:
        """Source aliases in order of first use."""
        seen: dict[str | None, None] = {}
        for r in self.refs:
            seen.setdefault(r.source, None)
        return list(seen)

    @property
    def has_sublayers(self) -> bool:
        return any(r.sublayer != "block" for r in self.refs)

    def text(self) -> str:
        return format_plan(self)

    def __str__(self) -> str:
        return format_plan(self)

    def common_prefix(self, other: "LayerPlan") -> int:
        """Number of leading positions identical in both plans."""
        n = 0
        for a, b in zip(self.refs, other.refs):
            if a != b:
                break
            n += 1
        return n

    def validate(self, depths: Mapping[str | None, int]) -> None:
        """Check every reference against the depth of its source (`depths[None]` is the default source)."""
        for pos, r in enumerate(self.refs):
            if r.source not in depths:
                known = ", ".join(repr(k) for k in depths if k is not None) or "none besides the default"
                raise FrankenError(
                    f"position {pos} names source {r.source!r}, which was not given (named sources: {known})"
                )
            n = depths[r.source]
            if r.layer >= n:
                who = "the model" if r.source is None else f"source {r.source!r}"
                raise FrankenError(f"layer {r.layer} is out of range: {who} has layers 0..{n - 1}")


def identity_plan(depth: int) -> LayerPlan:
    """The base model itself: layers 0..depth-1 once each."""
    return LayerPlan(tuple(LayerRef(i) for i in range(depth)))


def rys_plan(i: int, j: int, depth: int) -> LayerPlan:
    """RYS-style pair (i, j): run layers 0..j-1, then i..N-1 (layers i..j-1 run twice when i < j)."""
    if not (0 <= i < depth and 0 < j <= depth):
        raise FrankenError(f"RYS pair ({i}, {j}) is out of range for a model with {depth} layers")
    return LayerPlan(tuple(LayerRef(k) for k in [*range(0, j), *range(i, depth)]))


def repeat_block_plan(i: int, j: int, depth: int, times: int = 1) -> LayerPlan:
    """Layers 0..j, then the block i..j `times` more times, then j+1..N-1 (inclusive i, j)."""
    if not (0 <= i <= j < depth):
        raise FrankenError(f"block ({i}, {j}) is out of range for a model with layers 0..{depth - 1}")
    if times < 0:
        raise FrankenError(f"repeat count {times} is negative")
    order = [*range(0, j + 1), *(list(range(i, j + 1)) * times), *range(j + 1, depth)]
    return LayerPlan(tuple(LayerRef(k) for k in order))


def repeat_layer_plan(layer: int, depth: int, extra: int = 1, sublayer: str = "block") -> LayerPlan:
    """Layer `layer` followed by `extra` more copies of it (or of one of its sublayers)."""
    return insert_plan(depth, after=layer, refs=[LayerRef(layer, sublayer=sublayer)] * extra)


def insert_plan(depth: int, after: int, refs: Sequence[LayerRef]) -> LayerPlan:
    """The base model's layers with `refs` inserted after layer `after`."""
    if not 0 <= after < depth:
        raise FrankenError(f"layer {after} is out of range: the model has layers 0..{depth - 1}")
    base = [LayerRef(k) for k in range(depth)]
    return LayerPlan(tuple(base[: after + 1] + list(refs) + base[after + 1 :]))


# ---------------------------------------------------------------------------------------------- compact text

_ITEM = re.compile(
    r"^(?:(?P<src>[A-Za-z_][\w-]*):)?(?P<a>\d+)(?:\.\.(?P<b>\d+))?(?:\.(?P<sub>block|attn|mlp))?(?:\*(?P<n>\d+))?$"
)


def parse_plan(text: str) -> LayerPlan:
    """Parse compact plan text (see module docstring) into a `LayerPlan`."""
    if not isinstance(text, str) or not text.strip():
        raise FrankenError("the layer plan is empty: give layers such as '0..15,10..29'")
    refs: list[LayerRef] = []
    for raw in text.split(","):
        item = raw.strip().replace(" ", "")
        m = _ITEM.match(item)
        if not m:
            raise FrankenError(
                f"cannot parse plan item {raw.strip()!r} in {text!r}: expected forms like '7', '0..15', '7*3', "
                "'10..12*2', 'b:4..9', '7.attn', '3..5.mlp*2'"
            )
        a = int(m["a"])
        b = int(m["b"]) if m["b"] is not None else a
        if b < a:
            raise FrankenError(f"range {item!r} runs backwards: write {b}..{a} for ascending order")
        n = int(m["n"]) if m["n"] is not None else 1
        if n < 1:
            raise FrankenError(f"repeat count in {item!r} must be at least 1")
        block = [LayerRef(k, m["src"], m["sub"] or "block") for k in range(a, b + 1)]
        refs.extend(block * n)
    return LayerPlan(tuple(refs))


def _format_ref_run(src: str | None, a: int, b: int, sub: str, n: int) -> str:
    s = f"{src}:" if src is not None else ""
    s += str(a) if a == b else f"{a}..{b}"
    if sub != "block":
        s += f".{sub}"
    if n > 1:
        s += f"*{n}"
    return s


def format_plan(plan: LayerPlan) -> str:
    """Canonical compact text: maximal ascending runs as ranges, identical consecutive singles as ``k*n``."""
    out: list[str] = []
    refs = plan.refs
    i = 0
    while i < len(refs):
        r = refs[i]
        j = i
        # extend an ascending run of the same source and sublayer
        while (
            j + 1 < len(refs)
            and refs[j + 1].source == r.source
            and refs[j + 1].sublayer == r.sublayer
            and refs[j + 1].layer == refs[j].layer + 1
        ):
            j += 1
        if j == i:
            # a single: count identical repeats
            while j + 1 < len(refs) and refs[j + 1] == r:
                j += 1
            out.append(_format_ref_run(r.source, r.layer, r.layer, r.sublayer, j - i + 1))
        else:
            out.append(_format_ref_run(r.source, r.layer, refs[j].layer, r.sublayer, 1))
        i = j + 1
    return ",".join(out)


def coerce_plan(plan: "LayerPlan | str | Iterable[int]") -> LayerPlan:
    """Accept a plan, its text, or a list of layer indices."""
    if isinstance(plan, LayerPlan):
        return plan
    if isinstance(plan, str):
        return parse_plan(plan)
    return LayerPlan(tuple(LayerRef(int(k)) for k in plan))


# ------------------------------------------------------------------------------------------- mergekit YAML


def to_mergekit(plan: LayerPlan, models: Mapping[str | None, str], dtype: str = "bfloat16") -> str:
    """A mergekit ``passthrough`` YAML equivalent to `plan` (`models` maps source alias to model path/id)."""
    if plan.has_sublayers:
        bad = next(r for r in plan.refs if r.sublayer != "block")
        raise FrankenError(
            f"plan {format_plan(plan)!r} has no mergekit passthrough equivalent: position with layer {bad.layer} runs "
            f"only its {bad.sublayer} sublayer, and passthrough copies whole layers (export with --format hf or gguf)"
        )
    slices = []
    refs = plan.refs
    i = 0
    while i < len(refs):
        j = i
        while j + 1 < len(refs) and refs[j + 1].source == refs[i].source and refs[j + 1].layer == refs[j].layer + 1:
            j += 1
        src = refs[i].source
        if src not in models:
            raise FrankenError(f"no model path given for source {src!r}")
        slices.append({"sources": [{"model": models[src], "layer_range": [refs[i].layer, refs[j].layer + 1]}]})
        i = j + 1
    doc = {"slices": slices, "merge_method": "passthrough", "dtype": dtype}
    return yaml.safe_dump(doc, sort_keys=False)


def from_mergekit(text: str) -> tuple[LayerPlan, dict[str | None, str]]:
    """Parse a mergekit ``passthrough`` YAML. Returns the plan and the alias → model map.

    The first model named becomes the default source (alias ``None``); others get aliases ``b``, ``c``, ...
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FrankenError(f"mergekit config is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or "slices" not in doc:
        raise FrankenError("mergekit config has no 'slices' list: only passthrough merges with slices are supported")
    method = doc.get("merge_method", "passthrough")
    if method != "passthrough":
        raise FrankenError(f"merge_method {method!r} is not a layer stack: only 'passthrough' maps to a layer plan")
    aliases: dict[str, str | None] = {}
    refs: list[LayerRef] = []
    for k, sl in enumerate(doc["slices"] or []):
        srcs = sl.get("sources") if isinstance(sl, dict) else None
        if not srcs or len(srcs) != 1:
            raise FrankenError(f"slice {k} must have exactly one source for passthrough (found {len(srcs or [])})")
        s = srcs[0]
        model = str(s.get("model"))
        lr = s.get("layer_range")
        if not (isinstance(lr, (list, tuple)) and len(lr) == 2 and all(isinstance(x, int) for x in lr)):
            raise FrankenError(f"slice {k}: layer_range must be [start, end) integers, got {lr!r}")
        start, end = lr
        if end <= start:
            raise FrankenError(f"slice {k}: layer_range [{start}, {end}) is empty (the end is exclusive)")
        if model not in aliases:
            aliases[model] = None if not aliases else chr(ord("a") + len(aliases))
        refs.extend(LayerRef(i, aliases[model]) for i in range(start, end))
    if not refs:
        raise FrankenError("mergekit config has no slices")
    return LayerPlan(tuple(refs)), {alias: model for model, alias in aliases.items()}
