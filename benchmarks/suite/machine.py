"""What the benchmark ran on: CPU model, cores, clock, SIMD width, OS, Python and package versions, and a
folder name for the results that says which machine it was (a Raspberry Pi names itself by board)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path

PACKAGES = ("numpy", "ai-edge-litert", "tflite-runtime", "torch", "executorch", "litert-torch", "bleak", "pyserial",
            "matplotlib")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    out: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if not line.strip():
            if out.get("processor") is not None and len(out) > 3:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def clock_ghz(info: dict[str, str] | None = None) -> tuple[float | None, str]:
    """The CPU clock and where it came from: cpufreq's maximum if the kernel exposes it, else cpuinfo."""
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if khz.isdigit():
        return int(khz) / 1e6, "cpufreq cpuinfo_max_freq"
    info = info if info is not None else _cpuinfo()
    if info.get("cpu MHz"):
        return float(info["cpu MHz"]) / 1e3, "/proc/cpuinfo cpu MHz"
    return None, "unknown"


def simd(info: dict[str, str] | None = None) -> tuple[int, str]:
    """fp32 multiply-accumulates one core can issue per cycle, and the assumption behind it.

    Two FMA pipes per core are assumed throughout (true of recent x86 cores and of the Cortex-A76 in a
    Raspberry Pi 5); a core with one pipe has half this peak, so the floor computed from it is, if
    anything, too low, never too high."""
    info = info if info is not None else _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if "avx512f" in flags:
        return 32, "AVX-512: 16 fp32 lanes x 2 FMA pipes (assumed)"
    if "avx2" in flags and "fma" in flags:
        return 16, "AVX2+FMA: 8 fp32 lanes x 2 FMA pipes (assumed)"
    if "asimd" in flags or platform.machine() in ("aarch64", "arm64"):
        return 8, "NEON: 4 fp32 lanes x 2 FMA pipes (assumed)"
    return 4, "no known SIMD flags: 4 fp32 MACs a cycle (assumed)"


def describe() -> dict:
    info = _cpuinfo()
    board = _read("/proc/device-tree/model")
    cpu = info.get("model name") or info.get("Model") or board or platform.processor() or platform.machine()
    ghz, ghz_from = clock_ghz(info)
    macs, simd_basis = simd(info)
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    os_name = _read("/etc/os-release")
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_name, re.M)
    return {
        "cpu": cpu, "board": board or None, "arch": platform.machine(), "cores": os.cpu_count(),
        "clock_ghz": ghz, "clock_source": ghz_from, "fp32_macs_per_cycle": macs, "simd": simd_basis,
        "os": (pretty.group(1) if pretty else platform.system()), "kernel": platform.release(),
        "platform": platform.platform(), "versions": versions,
    }


def machine_name(m: dict) -> str:
    """A folder name: the board if it has one (e.g. raspberry-pi-5-model-b-rev-1-0), else arch-cpu-cores."""
    base = m["board"] or f"{m['arch']}-{m['cpu']}-{m['cores']}core"
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:80] or "unknown-machine"
