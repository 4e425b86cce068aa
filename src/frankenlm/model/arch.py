"""The architecture registry: every per-family fact frankenlm relies on, in one frozen record per family.

`arch_of(model_or_config)` returns the `Arch` of a transformers model (or config) and raises `FrankenError` for
an unsupported ``model_type``. Supported: llama (and mistral, which has llama's layer layout), qwen2 and gemma3
(text). Everything else in frankenlm — zero-copy positions, costs, exports — reads these facts instead of
hard-coding module names.

Branch scales (healed repeats, see `frankenlm.model.plan.LayerRef`) are defined per family by `ScaleSite`s:

* llama / qwen2 / mistral: the attention scale multiplies the attention output (``self_attn.o_proj``'s output)
  and the MLP scale the MLP output (``mlp.down_proj``'s output), just before each enters the residual stream.
  Materialized: ``o_proj`` / ``down_proj`` weight (and bias, if any) times the scale.
* gemma3: each branch ends in an RMSNorm (``post_attention_layernorm``, ``post_feedforward_layernorm``), which
  would undo a scale applied before it, so the scale multiplies the OUTPUT OF THE POST-NORM. Materialized: the
  norm weight, which HF stores with a +1 offset (the norm computes ``x̂ * (1 + w)``), becomes ``s * (1 + w) - 1``;
  a GGUF stores ``1 + w`` itself, so there it is simply multiplied by ``s``.
* QK temperature: the attention logits are multiplied by ``qk``. At run time the position's attention module's
  ``scaling`` (the 1/sqrt(d) factor every attention implementation takes) becomes ``scaling * qk``.
  Materialized: llama / qwen2 multiply ``q_proj`` weight and bias by ``qk`` (RoPE is linear, so scaling queries
  before it is the same); gemma3 normalises queries after ``q_proj`` (``q_norm``), so its weight becomes
  ``qk * (1 + w) - 1`` (GGUF: ``attn_q_norm`` times ``qk``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from frankenlm.errors import FrankenError


@dataclass(frozen=True)
class ScaleSite:
    """Where one scale factor of a position goes.

    module: path inside a decoder layer of the module whose OUTPUT is multiplied at run time (for the QK scale:
    the attention module whose ``scaling`` attribute is multiplied).
    tensors: HF tensor names (relative to the decoder layer) multiplied in a materialized copy; names the layer
    does not have (a bias of a bias-free projection) are skipped.
    gguf: the same tensors' GGUF block suffixes (``blk.N.<suffix>``).
    offset: the tensor is an RMSNorm weight stored with gemma's +1 offset in HF (``w' = s * (1 + w) - 1``);
    GGUF stores ``1 + w``, so the GGUF tensor is multiplied by ``s`` either way.
    """

    module: str
    tensors: tuple[str, ...]
    gguf: tuple[str, ...]
    offset: bool = False

    def scale_hf(self, name: str, t: torch.Tensor, s: float) -> torch.Tensor:
        """The materialized value of HF tensor `name` (one of `tensors`) under scale `s` (a new tensor)."""
        if self.offset:
            return ((1.0 + t.double()) * s - 1.0).to(t.dtype)
        return (t.double() * s).to(t.dtype)


@dataclass(frozen=True, eq=False)
class Arch:
    """The facts of one model family (names are relative to a decoder layer unless said otherwise)."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family
    layers: str  # path of the decoder-layer ModuleList in the causal LM
    final_norm: str  # path of the final norm in the causal LM
    attn: str  # attention sublayer attribute of a decoder layer
    mlp: str  # MLP sublayer attribute of a decoder layer
    attn_norms: tuple[str, ...]  # norms that belong to the attention branch (run by an attn-only position)
    mlp_norms: tuple[str, ...]  # norms that belong to the MLP branch
    # the projection zeroed in a materialized export for a sublayer position: sublayer -> (HF prefix, GGUF prefix)
    zeroed: Mapping[str, tuple[str, str]]
    attn_scale: ScaleSite
    mlp_scale: ScaleSite
    qk_scale: ScaleSite
    qk_attr: str = "scaling"  # attribute of the attention module holding the logit scale
    # the attention type a GGUF reader gives layer i (None: one type for every layer)
    gguf_layer_type: Callable[[int], str] | None = None

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        layers = model.get_submodule(self.layers) if _has(model, self.layers) else None
        if not isinstance(layers, nn.ModuleList):
            raise FrankenError(
                f"{type(model).__name__} has no decoder-layer list at {self.layers!r}: expected a {self.name} causal LM"
            )
        return layers

    def sites(self, ref) -> list[tuple[ScaleSite, float]]:
        """The (site, factor) pairs a LayerRef's scales put on its position (factors of 1 left out)."""
        out = []
        for site, s in (
            (self.attn_scale, ref.attn_scale),
            (self.mlp_scale, ref.mlp_scale),
            (self.qk_scale, ref.qk_scale),
        ):
            if s != 1.0:
                out.append((site, float(s)))
        return out


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def gemma3_gguf_layer_type(i: int) -> str:
    """The attention type a GGUF reader gives gemma3 layer `i`.

    GGUF stores no per-layer types for gemma3: llama.cpp (``hparams.set_swa_pattern(6)``: sliding iff
    ``i % 6 < 5``) and transformers (``Gemma3TextConfig`` defaults ``layer_types`` to full iff ``(i + 1) % 6 == 0``,
    the GGUF config mapping has no layer-types key) both derive it from the index.
    """
    return "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"


