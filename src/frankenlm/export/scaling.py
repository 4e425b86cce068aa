"""Where a position's branch scales (`LayerRef.attn_scale` / ``mlp_scale`` / ``qk_scale``) land in exported
weights: thin lookups over the architecture registry (`frankenlm.model.arch`, whose `ScaleSite`s hold the
facts and their rationale), shared by the hf, GGUF and mergekit exports.

llama / qwen2 multiply ``o_proj`` / ``down_proj`` / ``q_proj`` (weights and biases; GGUF ``attn_output`` /
``ffn_down`` / ``attn_q``); gemma3 puts ``s * (1 + w) - 1`` on its post-norms and ``q_norm`` (GGUF stores
``1 + w``, so there the stored tensor is multiplied by ``s``). Only pure multiplications can be written as
mergekit's passthrough ``scale`` filters.
"""

from __future__ import annotations

import torch

from frankenlm.model.arch import (
    SCALE_BRANCHES,
    Arch,
    ScaleSite,
    arch_of,
    branch_scales,
    mergekit_scalable,
    scale_gguf_stem,
    scale_module,
    scale_site,
)

BRANCHES = SCALE_BRANCHES
site, module_path, gguf_stem, mergekit_ok = scale_site, scale_module, scale_gguf_stem, mergekit_scalable


def facts(model_type: str) -> Arch:
    """The registry entry of a family, by HF ``model_type`` or GGUF architecture name (FrankenError if none)."""
    return arch_of(model_type)


ref_scales = branch_scales


def is_scaled(ref) -> bool:
    return ref.is_scaled


def hf_scale_for(arch: Arch, ref, tensor_name: str) -> tuple[ScaleSite, float] | None:
    """(site, scale) for decoder-layer tensor `tensor_name` (e.g. ``self_attn.o_proj.weight``) at position
    `ref`, or None when the tensor is not touched."""
    for branch, s in ref_scales(ref).items():
        if s != 1.0 and tensor_name in site(arch, branch).tensors:
            return site(arch, branch), s
    return None


def apply_hf(where: tuple[ScaleSite, float], name: str, t: torch.Tensor) -> torch.Tensor:
    """A scaled, contiguous copy of HF tensor `name` under `hf_scale_for`'s answer, in its dtype."""
    s_site, s = where
    return s_site.scale_hf(name, t.detach(), s).contiguous()


def gguf_scale_for(arch: Arch, ref, suffix: str) -> float | None:
    """The factor for GGUF block tensor `suffix` (e.g. ``attn_output.weight``) at position `ref`, or None.
    Always a plain multiplication of the stored values (GGUF Gemma norms hold 1 + w)."""
    for branch, s in ref_scales(ref).items():
        if s != 1.0 and suffix in site(arch, branch).gguf:
            return s
    return None
