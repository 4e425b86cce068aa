"""Study designs: named, parameterised generators of layer plans.

Each design yields `Config`s — a plan plus the design parameters the report plots against (block bounds,
layer, repeat count, sublayer). Block bounds are inclusive: block (i, j) repeated once runs layers
0..j, then i..j again, then j+1..N-1 (RYS's pair (i, j+1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from frankenlm.errors import FrankenError
from frankenlm.model.plan import LayerPlan, identity_plan, parse_plan, repeat_block_plan, repeat_layer_plan


@dataclass(frozen=True)
class Config:
    plan: LayerPlan
    design: str
    params: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        return str(self.plan)


def base_config(depth: int) -> Config:
    return Config(identity_plan(depth), "base", {})


def _layers(depth: int, every: int = 1, layers: list[int] | None = None) -> list[int]:
    if layers is not None:
        bad = [k for k in layers if not 0 <= k < depth]
        if bad:
            raise FrankenError(f"layer {bad[0]} is out of range: the model has layers 0..{depth - 1}")
        return list(layers)
    if every < 1:
        raise FrankenError(f"layer stride {every} must be at least 1")
    return list(range(0, depth, every))


def repeat_layer(depth: int, max_repeats: int = 3, every: int = 1, layers: list[int] | None = None) -> list[Config]:
    """Each layer (or every k-th) repeated r = 1..R extra times: the diminishing-returns curve."""
    if max_repeats < 1:
        raise FrankenError(f"max repeats {max_repeats} must be at least 1")
    return [
        Config(repeat_layer_plan(k, depth, extra=r), "repeat-layer", {"layer": k, "repeats": r, "sublayer": "block"})
        for k in _layers(depth, every, layers)
        for r in range(1, max_repeats + 1)
    ]


def repeat_block(depth: int, stride: int = 1, max_len: int | None = None, min_len: int = 1) -> list[Config]:
    """Contiguous blocks (i, j), i <= j, repeated once; stride 1 gives the full depth*(depth+1)/2 scan."""
    if stride < 1:
        raise FrankenError(f"block stride {stride} must be at least 1")
    out = []
    starts = range(0, depth, stride)
    for i in starts:
        for j in range(i + min_len - 1, depth, stride):
            if max_len is not None and j - i + 1 > max_len:
                break
            out.append(Config(repeat_block_plan(i, j, depth), "repeat-block", {"i": i, "j": j, "repeats": 1}))
    return out


def sublayer(depth: int, every: int = 1, layers: list[int] | None = None) -> list[Config]:
    """Attention-only vs MLP-only vs whole-block single repeats of each layer."""
    return [
        Config(repeat_layer_plan(k, depth, extra=1, sublayer=s), "sublayer", {"layer": k, "repeats": 1, "sublayer": s})
        for k in _layers(depth, every, layers)
        for s in ("block", "attn", "mlp")
    ]


def custom(path: str | Path, depth: int) -> list[Config]:
    """A file of plans, one per line (blank lines and # comments ignored)."""
    p = Path(path)
    if not p.is_file():
        raise FrankenError(f"plan file {str(path)!r} does not exist")
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
        out.append(Config(plan, "custom", {}))
    if not out:
        raise FrankenError(f"plan file {str(path)!r} holds no plans")
    return out


def dedupe(configs: list[Config]) -> list[Config]:
    """Drop configs whose plan already appeared (e.g. a sublayer 'block' repeat equals repeat-layer r=1)."""
    seen: set[str] = set()
    out = []
    for c in configs:
        if c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out
