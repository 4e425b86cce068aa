"""Prefix reuse: hidden states before the first layer a plan changes come from the base model's pass.

A plan whose first k positions are the base's layers 0..k-1 computes exactly what the base computes up to
layer k. `PrefixCache.base_forward` runs the base model once per input batch and keeps the hidden state
entering each needed layer; `forward_for(plan)` then runs only the plan's suffix (a zero-copy frankenmodel of
positions k..end fed with `inputs_embeds` = that state). Every other input (positions, masks, per-layer
attention types) is the same, so the logits are identical to a full forward pass of the frankenmodel.

When nobody needs the base's own outputs (a resumed slice whose base unit is stored), a plan's first call on a
batch records the states itself, in a base pass cut short at the deepest boundary: no later layer, no head.
"""

from __future__ import annotations

import hashlib
import time

import torch
from torch import nn

from frankenlm.eval.forward import ForwardFn as Forward
from frankenlm.eval.forward import plain_forward
from frankenlm.eval.packing import HiddenFn, PackedBatch, decoder_hidden, model_inputs, output_head
from frankenlm.model.frankenmodel import build_frankenmodel, decoder_layers
from frankenlm.model.plan import LayerPlan, LayerRef


def base_prefix_length(plan: LayerPlan) -> int:
    """How many leading positions equal the base model's layers 0..k-1 (whole blocks, default source)."""
    k = 0
    for pos, r in enumerate(plan.refs):
        if r != LayerRef(pos):
            break
        k += 1
    return min(k, len(plan) - 1)  # keep at least one position to run


def _key(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().numpy().tobytes())
        h.update(str(tuple(t.shape)).encode())
    return h.hexdigest()


def hooked_hidden(model: nn.Module, inputs: dict, *, layers=None, pre=None, post=None) -> torch.Tensor:
    """Final hidden states (after the final norm) of one plain pass of `model`'s decoder on `inputs` (its keyword
    arguments), with temporary hooks on decoder layers (all, or the indices in `layers`): `pre(k, hidden_in)`
    before layer k runs, `post(k, hidden_in, hidden_out)` after it."""
    handles = []
    for k, layer in enumerate(decoder_layers(model)):
        if layers is not None and k not in layers:
            continue
        if pre is not None:
            handles.append(
                layer.register_forward_pre_hook(
                    lambda mod, args, kwargs, k=k: pre(k, args[0] if args else kwargs["hidden_states"]),
                    with_kwargs=True,
                )
            )
        if post is not None:
            handles.append(
                layer.register_forward_hook(
                    lambda mod, args, kwargs, out, k=k: post(
                        k, args[0] if args else kwargs["hidden_states"], out[0] if isinstance(out, tuple) else out
                    ),
                    with_kwargs=True,
                )
            )
    try:
        return model.get_decoder()(**inputs, use_cache=False).last_hidden_state
    finally:
        for h in handles:
            h.remove()


class _StatesRecorded(Exception):
    """Stops a states-only base pass once the deepest boundary's state is recorded."""


def _device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


class PrefixCache:
    """Hidden states of the base model entering the layers in `boundaries`, per input batch.

    Two waists over the same states: `base_hidden` / `hidden_for(plan)` take a `PackedBatch` and return final
    hidden states (fast scoring: the caller runs the head where it scores), `base_forward` / `forward_for(plan)`
    take (input_ids, attention_mask) and return logits (lm-eval's layout).
    """

    def __init__(self, base: nn.Module, boundaries: set[int] | None = None):
        self.base = base
        depth = int(base.config.num_hidden_layers)
        self.depth = depth
        self.head = output_head(base)
        # states are recorded entering layers 0..depth-1; a longer shared prefix reuses the last of them
        self.boundaries = set(range(depth)) if boundaries is None else {min(b, depth - 1) for b in boundaries}
        self.states: dict[str, dict[int, torch.Tensor]] = {}
        self._suffix_models: dict[str, nn.Module] = {}
        self.states_seconds = 0.0  # time in states-only base passes (`_record`), not in any plan's own work

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in self.states.values() for t in d.values())

    def _record(self, key: str, inputs: dict, *, states_only: bool = False) -> torch.Tensor | None:
        """Runs the base on `inputs`, recording the state entering each boundary layer, and returns its final
        hidden states; `states_only` stops entering the deepest boundary (the base's later layers and head do not
        run: its outputs are not wanted) and returns None, its time counted in `states_seconds`."""
        captured: dict[int, torch.Tensor] = {}
        deepest = max(self.boundaries) if states_only else None

        def pre(k: int, h: torch.Tensor) -> None:
            captured[k] = h.detach().clone()
            if k == deepest:
                raise _StatesRecorded

        t0 = time.perf_counter()
        try:
            hidden = hooked_hidden(self.base, inputs, layers=self.boundaries, pre=pre)
        except _StatesRecorded:
            hidden = None
        self.states[key] = captured
        if states_only:
            self.states_seconds += time.perf_counter() - t0
        return hidden

    @torch.inference_mode()
    def base_hidden(self, batch: PackedBatch) -> torch.Tensor:
        """The base model's final hidden states on `batch`; records the state entering each boundary layer."""
        return self._record(batch.key_digest(), model_inputs(self.base.config, batch, _device(self.base)))

    @torch.inference_mode()
    def base_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The base model's logits; records the hidden state entering each boundary layer."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.head(self._record(_key(input_ids, attention_mask), inputs))

    def suffix_model(self, plan: LayerPlan, k: int) -> nn.Module:
        key = f"{plan}@{k}"
        if key not in self._suffix_models:
            self._suffix_models.clear()  # one plan at a time: models are cheap views
            self._suffix_models[key] = build_frankenmodel(self.base, LayerPlan(plan.refs[k:]))
        return self._suffix_models[key]

    def _prefix(self, plan: LayerPlan) -> int:
        k = min(base_prefix_length(plan), self.depth - 1)
        usable = [b for b in self.boundaries if b <= k]
        return max(usable) if usable else 0

    def hidden_for(self, plan: LayerPlan) -> tuple[HiddenFn, int]:
        """A hidden-state function for `plan` reusing cached base states; also the prefix length used."""
        k = self._prefix(plan)
        if k == 0:
            return decoder_hidden(build_frankenmodel(self.base, plan)), 0
        suffix = self.suffix_model(plan, k)

        @torch.inference_mode()
        def hidden(batch: PackedBatch) -> torch.Tensor:
            key = batch.key_digest()
            if key not in self.states:
                self._record(key, model_inputs(self.base.config, batch, _device(self.base)), states_only=True)
            inputs = model_inputs(suffix.config, batch, _device(self.base))
            del inputs["input_ids"]
            return suffix.get_decoder()(inputs_embeds=self.states[key][k], **inputs, use_cache=False).last_hidden_state

        return hidden, k

    def forward_for(self, plan: LayerPlan) -> tuple[Forward, int]:
        """A logits forward function for `plan` that reuses cached base states; also the prefix length used."""
        k = self._prefix(plan)
        if k == 0:
            return plain_forward(build_frankenmodel(self.base, plan)), 0
        suffix = self.suffix_model(plan, k)

        @torch.inference_mode()
        def fwd(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            key = _key(input_ids, attention_mask)
            if key not in self.states:
                self._record(key, {"input_ids": input_ids, "attention_mask": attention_mask}, states_only=True)
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
