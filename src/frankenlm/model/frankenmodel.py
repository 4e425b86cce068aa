"""Zero-copy frankenmodels: a transformers model whose layer positions share the base models' parameter tensors.

The new model is constructed from a remapped config on the meta device, so each position gets its own freshly
built modules — its own KV-cache slot (`layer_idx`), its own attention type (gemma3's sliding/full layers) — and
then every parameter and buffer is bound to the very tensor of the source layer it comes from. No weight is
copied; `generate()` and the KV cache work as on any transformers model.

Sublayer positions run only part of a layer: an ``attn`` position replaces the MLP by a zero branch, an ``mlp``
position replaces attention by a zero branch (which still writes a one-element-per-token placeholder into the
KV cache so that the cache's sequence length stays right). The residual stream and norms are the layer's own,
so the result equals a materialized layer whose MLP ``down_proj`` (resp. attention ``o_proj``) is zero — which
is how exports represent them.

Scaled positions (healed repeats, `LayerRef.attn_scale` / `mlp_scale` / `qk_scale`) add no tensor either: a
forward hook multiplies the output of the module the architecture registry names (`frankenlm.model.arch`:
llama/qwen2 ``o_proj`` and ``down_proj``, gemma3 its post-norms ``post_attention_layernorm`` and
``post_feedforward_layernorm``), and a QK scale multiplies the position's own attention module's ``scaling``.

Sources split over several GPUs with accelerate's ``device_map`` give a frankenmodel whose every position runs
on the GPU holding its source layer (`split_device_map`), with accelerate's hooks moving the activations.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from frankenlm.errors import FrankenError
from frankenlm.model.arch import Arch, arch_of
from frankenlm.model.plan import LayerPlan, LayerRef, coerce_plan


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers of a transformers causal LM of a supported family (see `frankenlm.model.arch`)."""
    if getattr(model, "config", None) is None:
        raise FrankenError(f"unsupported architecture {type(model).__name__}: expected a transformers causal LM")
    return arch_of(model).decoder_layers(model)


class ZeroMLP(nn.Module):
    """The MLP branch of an attention-only position: contributes nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


class ZeroAttention(nn.Module):
    """The attention branch of an MLP-only position.

    Adds nothing to the residual stream. When a KV cache is in use it appends a one-value placeholder per token
    to its own slot, so every slot reports the same sequence length (transformers reads the length from a slot).
    """

    def __init__(self, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args, cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        if cache is not None:
            b, t = hidden_states.shape[:2]
            stub = hidden_states.new_zeros(b, 1, t, 1)
            cache.update(stub, stub, self.layer_idx)
        return torch.zeros_like(hidden_states), None


def _named_tensors(module: nn.Module):
    for name, p in module.named_parameters(remove_duplicate=False):
        yield name, p, "_parameters"
    for name, b in module.named_buffers(remove_duplicate=False):
        yield name, b, "_buffers"


def _bind(dst: nn.Module, src: nn.Module, what: str, skip_prefix: str | None = None) -> None:
    """Make every parameter/buffer of `dst` the same tensor object as `src`'s of the same name."""
    src_tensors = {n: t for n, t, _ in _named_tensors(src)}
    for name, t, slot in list(_named_tensors(dst)):
        if skip_prefix is not None and name.startswith(skip_prefix):
            continue
        if name not in src_tensors:
            if slot == "_buffers":
                continue
            raise FrankenError(f"{what}: source has no tensor {name!r}: the models' architectures differ")
        s = src_tensors[name]
        if s is not None and t is not None and tuple(s.shape) != tuple(t.shape):
            raise FrankenError(
                f"{what}: incompatible shapes for {name!r}: {tuple(s.shape)} in the source, {tuple(t.shape)} "
                "expected by the frankenmodel (sources must share architecture and hidden size)"
            )
        owner_name, _, leaf = name.rpartition(".")
        owner = dst.get_submodule(owner_name) if owner_name else dst
        getattr(owner, slot)[leaf] = s


def _check_compatible(sources: Mapping[str | None, nn.Module], head: str | None) -> None:
    for m in sources.values():
        arch_of(m)  # one clear error for an unsupported family
    ref = sources[head].config
    for alias, m in sources.items():
        c = m.config
        for key in ("model_type", "hidden_size"):
            if getattr(c, key, None) != getattr(ref, key, None):
                raise FrankenError(
                    f"source {alias or 'default'!r} has {key}={getattr(c, key, None)!r} but the head source has "
                    f"{getattr(ref, key, None)!r}: multi-source stacks need one architecture and hidden size"
                )


