"""Greedy, KV-cached text generation that stops on every end-of-turn token a model uses."""

from __future__ import annotations

import torch


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the end-of-turn tokens models use besides it (Qwen's <|im_end|> and <|endoftext|>, etc.)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    for tok in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>"):
        if tok in vocab:
            ids.add(vocab[tok])
    return sorted(ids)


def encode_prompt(tokenizer, prompt: str, chat: bool = False) -> torch.Tensor:
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
        )
        return ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    return tokenizer(prompt, return_tensors="pt").input_ids


@torch.inference_mode()
def greedy_generate(model, tokenizer, prompt: str, max_new_tokens: int = 64, chat: bool = False) -> str:
    """Greedy continuation of `prompt` (the prompt is not repeated in the returned text)."""
    ids = encode_prompt(tokenizer, prompt, chat).to(model.device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
