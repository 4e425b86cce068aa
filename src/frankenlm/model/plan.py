"""Layer plans: the canonical description of a frankenmodel.

A plan is an ordered tuple of `LayerRef`s — (source alias, layer index, sublayer) — one per position of the new
model. Everything else parses into it and formats from it:

* compact text, e.g. ``0..15,10..29`` (inclusive ranges, the meaning of ExLlamaV3's ``layer_map``), ``7*3``
  (layer 7 three times), ``10..12*2`` (the range twice), ``b:4..9`` (layers of source ``b``), ``7.attn``
  (only the attention sublayer of layer 7, with its norm and residual), ``3..5.mlp*2``;
* mergekit ``passthrough`` YAML (``slices`` with ``layer_range: [start, end)``, end exclusive): read and written
  by `frankenlm.export.mergekit`;
* RYS-style ``(i, j)`` pairs: layers ``0..j-1`` then ``i..N-1``.

Healed repeats scale a position's branches (see `LayerRef`; where the scale goes per family is in
`frankenlm.model.arch`): ``7@0.5`` (both branches x0.5), ``7@0.5/0.2`` (attention x0.5, MLP x0.2),
``7.attn@0.5`` / ``7.mlp@0.2`` (the branch a sublayer position runs), ``7^0.5`` (attention logits x0.5, a QK
temperature), ``12~3`` (sub-steps: layer 12 applied three times, each copy with both branches x1/3, replacing
the single application). Item syntax, in canonical order: ``[src:]a[..b][.sub][*n|~n][@s[/m]][^t]``.

The source alias ``None`` means the default source (the first model given).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from frankenlm.errors import FrankenError

SUBLAYERS = ("block", "attn", "mlp")


@dataclass(frozen=True, order=True)
class LayerRef:
    """One position of a frankenmodel: which source's layer, which part of it runs, and its branch scales.

    attn_scale: the attention branch's output is multiplied by this before it enters the residual stream.
    mlp_scale: the MLP branch's output is multiplied by this.
    qk_scale: the attention logits are multiplied by this (a temperature: the module's ``scaling`` x qk_scale).
    Scales are finite, >= 0 (qk_scale > 0). A sublayer position takes only the scales of the branch it runs
    (an ``mlp`` position no attention or QK scale, an ``attn`` position no MLP scale). A ref whose scales are
    all 1 is equal (==, hash) to the plain ref. Where each scale acts in a model family (gemma3: after its
    post-norms) is recorded in `frankenlm.model.arch`.
    """

    layer: int
    source: str | None = None
    sublayer: str = "block"
    attn_scale: float = 1.0
    mlp_scale: float = 1.0
    qk_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.sublayer not in SUBLAYERS:
            raise FrankenError(f"sublayer {self.sublayer!r} is not one of {', '.join(SUBLAYERS)}")
        if self.layer < 0:
            raise FrankenError(f"layer index {self.layer} is negative: layers are numbered from 0")
        for field, what in (("attn_scale", "attention scale"), ("mlp_scale", "MLP scale"), ("qk_scale", "QK scale")):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FrankenError(f"{what} {v!r} of layer {self.layer} is not a number")
            v = float(v)
            if not math.isfinite(v):
                raise FrankenError(f"{what} {v} of layer {self.layer} is not finite: give a number >= 0")
            if v < 0 or (field == "qk_scale" and v == 0):
                bound = "> 0" if field == "qk_scale" else ">= 0"
                raise FrankenError(f"{what} {_num(v)} of layer {self.layer} must be {bound}")
            object.__setattr__(self, field, v + 0.0)  # a float, and -0.0 -> 0.0
        if self.sublayer == "mlp" and (self.attn_scale != 1.0 or self.qk_scale != 1.0):
            which = "attention" if self.attn_scale != 1.0 else "attention (QK)"
            raise FrankenError(
                f"layer {self.layer}.mlp runs only its MLP sublayer, so it has no {which} branch to scale: "
                f"give it one scale, e.g. {self.layer}.mlp@0.5"
            )
        if self.sublayer == "attn" and self.mlp_scale != 1.0:
            raise FrankenError(
                f"layer {self.layer}.attn runs only its attention sublayer, so it has no MLP branch to scale: "
                f"give it one scale, e.g. {self.layer}.attn@0.5"
            )

    @property
    def is_scaled(self) -> bool:
        """Whether any scale differs from 1."""
        return self.attn_scale != 1.0 or self.mlp_scale != 1.0 or self.qk_scale != 1.0

    @property
    def plain(self) -> LayerRef:
        """The same position without scales."""
        return LayerRef(self.layer, self.source, self.sublayer)


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

    @property
    def has_scales(self) -> bool:
        """Whether any position scales a branch or its attention logits (a healed repeat)."""
        return any(r.is_scaled for r in self.refs)

    def text(self) -> str:
        return format_plan(self)

    def __str__(self) -> str:
        return format_plan(self)

    def common_prefix(self, other: LayerPlan) -> int:
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

_NUM = r"[^@^/~*,]+"
_ITEM = re.compile(
    r"^(?:(?P<src>[A-Za-z_][\w-]*):)?(?P<a>\d+)(?:\.\.(?P<b>\d+))?(?:\.(?P<sub>block|attn|mlp))?"
    r"(?:(?P<op>[*~])(?P<n>\d+))?"
    rf"(?:@(?P<s1>{_NUM})(?:/(?P<s2>{_NUM}))?)?(?:\^(?P<t>{_NUM}))?$"
)
_FORMS = "'7', '0..15', '7*3', '10..12*2', 'b:4..9', '7.attn', '3..5.mlp*2', '7@0.5', '7@0.5/0.2', '7^0.5', '12~3'"


def _scale(text: str, item: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise FrankenError(f"{what} {text!r} in plan item {item!r} is not a number: write e.g. '7@0.5'") from None
    if not math.isfinite(v):
        raise FrankenError(f"{what} {text!r} in plan item {item!r} is not finite: give a number >= 0")
    return v


def _parse_item(raw: str, text: str) -> list[LayerRef]:
    item = raw.strip().replace(" ", "")
    m = _ITEM.match(item)
    if not m:
        raise FrankenError(f"cannot parse plan item {raw.strip()!r} in {text!r}: expected forms like {_FORMS}")
    a = int(m["a"])
    b = int(m["b"]) if m["b"] is not None else a
    if b < a:
        raise FrankenError(f"range {item!r} runs backwards: write {b}..{a} for ascending order")
    n = int(m["n"]) if m["n"] is not None else 1
    sub = m["sub"] or "block"
    substeps = m["op"] == "~"
    if n < 1:
        kind = "sub-step count" if substeps else "repeat count"
        raise FrankenError(f"{kind} in plan item {item!r} must be at least 1")
    scales: dict[str, float] = {}
    if substeps:
        if b != a:
            raise FrankenError(f"sub-steps apply to one layer: write {item.split('..')[0]}~{n}, not a range ({item!r})")
        if m["s1"] is not None:
            raise FrankenError(f"plan item {item!r}: sub-steps '~{n}' set the branch scales to 1/{n}; drop the '@'")
        if sub in ("block", "attn"):
            scales["attn_scale"] = 1.0 / n
        if sub in ("block", "mlp"):
            scales["mlp_scale"] = 1.0 / n
    if m["s1"] is not None:
        s1 = _scale(m["s1"], item, "scale")
        s2 = _scale(m["s2"], item, "MLP scale") if m["s2"] is not None else None
        if s2 is not None:
            scales.update(attn_scale=s1, mlp_scale=s2)
        elif sub == "attn":
            scales["attn_scale"] = s1
        elif sub == "mlp":
            scales["mlp_scale"] = s1
        else:
            scales.update(attn_scale=s1, mlp_scale=s1)
    if m["t"] is not None:
        scales["qk_scale"] = _scale(m["t"], item, "QK scale")
    try:
        block = [LayerRef(k, m["src"], sub, **scales) for k in range(a, b + 1)]
    except FrankenError as e:
        raise FrankenError(f"plan item {item!r}: {e}") from None
    return block * n


def parse_plan(text: str) -> LayerPlan:
    """Parse compact plan text (see module docstring) into a `LayerPlan`."""
    if not isinstance(text, str) or not text.strip():
        raise FrankenError("the layer plan is empty: give layers such as '0..15,10..29'")
    refs: list[LayerRef] = []
    for raw in text.split(","):
        refs.extend(_parse_item(raw, text))
    return LayerPlan(tuple(refs))


def _num(x: float) -> str:
    """Short form of a number (``format(x, '.6g')``), or its exact repr when 6 digits would not read back."""
    s = format(x, ".6g")
    return s if float(s) == x else repr(x)


def _scale_text(r: LayerRef, with_branches: bool = True) -> str:
    s = ""
    if with_branches:
        if r.sublayer == "attn":
            s = f"@{_num(r.attn_scale)}" if r.attn_scale != 1.0 else ""
        elif r.sublayer == "mlp":
            s = f"@{_num(r.mlp_scale)}" if r.mlp_scale != 1.0 else ""
        elif r.attn_scale != 1.0 or r.mlp_scale != 1.0:
            s = f"@{_num(r.attn_scale)}"
            if r.mlp_scale != r.attn_scale:
                s += f"/{_num(r.mlp_scale)}"
    if r.qk_scale != 1.0:
        s += f"^{_num(r.qk_scale)}"
    return s


def _substeps(r: LayerRef) -> int | None:
    """n if the branch scales of `r` are exactly those of one of n sub-steps (1/n on its branches), else None."""
    present = {"block": (r.attn_scale, r.mlp_scale), "attn": (r.attn_scale,), "mlp": (r.mlp_scale,)}[r.sublayer]
    s = present[0]
    if s <= 0 or s >= 1 or any(x != s for x in present):
        return None
    n = round(1.0 / s)
    return n if n >= 2 and 1.0 / n == s else None


def _head(r: LayerRef, b: int) -> str:
    s = f"{r.source}:" if r.source is not None else ""
    s += str(r.layer) if r.layer == b else f"{r.layer}..{b}"
    if r.sublayer != "block":
        s += f".{r.sublayer}"
    return s


def _same_but_layer(x: LayerRef, y: LayerRef) -> bool:
    return (x.source, x.sublayer, x.attn_scale, x.mlp_scale, x.qk_scale) == (
        y.source,
        y.sublayer,
        y.attn_scale,
        y.mlp_scale,
        y.qk_scale,
    )


def format_plan(plan: LayerPlan) -> str:
    """Canonical compact text: maximal ascending runs as ranges, identical consecutive singles as ``k*n``, runs of
    sub-steps (n identical refs with branch scales exactly 1/n) as ``k~n``. ``parse_plan`` reads it back to the
    same refs; plans without scales print as they always did."""
    out: list[str] = []
    refs = plan.refs
    i = 0
    while i < len(refs):
        r = refs[i]
        j = i
        # extend an ascending run of the same source, sublayer and scales
        while j + 1 < len(refs) and _same_but_layer(refs[j + 1], r) and refs[j + 1].layer == refs[j].layer + 1:
            j += 1
        if j > i:
            out.append(_head(r, refs[j].layer) + _scale_text(r))
            i = j + 1
            continue
        # a single: count identical repeats
        while j + 1 < len(refs) and refs[j + 1] == r:
            j += 1
        count = j - i + 1
        n = _substeps(r)
        if n is not None and count % n == 0:
            out.extend([f"{_head(r, r.layer)}~{n}{_scale_text(r, with_branches=False)}"] * (count // n))
        else:
            out.append(_head(r, r.layer) + (f"*{count}" if count > 1 else "") + _scale_text(r))
        i = j + 1
    return ",".join(out)


def coerce_plan(plan: LayerPlan | str | Iterable[int]) -> LayerPlan:
    """Accept a plan, its text, or a list of layer indices."""
    if isinstance(plan, LayerPlan):
        return plan
    if isinstance(plan, str):
        return parse_plan(plan)
    return LayerPlan(tuple(LayerRef(int(k)) for k in plan))