def as_sources(given, head_source: str | None = None, what: str = "multi-source stacks") -> dict:
    """One source or an alias → source mapping, as a dict with the default (None) and head sources present."""
    sources = dict(given) if isinstance(given, Mapping) else {None: given}
    if None not in sources:
        raise FrankenError(f"{what} need a default source (alias None)")
    if head_source not in sources:
        raise FrankenError(f"head source {head_source!r} was not given (sources: {list(sources)})")
    return sources


def prepare_sources(
    base: nn.Module | Mapping[str | None, nn.Module],
    plan: LayerPlan | str,
    head_source: str | None = None,
) -> tuple[LayerPlan, dict[str | None, nn.Module], object]:
    """Validate a plan against its sources and build the frankenmodel's config.

    Returns (plan, sources as alias → model, config): the config is the head source's with
    ``num_hidden_layers = len(plan)`` and per-layer ``layer_types`` remapped to the plan's order. Shared by
    `build_frankenmodel` and `frankenlm.export.materialize.materialize`.
    """
    plan = coerce_plan(plan)
    sources = as_sources(base, head_source)
    plan.validate({alias: int(m.config.num_hidden_layers) for alias, m in sources.items()})
    _check_compatible(sources, head_source)
    head = sources[head_source]

    cfg = copy.deepcopy(head.config)
    cfg.num_hidden_layers = len(plan)
    layer_types = [getattr(sources[r.source].config, "layer_types", None) for r in plan]
    if getattr(cfg, "layer_types", None) is not None:
        if any(lt is None for lt in layer_types):
            raise FrankenError("sources disagree on per-layer attention types (layer_types)")
        cfg.layer_types = [lt[r.layer] for lt, r in zip(layer_types, plan)]
    if hasattr(cfg, "max_window_layers") and getattr(cfg, "use_sliding_window", False):
        raise FrankenError("qwen2 configs with use_sliding_window=True are not supported")
    return plan, sources, cfg


class BranchScale:
    """Forward hook multiplying a module's output by a constant (a healed repeat's branch scale). Holds a float,
    no tensor; picklable."""

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, module: nn.Module, args, output):
        return output * self.scale

    def __repr__(self) -> str:
        return f"BranchScale({self.scale:g})"


def apply_scales(layer: nn.Module, ref: LayerRef, arch: Arch) -> None:
    """Give one position (a decoder layer whose modules are its own, sharing only tensors) the scales of `ref`:
    a `BranchScale` hook on the output of the modules the registry names for the attention and MLP scales
    (llama/qwen2: ``self_attn.o_proj``, ``mlp.down_proj``; gemma3: ``post_attention_layernorm``,
    ``post_feedforward_layernorm``), and the attention module's ``scaling`` times ``qk_scale``."""
    for site, s in ((arch.attn_scale, ref.attn_scale), (arch.mlp_scale, ref.mlp_scale)):
        if s != 1.0:
            try:
                module = layer.get_submodule(site.module)
            except AttributeError:
                raise FrankenError(
                    f"layer {ref.layer} ({arch.name}) has no {site.module!r} to carry the scale {s:g}"
                ) from None
            module.register_forward_hook(BranchScale(s))
    if ref.qk_scale != 1.0:
        attn = layer.get_submodule(arch.qk_scale.module)
        if not isinstance(getattr(attn, arch.qk_attr, None), (int, float)):
            raise FrankenError(f"layer {ref.layer} ({arch.name}): its attention has no {arch.qk_attr!r} to scale")
        setattr(attn, arch.qk_attr, getattr(attn, arch.qk_attr) * ref.qk_scale)


