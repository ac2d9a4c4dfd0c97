"""What a run or a benchmark ran on: device name, CPU name, peak memory, library versions, git
commit. One home for these, shared by the training loop's records and the benchmarks.
"""

from __future__ import annotations

import importlib
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    """``cuda: <GPU name>`` or ``cpu: <architecture>`` (as the run records hold it)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine() or 'cpu'}"


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated, or this process's peak resident set size.

    On Linux the RSS peak is /proc/self/status's VmHWM: `getrusage(RUSAGE_SELF).ru_maxrss` is
    kept across fork + exec, so a subprocess would report its parent's peak if that is larger.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB


def versions(*packages: str) -> dict[str, str]:
    """Python's and each importable package's version."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    return out


def git_commit() -> str | None:
    """The checkout's commit, or None outside a git repository."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX; Arm's BF16 extension), from
    the kernel's CPU flags (`cpuinfo`: /proc/cpuinfo's text); False where they can't be read."""
    try:
        info = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return False
    flags = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_count() -> int:
    return os.cpu_count() or 1


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
