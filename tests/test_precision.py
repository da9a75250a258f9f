"""Precision by capability: bf16 autocast only where the CPU runs it natively and faster."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from vlaforge import precision
from vlaforge.precision import Precision, normalize_setting, resolve_bf16


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU reported without bf16 instructions (an AVX2-only AMD EPYC, say)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


def test_settings_parse_and_bad_ones_are_named():
    assert [normalize_setting(v) for v in (True, False, "auto", "TRUE", "off")] == ["true", "false", "auto",
                                                                                    "true", "false"]
    with pytest.raises(ValueError, match=r"bf16: expected auto, true or false, got 'maybe'"):
        normalize_setting("maybe")


def test_a_cpu_without_bf16_picks_fp32_and_says_why(no_native_bf16):
    calls = []
    p = resolve_bf16("auto", "cpu", probe=lambda bf16: calls.append(bf16))
    assert p.bf16 is False and p.name == "fp32"
    assert "no AVX512-BF16 or AMX" in p.reason and "precision: fp32 (bf16=auto:" in p.describe()
    assert calls == []  # nothing to time where bf16 is not native


def test_explicit_choices_are_honoured_and_slow_bf16_warns(no_native_bf16):
    assert resolve_bf16(False).bf16 is False
    with pytest.warns(RuntimeWarning, match=r"bf16=true on a CPU without native bf16.*10x slower"):
        p = resolve_bf16(True, "cpu")
    assert p.bf16 is True and "10x slower" in p.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_bf16(True, "cpu", warn=False).bf16 is True


def test_the_capability_restriction_of_the_emulation_counts(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not precision.cpu_bf16_support()[0]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    native, why = precision.cpu_bf16_support()
    assert not native and "ONEDNN_MAX_CPU_ISA=AVX2" in why
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert precision.cpu_bf16_support()[0]


def _fake_probe(ms: dict):
    """A probe whose passes take ``ms[bf16]`` milliseconds of (fake) clock."""
    clock = {"t": 0.0}

    def run(bf16: bool) -> None:
        clock["t"] += ms[bf16] / 1000

    return run, (lambda: clock["t"])


def test_auto_on_native_bf16_takes_it_only_when_timed_faster(native_bf16, monkeypatch, tmp_path):
    monkeypatch.setenv("VLAFORGE_CACHE_DIR", str(tmp_path))
    run, clock = _fake_probe({False: 100.0, True: 50.0})
    monkeypatch.setattr(precision.time, "perf_counter", clock)
    fast = resolve_bf16("auto", "cpu", probe=run, probe_key="model-a")
    assert fast.bf16 and fast.probe_ms == {"fp32": 100.0, "bf16": 50.0}
    run, clock = _fake_probe({False: 100.0, True: 95.0})  # 5% is not worth it
    monkeypatch.setattr(precision.time, "perf_counter", clock)
    slow = resolve_bf16("auto", "cpu", probe=run, probe_key="model-b")
    assert not slow.bf16 and "fp32 kept" in slow.reason
    # remembered per machine and workload: the same key makes the same choice without timing again
    again = resolve_bf16("auto", "cpu", probe=lambda bf16: pytest.fail("timed again"), probe_key="model-a")
    assert again.bf16 and "remembered" in again.reason
    assert len(json.loads((tmp_path / "precision.json").read_text())) == 2


def test_precision_autocast_runs_bf16_matmuls():
    x = torch.randn(4, 8)
    with Precision(True, "true", "").autocast("cpu"):
        assert torch.nn.functional.linear(x, torch.randn(3, 8)).dtype == torch.bfloat16
    with Precision(False, "false", "").autocast("cpu"):
        assert torch.nn.functional.linear(x, torch.randn(3, 8)).dtype == torch.float32


def test_emulated_avx2_is_seen_by_a_fresh_process():
    """The documented emulation (docs/machines.md) makes torch report AVX2 and auto pick fp32."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    code = ("import torch; from vlaforge.precision import resolve_bf16, machine_info; "
            "print(torch.backends.cpu.get_cpu_capability(), resolve_bf16('auto').name, "
            "machine_info()['emulation']['ATEN_CPU_CAPABILITY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["AVX2", "fp32", "avx2"]


def test_policy_inference_precision(no_native_bf16):
    from tests.conftest import uniform_stats
    from vlaforge import presets
    from vlaforge.policy import Policy

    policy = Policy(presets.get("tiny").replace(head="regression"), {"sawyer": uniform_stats(4, 4)})
    assert policy.set_precision("auto").bf16 is False and policy.inference_precision.name == "fp32"
    frame = policy.example_frame()
    fp32 = policy.predict_chunk(frame)
    with pytest.warns(RuntimeWarning):
        assert policy.set_precision(True).bf16
    bf16 = policy.predict_chunk(frame)
    assert bf16.dtype == fp32.dtype == "float32"
    assert 0 < abs(bf16 - fp32).max() < 0.1  # rounded differently, same answer
