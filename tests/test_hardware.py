"""The one decision of what ``auto`` precision means: override, GPU, CPU flags."""

from __future__ import annotations

import pytest

from calm_rag.errors import InputError
from calm_rag.runtime.hardware import ENV_VAR, auto_precision, cpu_bf16_flags, resolve_dtype

AVX2_ONLY = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2
"""
BF16_CPU = AVX2_ONLY.replace("avx2 fma", "avx2 avx512f avx512_bf16 fma")
AMX_CPU = AVX2_ONLY.replace("bmi2", "bmi2 amx_tile amx_bf16 amx_int8")
# A flag's name elsewhere than on a flags line (a model name) does not count.
NAMED_ONLY = "model name\t: imaginary avx512_bf16 edition\nflags\t\t: avx2\n"


def test_cpuinfo_flags_are_read_from_the_flags_lines():
    assert cpu_bf16_flags(AVX2_ONLY) == []
    assert cpu_bf16_flags(BF16_CPU) == ["avx512_bf16"]
    assert cpu_bf16_flags(AMX_CPU) == ["amx_bf16"]
    assert cpu_bf16_flags(NAMED_ONLY) == []
    assert cpu_bf16_flags("") == []


@pytest.mark.parametrize("cpuinfo, bf16", [(AVX2_ONLY, False), (BF16_CPU, True),
                                          (AMX_CPU, True), (NAMED_ONLY, False)])
def test_the_cpu_decides_without_an_override(cpuinfo, bf16):
    chosen = auto_precision(environ={}, cpuinfo=cpuinfo, gpu=False)
    assert chosen.bf16 is bf16
    assert chosen.dtype == ("bfloat16" if bf16 else "float32")
    assert ("avx512_bf16" in chosen.reason or "amx_bf16" in chosen.reason)
    assert chosen.to_dict() == {"auto_dtype": chosen.dtype, "reason": chosen.reason}


@pytest.mark.parametrize("value", ["0", "false", "off", " no "])
def test_the_override_turns_bf16_off_on_a_bf16_cpu(value):
    chosen = auto_precision(environ={ENV_VAR: value}, cpuinfo=BF16_CPU, gpu=False)
    assert (chosen.bf16, chosen.dtype) == (False, "float32")
    assert ENV_VAR in chosen.reason


@pytest.mark.parametrize("value", ["1", "true", "ON", "yes"])
def test_the_override_turns_bf16_on_on_an_avx2_cpu(value):
    chosen = auto_precision(environ={ENV_VAR: value}, cpuinfo=AVX2_ONLY, gpu=False)
    assert (chosen.bf16, chosen.dtype) == (True, "bfloat16")
    assert ENV_VAR in chosen.reason


def test_an_empty_override_leaves_it_to_the_hardware():
    assert auto_precision(environ={ENV_VAR: ""}, cpuinfo=BF16_CPU, gpu=False).bf16
    assert not auto_precision(environ={ENV_VAR: " "}, cpuinfo=AVX2_ONLY, gpu=False).bf16


def test_a_bad_override_is_the_users_to_fix():
    with pytest.raises(InputError) as caught:
        auto_precision(environ={ENV_VAR: "maybe"}, cpuinfo=BF16_CPU, gpu=False)
    assert caught.value.field == ENV_VAR


def test_resolve_dtype_reads_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "0")
    assert resolve_dtype("auto") == "float32"
    monkeypatch.setenv(ENV_VAR, "1")
    assert resolve_dtype("auto") == "bfloat16"
    assert resolve_dtype("float16") == "float16"  # a named dtype is taken as given


def test_every_user_asks_the_same_function(monkeypatch):
    """The scorer's dtype, the loader's and training's autocast follow the override alike."""
    import torch

    from calm_rag.models import torch_dtype
    from calm_rag.pipeline.scoring import scoring_dtype
    from calm_rag.training.common import use_bf16

    for value, dtype, bf16 in (("0", torch.float32, False), ("1", torch.bfloat16, True)):
        monkeypatch.setenv(ENV_VAR, value)
        assert torch_dtype("auto") is dtype
        assert scoring_dtype() == str(dtype).removeprefix("torch.")
        assert use_bf16("auto", gpu=False) is bf16
        assert use_bf16("fp32", gpu=False) is False


def test_a_forced_ending_matches_the_format_and_fits_the_budget():
    import re

    from calm_rag.sampling.endings import AnswerEnding, explanation_budget

    ending = AnswerEnding("Explanation:", "Answer:", ("A", "B", "C", "D"))
    pattern = re.compile(ending.regex(16))
    assert pattern.fullmatch("Explanation: short reason\nAnswer: B")
    assert not pattern.fullmatch("Explanation: " + "x" * 17 + "\nAnswer: B")  # too long
    assert not pattern.fullmatch("Explanation: ok\nAnswer: E")  # not an option
    # Fewer characters where a token holds fewer (Chinese); below one rounding step the
    # budget is not rounded up (that could outgrow max_tokens and cut off the letter).
    assert explanation_budget(40, 7, 4.3) > explanation_budget(40, 14, 0.67) >= 8
    assert explanation_budget(32, 8, 0.5) == 6
    assert explanation_budget(5, 14, 0.67) == 1