_LLAMA_ZEROED = {"attn": ("mlp.down_proj.", "ffn_down."), "mlp": ("self_attn.o_proj.", "attn_output.")}

LLAMA = Arch(
    name="llama",
    model_types=("llama", "mistral"),
    layers="model.layers",
    final_norm="model.norm",
    attn="self_attn",
    mlp="mlp",
    attn_norms=("input_layernorm",),
    mlp_norms=("post_attention_layernorm",),  # llama's post_attention_layernorm is the MLP's pre-norm
    zeroed=_LLAMA_ZEROED,
    attn_scale=ScaleSite(
        "self_attn.o_proj",
        ("self_attn.o_proj.weight", "self_attn.o_proj.bias"),
        ("attn_output.weight", "attn_output.bias"),
    ),
    mlp_scale=ScaleSite(
        "mlp.down_proj", ("mlp.down_proj.weight", "mlp.down_proj.bias"), ("ffn_down.weight", "ffn_down.bias")
    ),
    qk_scale=ScaleSite(
        "self_attn", ("self_attn.q_proj.weight", "self_attn.q_proj.bias"), ("attn_q.weight", "attn_q.bias")
    ),
)

# llama's layout; q_proj has a bias in qwen2, scaled with the weight (the sites list biases)
QWEN2 = replace(LLAMA, name="qwen2", model_types=("qwen2",))

GEMMA3 = Arch(
    name="gemma3",
    model_types=("gemma3_text", "gemma3"),
    layers="model.layers",
    final_norm="model.norm",
    attn="self_attn",
    mlp="mlp",
    attn_norms=("input_layernorm", "post_attention_layernorm"),
    mlp_norms=("pre_feedforward_layernorm", "post_feedforward_layernorm"),
    zeroed=_LLAMA_ZEROED,  # the post-norms map a zero branch to zero
    attn_scale=ScaleSite(
        "post_attention_layernorm", ("post_attention_layernorm.weight",), ("post_attention_norm.weight",), offset=True
    ),
    mlp_scale=ScaleSite(
        "post_feedforward_layernorm", ("post_feedforward_layernorm.weight",), ("post_ffw_norm.weight",), offset=True
    ),
    qk_scale=ScaleSite("self_attn", ("self_attn.q_norm.weight",), ("attn_q_norm.weight",), offset=True),
    gguf_layer_type=gemma3_gguf_layer_type,
)

ARCHS: tuple[Arch, ...] = (LLAMA, QWEN2, GEMMA3)
_BY_TYPE = {t: a for a in ARCHS for t in a.model_types}


