"""Tiny randomly initialised causal LMs of the three supported families, for fast exactness tests."""

from __future__ import annotations

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ARCHS = ("llama", "qwen2", "gemma3")
DEPTH = 6
VOCAB = 97


def tiny_model(arch: str, seed: int = 0, depth: int = DEPTH, hidden: int = 32, intermediate: int = 64):
    """A tiny fp32 model; gemma3 gets a 4-token sliding window and mixed layer types."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    if arch == "llama":
        m = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    elif arch == "qwen2":
        m = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))
    elif arch == "gemma3":
        types = ["sliding_attention" if (i % 3) != 2 else "full_attention" for i in range(depth)]
        cfg = Gemma3TextConfig(**common, head_dim=8, sliding_window=4, layer_types=types)
        m = Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    # random init leaves norms at 1/0: perturb every tensor so that errors in wiring show
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.config._attn_implementation = "eager"
    return m.eval().requires_grad_(False)


def random_ids(n: int = 20, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, n), generator=g)


def cached_logits(model, ids: torch.Tensor, prefill: int = 5) -> torch.Tensor:
    """Logits from a prefill of `prefill` tokens, then one token at a time through the KV cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids[:, :prefill], cache=cache, use_cache=True)
    chunks = [out.logits]
    cache = out.cache
    for t in range(prefill, ids.shape[1]):
        out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
        cache = out.cache
        chunks.append(out.logits)
    return torch.cat(chunks, dim=1)
