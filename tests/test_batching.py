"""`--batch-size auto`: parsing, the memory estimate, the halving search, and the CPU rule."""

from __future__ import annotations

import pytest
import torch

from frankenlm.errors import FrankenError
from frankenlm.eval import batching
from frankenlm.eval.batching import (
    CPU_BATCH_SIZE,
    MAX_BATCH_SIZE,
    estimate_batch_size,
    largest_fitting,
    parse_batch_size,
    row_bytes,
)
from frankenlm.eval.scorer import Scorer
from tiny import tiny_model


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("AUTO", "auto"), ("16", 16), (3, 3)])
def test_parse_batch_size(value, expected):
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5", 0, -1, True, None])
def test_bad_batch_sizes_are_refused(value):
    with pytest.raises(FrankenError, match="batch size"):
        parse_batch_size(value)


def test_row_bytes_by_hand():
    m = tiny_model("llama")  # vocab 97, hidden 32, intermediate 64, 4 heads
    t = 10
    # fp32 logits + fp32 copy + fp32 log-softmax; 3 MLP and 8 hidden-size intermediates; 4 heads of t x t scores
    expected = t * 97 * (4 + 8) + t * (3 * 64 + 8 * 32) * 4 + 4 * t * t * 4
    assert row_bytes(m.config, t, torch.float32) == expected
    assert row_bytes(m.config, t, torch.bfloat16) < expected


def test_estimate_uses_a_fraction_of_free_memory_and_clamps():
    gib = 1 << 30
    assert estimate_batch_size(10 * gib, gib) == int(10 * batching.MEMORY_FRACTION)
    assert estimate_batch_size(gib // 2, gib) == 1
    assert estimate_batch_size(1 << 50, 1) == MAX_BATCH_SIZE


def test_largest_fitting_halves_on_out_of_memory():
    tried = []

    def attempt(n):
        tried.append(n)
        if n > 37:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert largest_fitting(200, attempt) == 25
    assert tried == [200, 100, 50, 25]


def test_largest_fitting_reports_when_nothing_fits_and_passes_other_errors():
    def never(n):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(FrankenError, match="not even one row fits"):
        largest_fitting(8, never)

    def broken(n):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        largest_fitting(8, broken)


def test_auto_on_the_cpu_is_the_fixed_cpu_size():
    m = tiny_model("llama")
    assert batching.auto_batch_size(m, 64) == CPU_BATCH_SIZE
    tok = type("Tok", (), {"bos_token_id": 1, "eos_token_id": 2, "decode": lambda self, ids: "<s>"})()
    assert Scorer(m, tok, batch_size="auto", max_length=64).batch_size == CPU_BATCH_SIZE