def arch_of(model_or_config) -> Arch:
    """The registry entry of a transformers model, config, or ``model_type`` string."""
    if isinstance(model_or_config, str):
        mt = model_or_config
    else:
        cfg = getattr(model_or_config, "config", model_or_config)
        mt = getattr(cfg, "model_type", None)
    if mt not in _BY_TYPE:
        what = type(model_or_config).__name__ if not isinstance(model_or_config, str) else "model"
        raise FrankenError(
            f"unsupported architecture {mt!r} ({what}): frankenlm supports model types {', '.join(sorted(_BY_TYPE))}"
        )
    return _BY_TYPE[mt]


# -------------------------------------------------------------------------------- materialized branch scales

SCALE_BRANCHES = ("attn", "mlp", "qk")


def branch_scales(ref) -> dict[str, float]:
    """branch (``attn``, ``mlp``, ``qk``) → the scale a `LayerRef` puts on it."""
    return {"attn": ref.attn_scale, "mlp": ref.mlp_scale, "qk": ref.qk_scale}


def scale_site(arch: Arch, branch: str) -> ScaleSite:
    """The `ScaleSite` of a branch: ``attn``, ``mlp`` or ``qk``."""
    return {"attn": arch.attn_scale, "mlp": arch.mlp_scale, "qk": arch.qk_scale}[branch]


def scale_module(arch: Arch, branch: str) -> str:
    """The HF module (inside a decoder layer) whose weights carry `branch`'s scale, e.g. ``self_attn.o_proj``."""
    return scale_site(arch, branch).tensors[0].rpartition(".")[0]


def scale_gguf_stem(arch: Arch, branch: str) -> str:
    """The GGUF tensor stem (inside ``blk.N``) that carries `branch`'s scale, e.g. ``attn_output``."""
    return scale_site(arch, branch).gguf[0].rpartition(".")[0]


def mergekit_scalable(arch: Arch) -> bool:
    """Whether mergekit's passthrough ``scale`` (it multiplies tensors) can express the family's scales."""
    return not any(scale_site(arch, b).offset for b in SCALE_BRANCHES)


def scaled_layer_tensors(arch: Arch, ref, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a materialized position that `ref`'s scales change: HF name (relative to the decoder
    layer) -> new tensor (never in place; `tensors` is the source layer's name -> tensor map). Empty for an
    unscaled ref. Raises FrankenError if the layer lacks a tensor a scale needs."""
    out: dict[str, torch.Tensor] = {}
    for site, s in arch.sites(ref):
        found = [n for n in site.tensors if n in tensors]
        if not found:
            raise FrankenError(
                f"layer {ref.layer}: no {' or '.join(site.tensors)} tensor to carry its scale {s:g} ({arch.name})"
            )
        for n in found:
            with torch.no_grad():
                out[n] = site.scale_hf(n, tensors[n].detach(), s)
    return out


def scaled_gguf_factors(arch: Arch, ref) -> dict[str, float]:
    """GGUF block tensor suffix (e.g. ``attn_output.weight``) -> factor to multiply the stored values by, for
    `ref`'s scales (gemma3's stored norms already hold 1 + w, so a plain factor is right for every family).
    Suffixes absent from the block (biases) should be skipped by the caller."""
    out: dict[str, float] = {}
    for site, s in arch.sites(ref):
        for g in site.gguf:
            out[g] = out.get(g, 1.0) * s
    return out


def materialize_scaled_weights(layer: nn.Module, ref, arch: Arch | None = None) -> nn.Module:
    """Multiply, IN PLACE, the weights of `layer` (a materialized decoder layer with its own tensors, e.g. a
    deep copy) so that running it plainly equals the zero-copy position of `ref` with its scales (see the module
    docstring). Never call it on a layer whose tensors a base model or a frankenmodel shares. Returns `layer`."""
    arch = arch or arch_of(getattr(layer, "config", None) or _config_of(layer))
    named = dict(layer.named_parameters(remove_duplicate=False))
    named.update(dict(layer.named_buffers(remove_duplicate=False)))
    for n, t in scaled_layer_tensors(arch, ref, named).items():
        with torch.no_grad():
            named[n].copy_(t)
    return layer


def _config_of(layer: nn.Module):
    attn = getattr(layer, "self_attn", None)
    cfg = getattr(attn, "config", None)
    if cfg is None:
        raise FrankenError(f"cannot tell the architecture of {type(layer).__name__}: pass arch=arch_of(model)")
    return cfg
