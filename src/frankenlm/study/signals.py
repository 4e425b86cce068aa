"""Cheap per-layer signals from the base model's hidden states, used to guide the `search` design and checked
against measured gains in the report.

* block influence (ShortGPT): BI_l = 1 - mean cos(x_l, x_{l+1}), x_l the hidden state entering layer l;
* angular distance of one layer (Gromov et al.): mean arccos(cos(x_l, x_{l+1})) / pi.

Both are averaged over the real (non-padding) tokens of the items the forward pass sees.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from frankenlm.eval.packing import PackedBatch, model_inputs
from frankenlm.study.prefix_cache import hooked_hidden


class SignalRecorder:
    """A hidden-state function for the scorer (`frankenlm.eval.packing.HiddenFn`) that runs the base model and
    accumulates per-layer signals over the batch's real tokens (a packed context counts once)."""

    def __init__(self, model: nn.Module):
        self.model = model
        n = int(model.config.num_hidden_layers)
        self.cos_sum = np.zeros(n)
        self.ang_sum = np.zeros(n)
        self.tokens = 0

    @torch.inference_mode()
    def __call__(self, batch: PackedBatch) -> torch.Tensor:
        device = self.model.get_input_embeddings().weight.device
        mask = (batch.segment_ids >= 0).to(device)

        def post(k: int, x: torch.Tensor, y: torch.Tensor) -> None:
            cos = torch.nn.functional.cosine_similarity(x.float()[mask], y.float()[mask], dim=-1).clamp(-1.0, 1.0)
            self.cos_sum[k] += float(cos.sum())
            self.ang_sum[k] += float(torch.arccos(cos).sum() / np.pi)

        hidden = hooked_hidden(self.model, model_inputs(self.model.config, batch, device), post=post)
        self.tokens += int(mask.sum())
        return hidden

    def result(self) -> dict[str, list[float]]:
        t = max(self.tokens, 1)
        return {
            "block_influence": (1.0 - self.cos_sum / t).tolist(),
            "angular_distance": (self.ang_sum / t).tolist(),
            "tokens": self.tokens,
        }


def rank_correlation(signal: list[float], gains: dict[int, float]) -> dict:
    """Spearman correlation between a per-layer signal and measured gains of single-layer repeats."""
    from scipy.stats import spearmanr

    layers = sorted(k for k, g in gains.items() if np.isfinite(g))
    if len(layers) < 3:
        return {"n": len(layers), "rho": float("nan"), "p_value": float("nan")}
    r = spearmanr([signal[k] for k in layers], [gains[k] for k in layers])
    return {"n": len(layers), "rho": float(r.statistic), "p_value": float(r.pvalue)}
