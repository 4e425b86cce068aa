"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch

# ---------------------------------------------------------------------------------------------------------
# evaluation fixtures (tasks / evaluator / lm-eval agreement tests)


@pytest.fixture(scope="session")
def smollm2():
    """The real pretrained SmolLM2-135M (fp32, CPU) and its tokenizer, loaded once per session."""
    from frankenlm.model.loading import load_model

    return load_model("smollm2-135m", dtype=torch.float32, device="cpu")


def _bpe_tokenizer(add_bos: bool):
    """A small byte-level BPE tokenizer trained on Python help texts; `add_bos` makes it prepend <bos> (gemma-like)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([topics[k] for k in sorted(topics)[:20]], trainer)
    if add_bos:
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="session", params=[False, True], ids=["no-bos", "adds-bos"])
def tiny_lm(request):
    """(model, tokenizer): a random 2-layer llama over a 400-token BPE vocabulary; the tokenizer adds no BOS
    (llama/qwen-like) or prepends <bos> (gemma-like)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _bpe_tokenizer(request.param)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # random init is nearly uniform: sharpen it so that argmax/greedy checks mean something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval().requires_grad_(False), tokenizer


@pytest.fixture(scope="session")
def lmeval_task():
    """Factory: frankenlm task name (or `mmlu_<subject>`) -> lm-eval's own `ConfigurableTask` over the local rows
    (`frankenlm.eval.lmeval_tasks.local_task`; a fresh object per call, so tests may build requests on it)."""
    pytest.importorskip("lm_eval")
    from frankenlm.eval.lmeval_tasks import local_task

    def build(name: str):
        return local_task.__wrapped__(name)

    return build


# ---------------------------------------------------------------------------------------------------------
# frankenmodel / export fixtures: tiny random models of every supported family


@pytest.fixture(scope="module")
def bases():
    """arch → {None: tiny model (seed 0), 'b': another tiny model of the same arch (seed 1)}."""
    from tiny import ARCHS, tiny_model

    return {arch: {None: tiny_model(arch, seed=0), "b": tiny_model(arch, seed=1)} for arch in ARCHS}


@pytest.fixture(scope="module")
def ids():
    from tiny import random_ids

    return random_ids(20)
