"""Whether bf16 pays on this machine, and what `auto` precision settings resolve to.

bf16 is fast on GPUs and on CPUs with native bf16 instructions (AVX512-BF16, AMX). On a CPU without
them (e.g. AVX2-only AMD EPYC, most laptops) PyTorch emulates bf16: measured here, one SmolLM2-135M
SFT step of the demo took over 5 minutes under bf16 autocast against about 20 s in fp32. So
`train.mixed_precision: auto` and `train.rollout_dtype: auto` choose bf16 only where it is native,
and an explicit bf16 on such a CPU is kept but warned about.
"""

from __future__ import annotations

import sys
from pathlib import Path

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True if the CPU flags (Linux /proc/cpuinfo) include a native bf16 instruction set.
    Elsewhere (no /proc/cpuinfo) we cannot tell, and answer False: fp32 is never the slow choice."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.is_file():
            return False
        cpuinfo = path.read_text(errors="replace")
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def bf16_is_fast(cuda: bool | None = None, cpuinfo: str | None = None) -> bool:
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16(cpuinfo)


def resolve_mixed_precision(value: str | None, fast_bf16: bool) -> str:
    """`train.mixed_precision`: "auto" -> "bf16" where bf16 is fast, else "no"; others unchanged."""
    value = "no" if value in (None, False) else str(value)
    if value not in ("auto", "bf16", "no", "fp32"):
        raise ValueError(f"train.mixed_precision must be auto, bf16 or no, got {value!r}")
    if value == "auto":
        return "bf16" if fast_bf16 else "no"
    return "no" if value == "fp32" else value


def resolve_rollout_dtype(value: str | None, fast_bf16: bool) -> str | None:
    """`train.rollout_dtype`: "auto" -> "bfloat16" where bf16 is fast, else None (the policy's own)."""
    if value == "auto":
        return "bfloat16" if fast_bf16 else None
    return value


def warn_if_slow_bf16(mixed_precision: str, rollout_dtype: str | None, fast_bf16: bool) -> None:
    if not fast_bf16 and (mixed_precision == "bf16" or rollout_dtype == "bfloat16"):
        print("warning: bf16 requested, but this CPU has no native bf16 (avx512_bf16/amx): it is emulated and "
              "several times slower than fp32 here; use train.mixed_precision=auto train.rollout_dtype=auto",
              file=sys.stderr, flush=True)