def build_frankenmodel(
    base: nn.Module | Mapping[str | None, nn.Module],
    plan: LayerPlan | str,
    head_source: str | None = None,
) -> nn.Module:
    """Build a zero-copy frankenmodel.

    `base` is one model, or a mapping alias → model for multi-source stacks (alias ``None`` is the default
    source). Embeddings, final norm and head come from `head_source` (the default source unless named).
    Scaled refs get their scales at run time (`apply_scales`): no tensor is added or copied.
    """
    plan, sources, cfg = prepare_sources(base, plan, head_source)
    head = sources[head_source]
    for alias, m in sources.items():
        if any(p.is_meta for p in m.parameters()):
            raise FrankenError(
                f"source {alias or 'default'!r} has offloaded (meta) weights: frankenmodels need "
                "every weight resident on a device"
            )

    arch = arch_of(head)
    with torch.device("meta"):
        fm = type(head)._from_config(cfg, dtype=head.dtype)
    # everything but the decoder layers comes from the head source
    _bind(fm, head, "head/embeddings", skip_prefix=arch.layers + ".")
    layers = decoder_layers(fm)
    for pos, r in enumerate(plan):
        src_layer = decoder_layers(sources[r.source])[r.layer]
        _bind(layers[pos], src_layer, f"position {pos} (layer {r.layer} of source {r.source or 'default'!r})")
        if r.sublayer == "attn":
            setattr(layers[pos], arch.mlp, ZeroMLP())
        elif r.sublayer == "mlp":
            setattr(layers[pos], arch.attn, ZeroAttention(pos))
        if r.is_scaled:
            apply_scales(layers[pos], r, arch)
    left = [n for n, t, _ in _named_tensors(fm) if t is not None and t.is_meta]
    if left:
        raise FrankenError(f"internal: frankenmodel tensors left unbound: {left[:5]}")
    fm.generation_config = copy.deepcopy(head.generation_config)
    fm.eval()
    fm.frankenlm_plan = plan
    if any(len(getattr(m, "hf_device_map", None) or {}) > 1 for m in sources.values()):
        _dispatch(fm, plan, sources, head_source)
    return fm


def _device_in(device_map: Mapping[str, object], name: str) -> torch.device | None:
    """The device `device_map` gives module `name` (its longest matching prefix; "" matches everything)."""
    keys = [k for k in device_map if k == "" or name == k or name.startswith(k + ".")]
    if not keys:
        return None
    d = device_map[max(keys, key=len)]
    return torch.device("cuda", d) if isinstance(d, int) else torch.device(d)


def split_device_map(
    plan: LayerPlan, sources: Mapping[str | None, nn.Module], head_source: str | None, fm: nn.Module
) -> dict[str, torch.device]:
    """Where each module of the frankenmodel runs: every position on the device of the source layer whose
    weights it shares, everything else where the head source keeps it (sources split with accelerate)."""

    def device_of(alias: str | None, name: str) -> torch.device:
        m = sources[alias]
        d = _device_in(getattr(m, "hf_device_map", None) or {}, name)
        if d is None:  # not in the map (a parameterless module, or a source on one device)
            d = m.get_input_embeddings().weight.device
        return d

    inner = fm.get_submodule("model")
    out: dict[str, torch.device] = {}
    for name, _ in fm.named_children():
        if name != "model":
            out[name] = device_of(head_source, name)
    for name, _ in inner.named_children():
        if name != "layers":
            out[f"model.{name}"] = device_of(head_source, f"model.{name}")
    for pos, r in enumerate(plan):
        out[f"model.layers.{pos}"] = device_of(r.source, f"model.layers.{r.layer}")
    return out


def _dispatch(fm: nn.Module, plan: LayerPlan, sources, head_source) -> None:
    """Run each module of a frankenmodel of split sources where its weights live (accelerate's hooks move the
    activations between devices; nothing is copied: every weight is already on its execution device)."""
    from accelerate import dispatch_model

    device_map = split_device_map(plan, sources, head_source, fm)
    for name, module in fm.named_modules():
        want = _device_in(device_map, name)
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if want is not None and t.device != want:
                raise FrankenError(f"internal: {name} holds a tensor on {t.device}, its map says {want}")
    skip = sorted(set(getattr(fm, "_skip_keys_device_placement", None) or []) | {"cache", "past_key_values"})
    # torch.device values (never the strings "cpu"/"disk") so accelerate treats no module as offloaded
    dispatch_model(fm, device_map=device_map, skip_keys=skip, force_hooks=True)


def check_layer_types(fm: nn.Module) -> None:
    """Assert each position's attention type matches the config (the gemma3 pitfall)."""
    types = getattr(fm.config, "layer_types", None)
    if types is None:
        return
    arch = arch_of(fm)
    for pos, layer in enumerate(decoder_layers(fm)):
        attn = getattr(layer, arch.attn)
        lt = getattr(attn, "layer_type", None) or getattr(layer, "attention_type", None)
        if lt is not None and lt != types[pos]:
            raise AssertionError(f"position {pos}: layer type {lt} != config {types[pos]}")


def storage_ptrs(*models: nn.Module) -> dict[int, int]:
    """Unique parameter storages (data pointer → bytes) across models: shared tensors count once."""
    out: dict[int, int] = {}
    for m in models:
        for p in m.parameters(recurse=True):
            s = p.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
    return out
