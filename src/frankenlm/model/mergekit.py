"""mergekit ``passthrough`` YAML as a spelling of a layer plan: `to_mergekit` writes one, `from_mergekit` /
`read_mergekit` read one (files and model paths are `frankenlm.export.mergekit`'s business).

A slice ``layer_range: [start, end)`` is end-exclusive. Scaled positions (llama/qwen2) become slices whose
source carries mergekit's passthrough ``scale`` parameter as a filter list, e.g.::

    - sources:
      - model: /path/to/model
        layer_range: [10, 13]
        parameters:
          scale:
          - {filter: self_attn.o_proj, value: 0.5}
          - {filter: mlp.down_proj, value: 0.2}

(mergekit multiplies every tensor whose name contains the filter; the first matching entry wins; tensors no
entry matches are copied unchanged). gemma3 puts its scales on post-norm weights as ``s * (1 + w) - 1``, which
is not a multiplication, so scaled gemma3 plans have no mergekit equivalent; nor have sublayer plans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import yaml

from frankenlm.errors import FrankenError
from frankenlm.model.arch import (
    LLAMA,
    SCALE_BRANCHES,
    Arch,
    arch_of,
    branch_scales,
    mergekit_scalable,
    scale_module,
)
from frankenlm.model.plan import LayerPlan, LayerRef, coerce_plan, format_plan

DTYPES = ("float32", "bfloat16", "float16")
_BRANCH_OF_FILTER = {}  # filter text → branch, for reading (both the module path and its last part)
for _b in SCALE_BRANCHES:
    _path = scale_module(LLAMA, _b)
    _BRANCH_OF_FILTER[_path] = _b
    _BRANCH_OF_FILTER[_path.rpartition(".")[2]] = _b


def _num(x: float):
    """A YAML-friendly number: int when integral, else the shortest float that round-trips."""
    return int(x) if float(x).is_integer() else float(x)


def _scale_parameters(ref: LayerRef, facts: Arch | None) -> dict | None:
    sc = branch_scales(ref)
    if all(s == 1.0 for s in sc.values()):
        return None
    entries = [{"filter": scale_module(facts, b), "value": _num(s)} for b, s in sc.items() if s != 1.0]
    return {"scale": entries}


def to_mergekit(
    plan: LayerPlan, models: Mapping[str | None, str], dtype: str = "bfloat16", model_type: str | None = None
) -> str:
    """A mergekit ``passthrough`` YAML equivalent to `plan` (`models` maps source alias to model path/id).

    `model_type` (HF ``model_type`` of the sources) is needed only for scaled plans: llama/qwen2 scales become
    ``scale`` filters; other families are refused.
    """
    plan = coerce_plan(plan)
    if plan.has_sublayers:
        bad = next(r for r in plan.refs if r.sublayer != "block")
        raise FrankenError(
            f"plan {format_plan(plan)!r} has no mergekit passthrough equivalent: position with layer {bad.layer} runs "
            f"only its {bad.sublayer} sublayer, and passthrough copies whole layers (export with --format hf or gguf)"
        )
    if dtype not in DTYPES:
        raise FrankenError(f"unknown dtype {dtype!r} for a mergekit export: use one of {', '.join(DTYPES)}")
    if refs_from_other_source := [r for r in (plan.refs[0], plan.refs[-1]) if r.source is not None]:
        raise FrankenError(
            f"plan {format_plan(plan)!r} has no mergekit passthrough equivalent: mergekit takes the embeddings from "
            "the first slice's model and the final norm and head from the last slice's, and this plan "
            f"{'starts' if refs_from_other_source[0] is plan.refs[0] else 'ends'} with source "
            f"{refs_from_other_source[0].source!r}, while frankenlm takes them from the default model: start and "
            "end the plan with layers of the default model (or export with --format hf)"
        )
    facts = None
    if plan.has_scales:
        if model_type is None:
            raise FrankenError("internal: a scaled plan needs the sources' model_type for a mergekit export")
        facts = arch_of(model_type)
        if not mergekit_scalable(facts):
            raise FrankenError(
                f"plan {format_plan(plan)!r} has no mergekit equivalent for {model_type}: its scales apply to "
                "post-norm weights as s*(1+w)-1, and mergekit's passthrough scale only multiplies tensors "
                "(export with --format hf or gguf)"
            )
    slices = []
    refs = plan.refs
    i = 0
    while i < len(refs):
        j = i
        while (
            j + 1 < len(refs)
            and refs[j + 1].source == refs[i].source
            and refs[j + 1].layer == refs[j].layer + 1
            and branch_scales(refs[j + 1]) == branch_scales(refs[i])
        ):
            j += 1
        src = refs[i].source
        if src not in models:
            raise FrankenError(f"no model path given for source {src!r}")
        entry = {"model": str(models[src]), "layer_range": [refs[i].layer, refs[j].layer + 1]}
        params = _scale_parameters(refs[i], facts)
        if params:
            entry["parameters"] = params
        slices.append({"sources": [entry]})
        i = j + 1
    doc = {"slices": slices, "merge_method": "passthrough", "dtype": dtype}
    return yaml.safe_dump(doc, sort_keys=False)


def _positive_number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise FrankenError(f"{where}: scale value {v!r} must be a finite number >= 0")
    return float(v)


def _read_scales(params, k: int) -> dict[str, float]:
    """branch → scale from a slice source's ``parameters`` (only passthrough ``scale`` filter lists map)."""
    if params is None:
        return {}
    if not isinstance(params, dict) or set(params) - {"scale"}:
        extra = sorted(set(params) - {"scale"}) if isinstance(params, dict) else params
        raise FrankenError(f"slice {k}: parameters {extra!r} have no layer-plan equivalent (only 'scale' filters)")
    setting = params.get("scale")
    where = f"slice {k}"
    if isinstance(setting, dict):
        setting = [setting]
    if not isinstance(setting, list):
        raise FrankenError(
            f"{where}: scale {setting!r} scales every tensor (norms and embeddings too), which no plan position "
            "does: give a list of {filter: self_attn.o_proj | mlp.down_proj | self_attn.q_proj, value: s}"
        )
    out: dict[str, float] = {}
    for cond in setting:
        if not isinstance(cond, dict) or set(cond) - {"filter", "value"} or "value" not in cond:
            raise FrankenError(f"{where}: scale entry {cond!r} must look like {{filter: ..., value: ...}}")
        value = _positive_number(cond["value"], where)
        flt = cond.get("filter")
        if flt in (None, "*"):
            if value != 1.0:
                raise FrankenError(f"{where}: a scale {value:g} without a filter scales every tensor of the slice")
            break  # later entries are never reached (first match wins)
        if flt not in _BRANCH_OF_FILTER:
            raise FrankenError(
                f"{where}: scale filter {flt!r} is not a branch output a plan can scale: use self_attn.o_proj, "
                "mlp.down_proj or self_attn.q_proj"
            )
        out.setdefault(_BRANCH_OF_FILTER[flt], value)  # first match wins, as in mergekit
    if out.get("qk") == 0.0:
        raise FrankenError(f"{where}: a q_proj scale of 0 makes attention uniform: qk scales must be > 0")
    return out


