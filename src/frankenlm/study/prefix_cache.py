"""Prefix reuse: hidden states before the first layer a plan changes come from the base model's pass.

A plan whose first k positions are the base's layers 0..k-1 computes exactly what the base computes up to
layer k. `PrefixCache.base_forward` runs the base model once per input batch and keeps the hidden state
entering each needed layer; `forward_for(plan)` then runs only the plan's suffix (a zero-copy frankenmodel of
positions k..end fed with `inputs_embeds` = that state). Every other input (positions, masks, per-layer
attention types) is the same, so the logits are identical to a full forward pass of the frankenmodel.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch
from torch import nn

from frankenlm.model.frankenmodel import build_frankenmodel, decoder_layers
from frankenlm.model.plan import LayerPlan, LayerRef

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def base_prefix_length(plan: LayerPlan) -> int:
    """How many leading positions equal the base model's layers 0..k-1 (whole blocks, default source)."""
    k = 0
    for pos, r in enumerate(plan.refs):
        if r != LayerRef(pos):
            break
        k += 1
    return min(k, len(plan) - 1)  # keep at least one position to run


def batch_key(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> str:
    h = hashlib.sha1(input_ids.detach().cpu().numpy().tobytes())
    h.update(str(tuple(input_ids.shape)).encode())
    if attention_mask is not None:
        h.update(attention_mask.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def hooked_forward(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, layers=None,
                   pre=None, post=None) -> torch.Tensor:
    """Logits of one plain forward pass with temporary hooks on decoder layers (all, or the indices in
    `layers`): `pre(k, hidden_in)` before layer k runs, `post(k, hidden_in, hidden_out)` after it."""
    handles = []
    for k, layer in enumerate(decoder_layers(model)):
        if layers is not None and k not in layers:
            continue
        if pre is not None:
            handles.append(layer.register_forward_pre_hook(
                lambda mod, args, kwargs, k=k: pre(k, args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
        if post is not None:
            handles.append(layer.register_forward_hook(
                lambda mod, args, kwargs, out, k=k: post(k, args[0] if args else kwargs["hidden_states"],
                                                          out[0] if isinstance(out, tuple) else out),
                with_kwargs=True))
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()


def plain_forward(model: nn.Module) -> Forward:
    def fwd(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return fwd


class PrefixCache:
    """Hidden states of the base model entering the layers in `boundaries`, per input batch."""

    def __init__(self, base: nn.Module, boundaries: set[int] | None = None):
        self.base = base
        depth = int(base.config.num_hidden_layers)
        self.depth = depth
        # states are recorded entering layers 0..depth-1; a longer shared prefix reuses the last of them
        self.boundaries = set(range(depth)) if boundaries is None else {min(b, depth - 1) for b in boundaries}
        self.states: dict[str, dict[int, torch.Tensor]] = {}
        self._suffix_models: dict[str, nn.Module] = {}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in self.states.values() for t in d.values())

    @torch.inference_mode()
    def base_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The base model's logits; records the hidden state entering each boundary layer."""
        captured: dict[int, torch.Tensor] = {}
        logits = hooked_forward(self.base, input_ids, attention_mask, layers=self.boundaries,
                                pre=lambda k, h: captured.__setitem__(k, h.detach().clone()))
        self.states[batch_key(input_ids, attention_mask)] = captured
        return logits

    def suffix_model(self, plan: LayerPlan, k: int) -> nn.Module:
        key = f"{plan}@{k}"
        if key not in self._suffix_models:
            self._suffix_models.clear()  # one plan at a time: models are cheap views
            self._suffix_models[key] = build_frankenmodel(self.base, LayerPlan(plan.refs[k:]))
        return self._suffix_models[key]

    def forward_for(self, plan: LayerPlan) -> tuple[Forward, int]:
        """A forward function for `plan` that reuses cached base states; also returns the prefix length used."""
        k = min(base_prefix_length(plan), self.depth - 1)
        usable = [b for b in self.boundaries if b <= k]
        k = max(usable) if usable else 0
        if k == 0:
            fm = build_frankenmodel(self.base, plan)
            return plain_forward(fm), 0
        suffix = self.suffix_model(plan, k)

        @torch.inference_mode()
        def fwd(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            key = batch_key(input_ids, attention_mask)
            if key not in self.states:
                self.base_forward(input_ids, attention_mask)
            h = self.states[key][k]
            return suffix(inputs_embeds=h, attention_mask=attention_mask, use_cache=False).logits

        return fwd, k

    def drop_boundaries(self, keep: set[int]) -> None:
        """Free states of boundaries no remaining plan needs."""
        keep = {min(b, self.depth - 1) for b in keep}
        for d in self.states.values():
            for b in list(d):
                if b not in keep:
                    del d[b]
        self.boundaries &= set(keep)
