"""`auto` precision: bf16 only where it is native (emulated bf16 on an AVX2 CPU is many times slower)."""

import pytest

from pact_cotrain.training.precision import (cpu_has_native_bf16, resolve_mixed_precision, resolve_rollout_dtype,
                                             warn_if_slow_bf16)

AVX2_ONLY = "processor : 0\nflags : fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert not cpu_has_native_bf16(AVX2_ONLY)
    assert cpu_has_native_bf16(SAPPHIRE)
    assert not cpu_has_native_bf16("")


def test_auto_resolves_by_what_is_fast_and_explicit_values_are_kept():
    assert resolve_mixed_precision("auto", fast_bf16=False) == "no"
    assert resolve_mixed_precision("auto", fast_bf16=True) == "bf16"
    assert resolve_mixed_precision("bf16", fast_bf16=False) == "bf16"
    assert resolve_mixed_precision(None, fast_bf16=True) == "no"
    assert resolve_rollout_dtype("auto", fast_bf16=False) is None
    assert resolve_rollout_dtype("auto", fast_bf16=True) == "bfloat16"
    assert resolve_rollout_dtype("float32", fast_bf16=True) == "float32"
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve_mixed_precision("fp16x", fast_bf16=True)


def test_explicit_bf16_on_a_cpu_without_it_is_warned(capsys):
    warn_if_slow_bf16("bf16", None, fast_bf16=False)
    assert "no native bf16" in capsys.readouterr().err
    warn_if_slow_bf16("bf16", "bfloat16", fast_bf16=True)
    assert capsys.readouterr().err == ""
