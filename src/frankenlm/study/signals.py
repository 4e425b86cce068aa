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

from frankenlm.study.prefix_cache import hooked_forward


class SignalRecorder:
    """A forward function for the evaluator that runs the base model and accumulates per-layer signals."""

    def __init__(self, model: nn.Module):
        self.model = model
        n = int(model.config.num_hidden_layers)
        self.cos_sum = np.zeros(n)
        self.ang_sum = np.zeros(n)
        self.tokens = 0

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()

        def post(k: int, x: torch.Tensor, y: torch.Tensor) -> None:
            cos = torch.nn.functional.cosine_similarity(x.float()[mask], y.float()[mask], dim=-1).clamp(-1.0, 1.0)
            self.cos_sum[k] += float(cos.sum())
            self.ang_sum[k] += float(torch.arccos(cos).sum() / np.pi)

        logits = hooked_forward(self.model, input_ids, attention_mask, post=post)
        self.tokens += int(mask.sum())
        return logits

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
