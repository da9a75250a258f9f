"""Numeric precision chosen for the machine: bfloat16 autocast only where this machine runs it faster.

    p = resolve_bf16("auto", device, probe=lambda bf16: one_step_seconds(bf16))
    with p.autocast(device.type): ...
    log(p.describe())  # "precision: fp32 (bf16=auto: torch CPU capability AVX2, no native bf16 kernels)"

``bf16`` settings (training, evaluation, the runtime and the latency benchmark take the same three):

- ``"auto"`` (the default): on CUDA, bf16 where the GPU supports it. On a CPU, bf16 only where the CPU has
  native bf16 instructions (AVX512-BF16 or AMX) that torch actually uses, and, when a ``probe`` is given, only
  where timing a few passes of each shows bf16 at least ``MIN_GAIN`` faster; fp32 otherwise.
- ``True``: bf16 autocast. On a CPU without native bf16 it still runs, with a warning: it is about 10x slower
  there (a training step of the demo policy took 13.5 s against 1.07 s in fp32 on a 2-core AVX2 machine).
- ``False``: fp32.

Why capability and not a flag: on CPUs without native bf16 every bf16 convolution and matmul is emulated,
which is an order of magnitude slower than fp32; where bf16 is native the gain depends on the model and the
machine (measured from nothing to 3x), hence the probe.

The slow machine on a fast one: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` make torch and oneDNN use
only AVX2 kernels (docs/machines.md); both are read here, so "auto" picks fp32 under that emulation as it
does on a real AVX2 CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union

BF16Setting = Union[bool, Literal["auto"]]
#: bf16 must be at least this much faster (fraction of the fp32 time saved) for "auto" to take it
MIN_GAIN = 0.10
#: oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) under which bf16 convolutions and matmuls still run natively
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                     "AVX10_2_512_AMX_2", "ALL", "DEFAULT")
SLOW_BF16_NOTE = ("about 10x slower than fp32 there (a demo training step: 13.5 s against 1.07 s on a 2-core "
                  "AVX2 CPU)")


@dataclass(frozen=True)
class Precision:
    """The choice: ``bf16`` (autocast on) or fp32, what was asked, and why."""

    bf16: bool
    requested: str  # "auto", "true" or "false"
    reason: str
    probe_ms: dict | None = None  # {"fp32": ms, "bf16": ms} when a probe timed both

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self, device_type: str = "cpu"):
        """A context manager: bf16 autocast, or nothing."""
        import torch

        return torch.autocast(device_type=device_type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def describe(self) -> str:
        return f"precision: {self.name} (bf16={self.requested}: {self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"precision": self.name}


def normalize_setting(value: Any) -> str:
    """``True``/``False``/``"auto"`` (and their spellings from the command line) -> "true" | "false" |
    "auto"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("1", "true", "yes", "on", "bf16"):
        return "true"
    if text in ("0", "false", "no", "off", "fp32"):
        return "false"
    raise ValueError(f"bf16: expected auto, true or false, got {value!r}")


def cpu_bf16_support() -> tuple[bool, str]:
    """(native, reason): whether torch on this CPU runs bf16 with native instructions."""
    import torch

    # "AVX512", "AVX2", "DEFAULT", ... (honours ATEN_CPU_CAPABILITY)
    cap = torch.backends.cpu.get_cpu_capability()
    has_isa = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                   or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    if not has_isa:
        return False, f"the CPU has no AVX512-BF16 or AMX instructions (torch CPU capability {cap})"
    if not cap.startswith("AVX512"):
        return False, f"torch CPU capability {cap}: no native bf16 kernels"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if isa and isa not in _ONEDNN_BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={isa}: oneDNN runs bf16 without native instructions"
    return True, f"native bf16 (AVX512-BF16/AMX, torch CPU capability {cap})"


def machine_info() -> dict[str, Any]:
    """What a benchmark result records about where it ran: CPU model, torch's CPU capability, bf16 support,
    threads, torch version."""
    import platform

    import torch

    native, why = cpu_bf16_support()
    return {"cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": native, "bf16_note": why, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "emulation": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
                          if k in os.environ}}


