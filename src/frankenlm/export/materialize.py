"""`materialize`: a plan as an ordinary transformers model whose weights are physical copies.

Sublayer positions are materialized as the whole layer with the other branch's output projection zeroed: an
``attn`` position gets MLP ``down_proj`` = 0, an ``mlp`` position gets attention ``o_proj`` = 0, biases included.
That is exactly the zero-copy frankenmodel's ZeroMLP/ZeroAttention: the branch adds 0 to the residual stream in
llama and qwen2 (no o_proj/down_proj bias) and in gemma3 (its post-attention and post-feedforward RMSNorms map 0
to 0). Scaled positions (`LayerRef.attn_scale` / ``mlp_scale`` / ``qk_scale``) get the scale baked into the
weights named in `frankenlm.export.scaling`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from frankenlm.errors import FrankenError
from frankenlm.export import scaling
from frankenlm.model.arch import arch_of
from frankenlm.model.frankenmodel import _named_tensors, decoder_layers, prepare_sources
from frankenlm.model.plan import LayerPlan


def hf_zeroed(model, sublayer: str) -> str:
    """The HF tensor prefix (inside a decoder layer) zeroed for an `sublayer`-only position (the registry's)."""
    return arch_of(model).zeroed[sublayer][0]


def zoo_name_of(path: str | Path | None) -> str | None:
    """The zoo name of a frankenlm safetensors cache directory (matched by the GGUF digest it records)."""
    from frankenlm.model import zoo

    if not path:
        return None
    try:
        digest = json.loads((Path(path) / "frankenlm.json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return next((m.name for m in zoo.ZOO.values() if m.sha256 == digest), None)


def unwrap_sources(sources) -> tuple[dict[str | None, nn.Module], dict[str | None, dict]]:
    """alias → model and alias → provenance (name, path, digest, layers), from a model, a LoadedModel, or a
    mapping of either. The name is the zoo name or hub id the model was loaded by where known."""
    items = dict(sources) if isinstance(sources, Mapping) else {None: sources}
    models: dict[str | None, nn.Module] = {}
    info: dict[str | None, dict] = {}
    for alias, s in items.items():
        model = getattr(s, "model", None) if not isinstance(s, nn.Module) else s
        if not isinstance(model, nn.Module):
            raise FrankenError(
                f"source {alias or 'default'!r} is a {type(s).__name__}: give a transformers model or a LoadedModel"
            )
        models[alias] = model
        path = getattr(s, "path", None) or getattr(model.config, "_name_or_path", None) or None
        name = zoo_name_of(path) or getattr(s, "name", None) or path
        digest = getattr(s, "digest", None) or None
        if digest is None and path:  # a bare model loaded from frankenlm's cache or an export: its marker's digest
            try:
                digest = json.loads((Path(path) / "frankenlm.json").read_text()).get("sha256")
            except (OSError, ValueError, AttributeError):
                pass
        info[alias] = {
            "name": name,
            "path": str(path) if path else None,
            "digest": digest,
            "layers": int(model.config.num_hidden_layers),
        }
    return models, info


def _check_sublayers(plan: LayerPlan, srcs) -> None:
    for r in plan:
        if r.sublayer != "block":
            layer = decoder_layers(srcs[r.source])[r.layer]
            prefix = hf_zeroed(srcs[r.source], r.sublayer)
            if not any(n.startswith(prefix) for n, _ in layer.named_parameters()):
                raise FrankenError(
                    f"cannot materialize the {r.sublayer}-only position of layer {r.layer}: "
                    f"{type(layer).__name__} has no {prefix.rstrip('.')} projection to zero"
                )


def _check_scales(plan: LayerPlan, srcs, facts) -> None:
    for pos, r in enumerate(plan):
        if not scaling.is_scaled(r):
            continue
        names = {n for n, _ in decoder_layers(srcs[r.source])[r.layer].named_parameters()}
        for branch, s in scaling.ref_scales(r).items():
            if s != 1.0 and not any(n in names for n in scaling.site(facts, branch).tensors):
                raise FrankenError(
                    f"position {pos} (layer {r.layer}) scales its {branch} branch by {s:g}, but the layer has no "
                    f"{scaling.module_path(facts, branch)} to carry the scale"
                )


def materialize(sources, plan: LayerPlan | str, head_source: str | None = None) -> nn.Module:
    """A plain transformers model equivalent to the frankenmodel of `plan`, with its own copy of every weight.

    `sources` is a model (or LoadedModel) or a mapping alias → model as for `build_frankenmodel`. The model has
    the head source's class and config with ``num_hidden_layers = len(plan)`` and ``layer_types`` remapped;
    sublayer positions are whole layers with ``down_proj`` (attn-only) or ``o_proj`` (mlp-only) zeroed; scaled
    positions carry their scales in the weights (see `frankenlm.export.scaling`).
    """
    models, _ = unwrap_sources(sources)
    plan, srcs, cfg = prepare_sources(models, plan, head_source)
    head = srcs[head_source]
    facts = scaling.facts(cfg.model_type) if any(scaling.is_scaled(r) for r in plan) else None
    _check_sublayers(plan, srcs)
    if facts is not None:
        _check_scales(plan, srcs, facts)
    if hasattr(cfg, "quantization_config"):  # a GGUF-loaded head: the copy holds plain dequantized weights
        del cfg.quantization_config
    with torch.device("meta"):
        m = type(head)._from_config(cfg, dtype=head.dtype)

    head_tensors = {n: t for n, t, _ in _named_tensors(head)}
    layer_tensors = {}  # (alias, layer) → name → tensor
    copies: dict[tuple, torch.Tensor] = {}  # (scope, id(source tensor)) → its copy: keeps tied weights tied

    for name, t, slot in list(_named_tensors(m)):
        scale = None
        if name.startswith("model.layers."):
            pos_s, _, rest = name[len("model.layers.") :].partition(".")
            pos = int(pos_s)
            r = plan[pos]
            key = (r.source, r.layer)
            if key not in layer_tensors:
                layer_tensors[key] = {n: x for n, x, _ in _named_tensors(decoder_layers(srcs[r.source])[r.layer])}
            src = layer_tensors[key].get(rest)
            zero = r.sublayer != "block" and rest.startswith(hf_zeroed(srcs[r.source], r.sublayer))
            if facts is not None and not zero:
                scale = scaling.hf_scale_for(facts, r, rest)
            scope: object = pos
            what = f"position {pos} (layer {r.layer} of source {r.source or 'default'!r}): {rest!r}"
        else:
            src, zero, scope, what = head_tensors.get(name), False, "head", f"head/embeddings: {name!r}"
        if src is None:
            if slot == "_buffers" and t is None:
                continue
            raise FrankenError(f"{what}: the source has no such tensor: the models' architectures differ")
        if tuple(src.shape) != tuple(t.shape):
            raise FrankenError(
                f"{what}: incompatible shapes {tuple(src.shape)} in the source and {tuple(t.shape)} expected "
                "(sources must share architecture and hidden size)"
            )
        ck = (scope, id(src))
        if ck not in copies:
            with torch.no_grad():
                if zero:
                    c = torch.zeros_like(src)
                elif scale is not None:
                    c = scaling.apply_hf(scale, rest, src)
                else:
                    c = src.detach().clone(memory_format=torch.contiguous_format)
            copies[ck] = nn.Parameter(c, requires_grad=False) if slot == "_parameters" else c
        owner_name, _, leaf = name.rpartition(".")
        owner = m.get_submodule(owner_name) if owner_name else m
        getattr(owner, slot)[leaf] = copies[ck]
    left = [n for n, x, _ in _named_tensors(m) if x is not None and x.is_meta]
    if left:
        raise FrankenError(f"internal: materialized tensors left unset: {left[:5]}")
    if getattr(head, "generation_config", None) is not None:
        m.generation_config = copy.deepcopy(head.generation_config)
    m.eval().requires_grad_(False)
    return m
