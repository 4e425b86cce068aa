"""Batch sizes chosen from free accelerator memory (`--batch-size auto`).

On a GPU the starting size is estimated from the free memory of the model's devices and the memory one row of
`context_length` tokens needs in a scoring forward pass (logits in fp32 dominate for small models); a probe pass
at that size confirms it, and accelerate's `find_executable_batch_size` halves it on out-of-memory. On the CPU,
memory is rarely the limit and larger batches do not run faster, so `auto` means `CPU_BATCH_SIZE`.

The size is chosen once per model and process (and logged), so every unit of a study is scored with the same
batches.
"""

from __future__ import annotations

import weakref

import torch

from frankenlm.errors import FrankenError

AUTO = "auto"
CPU_BATCH_SIZE = 8
MAX_BATCH_SIZE = 256
MEMORY_FRACTION = 0.7  # of the free memory the estimate may plan for (the prefix cache and allocator need the rest)

_chosen: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, int]] = weakref.WeakKeyDictionary()


def parse_batch_size(value: int | str) -> int | str:
    """A positive integer, or "auto"."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v == AUTO:
            return AUTO
        if not v.isdigit():
            raise FrankenError(f"batch size {value!r} is neither a positive integer nor 'auto'")
        value = int(v)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FrankenError(f"batch size must be a positive integer or 'auto', got {value!r}")
    return value


def row_bytes(config, context_length: int, dtype: torch.dtype) -> int:
    """Upper estimate of the activation bytes one row of `context_length` tokens needs in a scoring pass."""
    b = torch.finfo(dtype).bits // 8
    vocab = int(config.vocab_size)
    hidden = int(config.hidden_size)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    t = int(context_length)
    logits = t * vocab * (b + 8)  # model logits, their fp32 copy and fp32 log-softmax
    layer = t * (3 * inter + 8 * hidden) * b  # one layer's MLP and attention intermediates (inference: one at a time)
    scores = heads * t * t * b  # attention scores, if the kernel materializes them
    return logits + layer + scores


def cuda_devices(model: torch.nn.Module) -> list[torch.device]:
    return sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)


def estimate_batch_size(free_bytes: int, per_row: int) -> int:
    """How many rows the estimate says fit in `MEMORY_FRACTION` of `free_bytes` (1..MAX_BATCH_SIZE)."""
    return max(1, min(MAX_BATCH_SIZE, int(free_bytes * MEMORY_FRACTION) // max(1, per_row)))


def largest_fitting(start: int, attempt) -> int:
    """The largest of start, start/2, start/4, ... for which `attempt(batch_size)` does not run out of memory."""
    from accelerate.utils import find_executable_batch_size

    size = start

    def halve() -> int:
        nonlocal size
        size //= 2
        return size

    @find_executable_batch_size(starting_batch_size=start, reduce_batch_size_fn=halve)
    def probe(batch_size: int) -> int:
        attempt(batch_size)
        return batch_size

    try:
        return probe()
    except RuntimeError as e:
        if "reached zero" in str(e):
            raise FrankenError(
                "not even one row fits in the free GPU memory: use a shorter --context-length, "
                "a smaller dtype or a larger GPU"
            ) from None
        raise


def auto_batch_size(model: torch.nn.Module, context_length: int) -> int:
    """The batch size for scoring rows of up to `context_length` tokens with `model` (cached per model)."""
    seen = _chosen.setdefault(model, {})
    if context_length in seen:
        return seen[context_length]
    devices = cuda_devices(model)
    if not devices:
        size = CPU_BATCH_SIZE
    else:
        free = min(torch.cuda.mem_get_info(d)[0] for d in devices)
        start = estimate_batch_size(free, row_bytes(model.config, context_length, model.dtype))
        inputs_on = model.get_input_embeddings().weight.device  # where a split model takes its input

        @torch.inference_mode()
        def attempt(n: int) -> None:
            ids = torch.zeros(n, context_length, dtype=torch.long, device=inputs_on)
            logits = model(input_ids=ids, use_cache=False).logits
            torch.log_softmax(logits.float(), dim=-1)

        size = largest_fitting(start, attempt)
    seen[context_length] = size
    return size


def resolve_batch_size(value: int | str, model: torch.nn.Module, context_length: int) -> int:
    value = parse_batch_size(value)
    return auto_batch_size(model, context_length) if value == AUTO else value
