"""What a frankenmodel costs: parameters (unique vs effective), FLOPs per token, KV-cache bytes per token.

All figures are computed from the plan and the base model's modules, not estimated from names: a position
counts the parameters of the modules it actually runs (which norms belong to which branch is an architecture
fact, `frankenlm.model.arch`). Branch and QK scales (healed repeats) cost nothing measurable: the FLOPs are those
of the unscaled plan, and `scaled_positions` counts the positions that carry a scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from frankenlm.model.arch import Arch, arch_of
from frankenlm.model.frankenmodel import decoder_layers, storage_ptrs
from frankenlm.model.plan import LayerPlan, coerce_plan


@dataclass(frozen=True)
class Costs:
    depth: int
    unique_params: int  # parameters stored (base and frankenmodel together)
    effective_params: int  # parameters a token passes through (embedding counted once, head if untied)
    extra_param_bytes: int  # bytes of parameter storage the frankenmodel adds to its base(s)
    flops_per_token: float  # forward FLOPs per token at `context` tokens of context (matmuls + attention)
    kv_bytes_per_token: int  # KV-cache bytes per token of context
    context: int
    scaled_positions: int = 0  # positions with a branch or QK scale (no effect on the figures above)

    def as_dict(self) -> dict:
        """The fields as a dict; `scaled_positions` only when non-zero, so plain plans' records are unchanged."""
        d = asdict(self)
        if not d["scaled_positions"]:
            del d["scaled_positions"]
        return d


def _numel(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


def _matmul_params(m: nn.Module | None) -> int:
    """Parameters of the Linear layers (those cost 2 FLOPs per parameter per token)."""
    if m is None:
        return 0
    return sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, nn.Linear))


def _position_modules(layer: nn.Module, sublayer: str, arch: Arch) -> list[nn.Module]:
    """The modules of a source layer that a position with this sublayer runs (its branch's norms included)."""
    if sublayer == "attn":
        return [getattr(layer, arch.attn), *(getattr(layer, n) for n in arch.attn_norms)]
    if sublayer == "mlp":
        return [getattr(layer, arch.mlp), *(getattr(layer, n) for n in arch.mlp_norms)]
    return [layer]


def _attn_shape(cfg) -> tuple[int, int, int]:
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return heads, kv, head_dim


def plan_costs(
    base: nn.Module | Mapping[str | None, nn.Module],
    plan: LayerPlan | str | None = None,
    frankenmodel: nn.Module | None = None,
    context: int = 2048,
    dtype: torch.dtype | None = None,
) -> Costs:
    """Costs of `plan` on `base` (the base itself when plan is None)."""
    sources = dict(base) if isinstance(base, Mapping) else {None: base}
    head = sources[None]
    plan = coerce_plan(plan) if plan is not None else coerce_plan(range(int(head.config.num_hidden_layers)))
    cfg = head.config
    heads, kv, head_dim = _attn_shape(cfg)
    elt = torch.empty((), dtype=dtype or head.dtype).element_size()
    window = getattr(cfg, "sliding_window", None)

    emb = head.get_input_embeddings()
    out = head.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.weight.data_ptr()
    effective = _numel(emb) + (0 if tied else _numel(out))
    flops = 2.0 * (out.weight.numel() if out is not None else 0)
    norm = getattr(getattr(head, "model", None), "norm", None)
    effective += _numel(norm)
    kv_bytes = 0
    for r in plan:
        src = sources[r.source]
        layer = decoder_layers(src)[r.layer]
        mods = _position_modules(layer, r.sublayer, arch_of(src))
        effective += sum(_numel(m) for m in mods)
        flops += 2.0 * sum(_matmul_params(m) for m in mods)
        types = getattr(src.config, "layer_types", None)
        if r.sublayer in ("block", "attn"):
            span = context
            if types is not None and types[r.layer] == "sliding_attention" and window:
                span = min(context, int(window))
            # QK^T and AV: 2 FLOPs each per (query, key, head_dim) pair; average key span for causal ≈ span/2
            flops += 4.0 * heads * head_dim * (span / 2 if span == context else span)
            kv_bytes += 2 * kv * head_dim * elt
        else:
            kv_bytes += 2 * elt  # the one-value placeholder ZeroAttention keeps per token
    models = list(sources.values())
    base_store = storage_ptrs(*models)
    both = storage_ptrs(*models, frankenmodel) if frankenmodel is not None else base_store
    unique = sum(p.numel() for p in {id(p): p for m in models for p in m.parameters()}.values())
    return Costs(
        depth=len(plan),
        unique_params=unique,
        effective_params=int(effective),
        extra_param_bytes=sum(both.values()) - sum(base_store.values()),
        flops_per_token=flops,
        kv_bytes_per_token=int(kv_bytes),
        context=context,
        scaled_positions=sum(1 for r in plan if r.is_scaled),
    )
