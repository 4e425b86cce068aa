"""The architecture registry: every name it holds exists in real transformers modules of its family, and the
GGUF names are those of gguf's own tensor-name map."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig

from frankenlm.errors import FrankenError
from frankenlm.model.arch import GEMMA3, LLAMA, QWEN2, arch_of, gemma3_gguf_layer_type
from frankenlm.model.frankenmodel import decoder_layers
from tiny import ARCHS, tiny_model

EXPECTED = {"llama": LLAMA, "qwen2": QWEN2, "gemma3": GEMMA3}


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_of_models_configs_and_names(arch):
    m = tiny_model(arch)
    assert arch_of(m) is EXPECTED[arch]
    assert arch_of(m.config) is EXPECTED[arch]
    assert arch_of(m.config.model_type) is EXPECTED[arch]


def test_mistral_reuses_llama():
    assert arch_of(MistralConfig()) is LLAMA


def test_unsupported_model_type_is_one_clear_error():
    with pytest.raises(FrankenError, match=r"unsupported architecture 'gpt2'.*supports model types"):
        arch_of(GPT2Config())
    tiny_gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=8))
    with pytest.raises(FrankenError, match="unsupported architecture 'gpt2'"):
        decoder_layers(tiny_gpt2)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_registered_module_and_tensor_exists(arch):
    m = tiny_model(arch)
    a = arch_of(m)
    assert m.get_submodule(a.layers) is decoder_layers(m)
    m.get_submodule(a.final_norm)
    layer = decoder_layers(m)[0]
    names = {n for n, _ in layer.named_parameters()}
    for attr in (a.attn, a.mlp, *a.attn_norms, *a.mlp_norms):
        assert isinstance(getattr(layer, attr), torch.nn.Module), attr
    # every norm of the layer belongs to exactly one branch
    norms = {n for n, _ in layer.named_children() if "norm" in n}
    assert norms == set(a.attn_norms) | set(a.mlp_norms) and not set(a.attn_norms) & set(a.mlp_norms)
    for hf_prefix, _ in a.zeroed.values():
        assert any(n.startswith(hf_prefix) for n in names), hf_prefix
    for site in (a.attn_scale, a.mlp_scale, a.qk_scale):
        layer.get_submodule(site.module)
        assert site.tensors[0] in names, site
    assert isinstance(getattr(layer.get_submodule(a.qk_scale.module), a.qk_attr), float)


@pytest.mark.parametrize("arch", ARCHS)
def test_gguf_names_are_ggufs_own(arch):
    gguf = pytest.importorskip("gguf")
    a = arch_of(tiny_model(arch))
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == a.name), 2)
    pairs = [(hf, g) for s in (a.attn_scale, a.mlp_scale, a.qk_scale) for hf, g in zip(s.tensors, s.gguf)]
    pairs += [(hf + "weight", g + "weight") for hf, g in a.zeroed.values()]
    for hf, g in pairs:
        assert names.get_name(f"model.layers.1.{hf}", try_suffixes=(".weight", ".bias")) == f"blk.1.{g}", (hf, g)


def test_gemma3_gguf_layer_type_rule():
    assert [gemma3_gguf_layer_type(i) for i in range(12)] == (["sliding_attention"] * 5 + ["full_attention"]) * 2
    assert GEMMA3.gguf_layer_type is gemma3_gguf_layer_type and LLAMA.gguf_layer_type is None
    # the same rule transformers' Gemma3TextConfig uses when no layer_types are given (as after a GGUF load)
    from transformers import Gemma3TextConfig

    cfg = Gemma3TextConfig(num_hidden_layers=12)
    assert list(cfg.layer_types) == [gemma3_gguf_layer_type(i) for i in range(12)]