def machine_kind(info: dict[str, Any] | None = None) -> str:
    """A short name for the kind of machine: "AVX512 + native bf16", "AVX2, no native bf16", and
    "(emulated on <cpu>)" when ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA restrict a faster CPU."""
    m = info or machine_info()
    kind = f"{m['cpu_capability']}, {'native bf16' if m['bf16_native'] else 'no native bf16'}"
    if m.get("emulation"):
        kind += (" (emulated on " + m["cpu_model"] + ": "
                 + " ".join(f"{k}={v}" for k, v in m["emulation"].items()) + ")")
    return kind


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line for logs and result tables: CPU model, capability, bf16, threads, torch."""
    m = info or machine_info()
    return (f"{m['cpu_model']}, {m['cpu_count']} CPUs; torch {m['torch']}, "
            f"CPU capability {m['cpu_capability']}, "
            f"bf16 native {'yes' if m['bf16_native'] else 'no'}, {m['torch_threads']} threads"
            + (f"; emulating a slower CPU with {' '.join(f'{k}={v}' for k, v in m['emulation'].items())}"
               if m.get("emulation") else ""))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def time_probe(run: Callable[[bool], None], repeats: int = 3) -> dict[str, float]:
    """Median milliseconds of ``run(bf16)`` for fp32 and bf16, alternating (one warm-up call each), so a busy
    machine slows both alike."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(repeats + 1):
        for bf16 in (False, True):
            t = time.perf_counter()
            run(bf16)
            if i:
                times[bf16].append((time.perf_counter() - t) * 1000)
    return {"fp32": statistics.median(times[False]), "bf16": statistics.median(times[True])}


def cache_dir() -> Path:
    """Where measured choices are remembered: ``$VLAFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/vlaforge``, else
    ``~/.cache/vlaforge``."""
    if os.environ.get("VLAFORGE_CACHE_DIR"):
        return Path(os.environ["VLAFORGE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlaforge"


def _probe_cache_key(probe_key: str) -> str:
    import hashlib

    import torch

    m = machine_info()
    text = "|".join([m["cpu_model"], m["cpu_capability"], json.dumps(m["emulation"], sort_keys=True),
                     f"threads={torch.get_num_threads()}", m["torch"], probe_key])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _cached_probe(probe: Callable[[bool], None], probe_key: str | None) -> tuple[dict[str, float], bool]:
    """(timings, from_cache): a probe's timings, measured once per machine and workload (``probe_key``) and
    then read back, so repeated runs on one machine make the same choice (timing noise would otherwise flip
    it)."""
    if probe_key is None:
        return time_probe(probe), False
    path = cache_dir() / "precision.json"
    key = _probe_cache_key(probe_key)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    hit = table.get(key)
    if isinstance(hit, dict) and {"fp32", "bf16"} <= set(hit):
        return {"fp32": float(hit["fp32"]), "bf16": float(hit["bf16"])}, True
    ms = time_probe(probe)
    table[key] = {**{k: round(v, 3) for k, v in ms.items()}, "workload": probe_key[:80]}
    try:
        from vlaforge.fsutil import write_json_atomic

        write_json_atomic(path, table, indent=1)
    except OSError:  # a read-only home: the choice is simply not remembered
        pass
    return ms, False


def resolve_bf16(setting: Any, device_type: str = "cpu", probe: Callable[[bool], None] | None = None,
                 probe_key: str | None = None, warn: bool = True) -> Precision:
    """Decide bf16 autocast for ``setting`` (auto / true / false) on ``device_type`` ("cpu" or "cuda").

    ``probe(bf16)``: one representative pass (a training step, a chunk prediction) under that precision; with
    "auto" on a CPU with native bf16 it is timed (``time_probe``) and bf16 is taken only when at least
    ``MIN_GAIN`` faster. ``probe_key`` names the workload (model config, batch): its timings are remembered in
    ``cache_dir()/precision.json`` for this machine, and the next run with the same key makes the same choice.
    An explicit True on a CPU without native bf16 warns (``warn``) and is honoured."""
    requested = normalize_setting(setting)
    if requested == "false":
        return Precision(False, requested, "fp32 as asked")
    if device_type == "cuda":
        import torch

        ok = torch.cuda.is_bf16_supported()
        if requested == "true":
            return Precision(True, requested,
                             "bf16 as asked" + ("" if ok else " (this GPU has no native bf16)"))
        return Precision(ok, requested, "the GPU supports bf16" if ok else "the GPU has no native bf16")
    native, why = cpu_bf16_support()
    if requested == "true":
        if not native and warn:
            warnings.warn(f"bf16=true on a CPU without native bf16 ({why}): bf16 autocast runs, but it is "
                          f"{SLOW_BF16_NOTE}; bf16=auto picks fp32 here", RuntimeWarning, stacklevel=2)
        return Precision(True, requested, "bf16 as asked" + ("" if native else f"; {why}: {SLOW_BF16_NOTE}"))
    if not native:
        return Precision(False, requested, why)
    if probe is None:
        return Precision(True, requested, why)
    ms, cached = _cached_probe(probe, probe_key)
    faster = ms["bf16"] <= (1 - MIN_GAIN) * ms["fp32"]
    verdict = (f"{why}; {'remembered' if cached else 'timed'} bf16 {ms['bf16']:.0f} ms "
               f"vs fp32 {ms['fp32']:.0f} ms per pass: "
               + ("bf16 is faster" if faster else f"bf16 is not {MIN_GAIN:.0%} faster, fp32 kept"))
    return Precision(faster, requested, verdict, {k: round(v, 2) for k, v in ms.items()})
