"""The arithmetic a device computes with: the kind of kernels its matrix products run on.

Two machines that both say "cpu" can give different numbers for the same model, plan and items. In bf16 the
kernels differ by instruction set: a CPU with AVX512-BF16 multiplies bf16 in hardware, one with only AVX2 emulates
it (6x slower per matmul, 10x per stored unit, and rounded differently). Measured on one stored unit (SmolLM2-135M,
26 LAMBADA passages, bf16, `0..2,2@0.25,3..29` against the base) recomputed on an AVX2-only CPU: passages'
log-likelihoods moved by up to 1.2 nats, the configuration's mean by 0.12 nats and the base's by 0.03, so a gain
paired across the two machines was off by 0.6 milli-bits per byte, a quarter of the largest gain that model shows
(+2.6); thread count changed nothing, and in fp32 the same unit moved by at most 0.001 nats. So the kind is part of
what determines a stored unit (`frankenlm.study.store`), like the device type and the batch layout, and a study is
resumed only on a machine of the kind it started on.
"""

from __future__ import annotations

import torch

# the kind every unit stored before kinds were recorded was computed on (their keys carry no kind): the
# findings machines (AVX512-BF16, no AMX: measured 820 GFLOP/s bf16 and 190 fp32 on 2 cores, see OFFLINE.md),
# whose per-unit times in every committed archive agree (an AVX2 machine takes ~10x as long per bf16 unit)
HISTORIC_CPU_KIND = "cpu-avx512_bf16"

# CPU features that change which bf16/fp32 matmul kernels run, most capable first (torch.cpu probes)
_CPU_FEATURES = (
    ("amx_bf16", "_is_amx_tile_supported"),
    ("avx512_bf16", "_is_avx512_bf16_supported"),
    ("avx512", "_is_avx512_supported"),
    ("avx2", "_is_avx2_supported"),
)


# CPU kinds without bf16 matrix instructions: a bf16 matmul is emulated (measured on an AVX2 EPYC, 2 threads:
# 17-20 GFLOP/s in bf16 against 97-139 in fp32, for the shapes of these models' layers and output heads)
SLOW_BF16_KINDS = frozenset({"cpu-avx2", "cpu-default"})


def cpu_kind() -> str:
    """This machine's CPU kind, e.g. "cpu-avx512_bf16" or "cpu-avx2"."""
    for name, probe in _CPU_FEATURES:
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return f"cpu-{name}"
    return f"cpu-{torch.backends.cpu.get_cpu_capability().lower().replace(' ', '_')}"


def arithmetic_kind(device: torch.device | str) -> str:
    """The kind of arithmetic `device` computes with: the CPU kind, or the GPU's architecture ("cuda-sm90")."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}"
    return cpu_kind()