def _ref(layer: int, alias, scales: dict[str, float]) -> LayerRef:
    if not any(v != 1.0 for v in scales.values()):
        return LayerRef(layer, alias)
    return LayerRef(layer, alias, "block", **{f"{b}_scale": v for b, v in scales.items()})


def from_mergekit(text: str) -> tuple[LayerPlan, dict[str | None, str]]:
    """Parse a mergekit ``passthrough`` YAML. Returns the plan and the alias → model map.

    The first model named becomes the default source (alias ``None``); others get aliases ``b``, ``c``, ...
    ``scale`` filters on ``self_attn.o_proj`` / ``mlp.down_proj`` / ``self_attn.q_proj`` become the positions'
    attention / MLP / QK scales; any other merge parameter is refused.
    """
    return read_mergekit(text)[:2]


def read_mergekit(text: str) -> tuple[LayerPlan, dict[str | None, str], str | None]:
    """Like `from_mergekit`, also returning the YAML's ``dtype`` (None when absent)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrankenError(f"mergekit config is not valid YAML: {first}") from None
    if not isinstance(doc, dict) or "slices" not in doc:
        raise FrankenError("mergekit config has no 'slices' list: only passthrough merges with slices are supported")
    method = doc.get("merge_method", "passthrough")
    if method != "passthrough":
        raise FrankenError(f"merge_method {method!r} is not a layer stack: only 'passthrough' maps to a layer plan")
    if doc.get("parameters"):
        raise FrankenError("mergekit config has global 'parameters': they have no layer-plan equivalent")
    if not isinstance(doc["slices"], list) and doc["slices"] is not None:
        raise FrankenError("mergekit config's 'slices' must be a list of slices")
    dtype = doc.get("dtype")
    aliases: dict[str, str | None] = {}
    refs: list[LayerRef] = []
    for k, sl in enumerate(doc["slices"] or []):
        srcs = sl.get("sources") if isinstance(sl, dict) else None
        if not isinstance(srcs, list) or len(srcs) != 1:
            n = len(srcs) if isinstance(srcs, list) else 0
            raise FrankenError(f"slice {k} must have exactly one source for passthrough (found {n})")
        if sl.get("parameters"):
            raise FrankenError(f"slice {k} has slice-level 'parameters': put scale filters on its source")
        s = srcs[0]
        if not isinstance(s, dict):
            raise FrankenError(f"slice {k}: its source must be a mapping with 'model' and 'layer_range'")
        model = s.get("model")
        if not isinstance(model, str) or not model.strip():
            raise FrankenError(f"slice {k}: its source has no 'model' (a model path or hub id)")
        lr = s.get("layer_range")
        if not (
            isinstance(lr, (list, tuple))
            and len(lr) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in lr)
        ):
            raise FrankenError(f"slice {k}: layer_range must be [start, end) integers, got {lr!r}")
        start, end = lr
        if start < 0:
            raise FrankenError(f"slice {k}: layer_range [{start}, {end}) starts below 0")
        if end <= start:
            raise FrankenError(f"slice {k}: layer_range [{start}, {end}) is empty (the end is exclusive)")
        scales = _read_scales(s.get("parameters"), k)
        if model not in aliases:
            aliases[model] = None if not aliases else chr(ord("a") + len(aliases))
        refs.extend(_ref(i, aliases[model], scales) for i in range(start, end))
    if not refs:
        raise FrankenError("mergekit config has no slices")
    return LayerPlan(tuple(refs)), {alias: model for model, alias in aliases.items()}, dtype
