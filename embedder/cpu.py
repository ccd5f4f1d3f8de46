"""Which precision a model runs in on a CPU: bfloat16 where the processor multiplies it
natively and it is measurably faster there, float32 otherwise.

Recent server CPUs (AMD Zen 4/5: ``avx512_bf16``; Intel Sapphire Rapids and later:
``amx_bf16``) multiply bf16 in hardware; on those, oneDNN runs bf16 matrix products 2-5x
faster than float32. Elsewhere bf16 is emulated and slower than float32. So
``dtype="auto"`` on a CPU:

1. probes the processor (:func:`native_bf16`): without a native bf16 flag, float32;
2. otherwise runs a short calibration (:func:`calibrate`: a few ``linear`` products of the
   model's own widths, fp32 and bf16 interleaved, well under a second) and takes bf16 when
   it is at least :data:`MIN_SPEEDUP` times faster;
3. caches that measurement per machine in ``$XDG_CACHE_HOME/qvl/cpu-dtype.json`` (default
   ``~/.cache/qvl``), keyed by CPU model, CPU flags, torch version, thread count and the
   model's widths, so later loads skip it.

``QVL_CPU_DTYPE=float32`` (or ``bfloat16``) in the environment fixes what ``auto`` means on
a CPU without touching code (e.g. for ``qvl serve``); an explicit ``dtype=`` always wins.

Only torch is needed, imported lazily.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_VAR = "QVL_CPU_DTYPE"
MIN_SPEEDUP = 1.2          # bf16 must beat float32 by this factor to be chosen
CALIBRATION_FLOPS = 2e9    # per product: ~25 ms in float32 at this machine's speed
NATIVE_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16, Intel AMX, Arm BF16 (Features line)


@dataclass(frozen=True)
class CpuDtype:
    """The precision picked for a CPU and why."""

    dtype: str                     # "float32" or "bfloat16"
    reason: str                    # one sentence, for the log, ``emb.dtype_reason`` and ``/meta``
    speedup: float | None = None   # calibrated bf16 speed / float32 speed, when measured


def cpu_info() -> tuple[str, frozenset[str]]:
    """The processor's model name and feature flags (``/proc/cpuinfo`` on Linux; empty flags elsewhere)."""
    name, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = frozenset(value.split())
                if name and flags:
                    break  # the first processor's lines are enough
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return name, flags


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU multiplies bfloat16 natively, and a short explanation.

    Native means a bf16 flag of the processor (``avx512_bf16``, ``amx_bf16``, Arm ``bf16``)
    and a torch build whose oneDNN can use it. Tests replace this function to simulate
    other processors.
    """
    import torch

    name, flags = cpu_info()
    found = [f for f in NATIVE_FLAGS if f in flags]
    capability = _torch_capability()
    if not found:
        return False, (f"{name} has no native bfloat16 multiply (no {'/'.join(NATIVE_FLAGS[:2])} flag; "
                       f"torch CPU capability {capability}), where bfloat16 is emulated and slower than float32")
    if not torch.backends.mkldnn.is_available():
        return False, f"{name} has {', '.join(found)} but this torch build has no oneDNN to use it"
    return True, f"{name} has {', '.join(found)} (torch CPU capability {capability})"


def _torch_capability() -> str:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch: informative only
        return "unknown"


def calibrate(hidden: int, intermediate: int, *, repeats: int = 3) -> tuple[float, float]:
    """Seconds of one ``linear`` product of the model's MLP widths, float32 and bfloat16 (best of ``repeats``).

    ``tokens x hidden`` by ``hidden x intermediate``, with ``tokens`` sized to about
    :data:`CALIBRATION_FLOPS` (158 tokens at the 2B's widths); the two precisions alternate
    so that other load on the machine hits both alike. Tests replace this function to
    inject a result.
    """
    import torch
    import torch.nn.functional as F

    tokens = max(16, min(512, int(CALIBRATION_FLOPS / (2 * hidden * intermediate))))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=gen)
    w = torch.randn(intermediate, hidden, generator=gen) / hidden ** 0.5
    pairs = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
    best = {dt: float("inf") for dt in pairs}
    with torch.inference_mode():
        for dt, (a, b) in pairs.items():
            F.linear(a, b)  # warm-up: oneDNN builds its kernels on the first call
        for _ in range(repeats):
            for dt, (a, b) in pairs.items():
                start = time.perf_counter()
                F.linear(a, b)
                best[dt] = min(best[dt], time.perf_counter() - start)
    return best[torch.float32], best[torch.bfloat16]


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/qvl/cpu-dtype.json`` (default ``~/.cache/qvl/cpu-dtype.json``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "qvl" / "cpu-dtype.json"


def machine_key(hidden: int, intermediate: int) -> str:
    """What a calibration depends on: CPU model and flags, torch version, threads, model widths."""
    import torch

    name, flags = cpu_info()
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return (f"{name} | flags {digest} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
            f"{hidden}x{intermediate}")


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add one entry, atomically; a read-only home only costs the next load a calibration."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


def choose_cpu_dtype(hidden: int, intermediate: int) -> CpuDtype:
    """float32 or bfloat16 for a model of these widths on this CPU (see the module docstring)."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in ("float32", "fp32", "bfloat16", "bf16"):
        name = "float32" if forced in ("float32", "fp32") else "bfloat16"
        return CpuDtype(name, f"{name}: {ENV_VAR}={forced} in the environment")
    if forced not in ("", "auto"):
        raise ValueError(f"{ENV_VAR} must be auto, float32 or bfloat16; got {forced!r}")
    native, why = native_bf16()
    if not native:
        return CpuDtype("float32", f"float32: {why}")
    key = machine_key(hidden, intermediate)
    path = cache_path()
    entry = _read_cache(path).get(key)
    cached = isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float))
    if not cached:
        fp32, bf16 = calibrate(hidden, intermediate)
        entry = {"speedup": round(fp32 / bf16, 3), "float32_ms": round(fp32 * 1e3, 3),
                 "bfloat16_ms": round(bf16 * 1e3, 3), "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_cache(path, key, entry)
    speedup = float(entry["speedup"])
    measured = f"{'cached in ' + str(path) if cached else 'measured at load'}, {entry.get('measured', '?')}"
    if speedup >= MIN_SPEEDUP:
        return CpuDtype("bfloat16", f"bfloat16: {why}, and a product of this model's widths ({hidden}x{intermediate}) "
                                    f"ran {speedup:.2f}x faster than in float32 ({measured})", speedup)
    return CpuDtype("float32", f"float32: {why}, but bfloat16 ran only {speedup:.2f}x float32 at this model's "
                               f"widths ({hidden}x{intermediate}; {MIN_SPEEDUP}x needed; {measured})", speedup)


__all__ = ["CpuDtype", "ENV_VAR", "MIN_SPEEDUP", "cache_path", "calibrate", "choose_cpu_dtype", "cpu_info",
           "machine_key", "native_bf16"]
