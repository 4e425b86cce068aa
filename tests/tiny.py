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
# the plan kinds every exactness test covers (depth-6 models; "b:" is a second model of the same arch)
PLANS = {
    "repeat_block": "0..3,2..5",
    "repeat_layer": "0..2,2*3,3..5",
    "attn_only": "0..2,2.attn*2,3..5",
    "mlp_only": "0.mlp,0..3,1.mlp,4..5",
    "two_source": "0..2,b:2..5",
}
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


def _scale_(t: torch.Tensor, s: float, offset: bool) -> None:
    with torch.no_grad():
        t.copy_(s * (1 + t) - 1 if offset else s * t)


def materialized_copy(sources, plan):
    """A plan's meaning built by hand, without frankenlm's model code: a deep copy of the head source whose
    decoder layers are deep copies of the source layers (each with its own ``layer_idx``; gemma3's layer types
    remapped), sublayer positions with the other branch's output projection zeroed, and scales multiplied into
    the weights: llama/qwen2 ``o_proj`` (attention), ``down_proj`` (MLP), ``q_proj`` weight and bias (QK);
    gemma3 the post-norms ``post_attention_layernorm`` / ``post_feedforward_layernorm`` and ``q_norm`` as
    ``w' = s * (1 + w) - 1`` (HF stores gemma norms without their +1 offset). Plain transformers runs it."""
    import copy

    from torch import nn

    from frankenlm.model.plan import coerce_plan

    srcs = sources if isinstance(sources, dict) else {None: sources}
    head = srcs[None]
    plan = coerce_plan(plan)
    gemma = head.config.model_type.startswith("gemma3")
    ref = copy.deepcopy(head)
    ref.config.num_hidden_layers = len(plan)
    if getattr(ref.config, "layer_types", None) is not None:
        ref.config.layer_types = [srcs[r.source].config.layer_types[r.layer] for r in plan]
    layers = []
    for pos, r in enumerate(plan):
        layer = copy.deepcopy(srcs[r.source].model.layers[r.layer])
        layer.self_attn.layer_idx = pos
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = pos
        at, ml = layer.self_attn, layer.mlp
        zeroed = {"attn": ml.down_proj, "mlp": at.o_proj}.get(r.sublayer)
        for p in zeroed.parameters() if zeroed is not None else ():
            with torch.no_grad():
                p.zero_()
        if gemma:
            _scale_(layer.post_attention_layernorm.weight, r.attn_scale, True)
            _scale_(layer.post_feedforward_layernorm.weight, r.mlp_scale, True)
            _scale_(at.q_norm.weight, r.qk_scale, True)
        else:
            for p in at.o_proj.parameters():
                _scale_(p, r.attn_scale, False)
            for p in ml.down_proj.parameters():
                _scale_(p, r.mlp_scale, False)
            for p in at.q_proj.parameters():  # weight and (qwen2) bias
                _scale_(p, r.qk_scale, False)
        layers.append(layer)
    ref.model.layers = nn.ModuleList(layers)
    return ref.eval()


# ------------------------------------------------------------------------------------------ GGUF round trips


def tiny_model_gguf_ready(arch: str, seed: int = 0, depth: int = DEPTH):
    """Like `tiny_model`, but with every config value a GGUF can carry: gemma3 gets the layer types a GGUF
    reader infers from the layer index (every 6th layer full attention) instead of tiny_model's period of 3."""
    if arch != "gemma3":
        return tiny_model(arch, seed=seed, depth=depth)
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        head_dim=8,
        sliding_window=4,
    )
    m = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.config._attn_implementation = "eager"
    return m.eval().requires_grad_(False)


def _llama_permute(w, n_head: int):
    """llama.cpp's convert_hf_to_gguf q/k permutation (the inverse of transformers' `_reverse_permute_weights`)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(model, path) -> None:
    """Write a tiny llama/qwen2/gemma3 model as an F32 GGUF the way llama.cpp's converter would: gguf's tensor
    name map, llama's q/k permutation, gemma's norm weights stored as 1 + w, no tokenizer."""
    import gguf

    cfg = model.config
    arch = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}[cfg.model_type]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_string("general.name", f"tiny-{arch}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    rope = cfg.rope_parameters
    if arch == "gemma3":
        w.add_rope_freq_base(rope["full_attention"]["rope_theta"])
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_sliding_window(cfg.sliding_window)
    else:
        w.add_rope_freq_base(rope["rope_theta"])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    names = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), cfg.num_hidden_layers
    )
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gname is not None, name
        a = t.detach().float().numpy().copy()
        if arch == "llama" and ".attn_q." in gname:
            a = _llama_permute(a, cfg.num_attention_heads)
        elif arch == "llama" and ".attn_k." in gname:
            a = _llama_permute(a, cfg.num_key_value_heads)
        if arch == "gemma3" and "norm.weight" in gname:
            a = a + 1.0
        w.add_tensor(gname, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def load_gguf(path, dtype=torch.float32):
    """Load a GGUF file with plain transformers (dequantized), eager attention, eval mode."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    p = Path(path)
    m = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dtype)
    if getattr(m, "hf_quantizer", None) is not None:
        del m.hf_quantizer
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.config._attn_implementation = "eager"
    return m.eval().requires_grad_(False)


def sources_for(bases: dict, arch: str, plan_name: str):
    """The `bases` fixture's sources a plan needs: both models for the two-source plan, else the default."""
    return bases[arch] if plan_name == "two_source" else bases[arch][None]
