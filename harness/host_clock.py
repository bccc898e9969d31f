"""The host's TSC rate, which a TCG guest's TSC runs at.

Under TCG, QEMU answers a guest's RDTSC with the host's own counter, so the
guest's TSC ticks at the host's rate. Told that rate at boot
(`tsc_early_khz=`), the guest kernel's clock runs from its first
instructions. Left to calibrate against the emulated PIT, it fails one boot in
three here ("Fast TSC calibration failed"); printk's clock then stands still
until the timer interrupt is set up, the first 0.2 s of the boot go uncounted,
and the floor the loop is measured against (the kernel's start to /init) is
misread. The rate is also part of a TCG snapshot's key through the kernel
arguments: a guest restored on a host whose counter runs at another rate would
keep the old rate, and its clock would run fast or slow.

The rate is measured once per host boot (RDTSC against CLOCK_MONOTONIC_RAW)
and kept in the cache, so every guest of that boot gets the same argument and
the same snapshot key.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .cache import Cache

SPAN_S = 0.05
# A clock read and an RDTSC closer together than this (no preemption between
# them): the rate is then right to a few parts in 10^5.
BRACKET_NS = 5_000
TRIES = 1000
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
CPUINFO = Path("/proc/cpuinfo")
# What a rate means only on a host whose counter neither changes speed nor
# stops (Linux's flags for it).
STEADY_FLAGS = {"constant_tsc", "nonstop_tsc"}
# rdtsc; shl $32, %rdx; or %rdx, %rax; ret
_RDTSC_X86_64 = bytes.fromhex("0f31" "48c1e220" "4809d0" "c3")


def tcg_kernel_args(cache: Cache | None) -> list[str]:
    """`tsc_early_khz=` for a TCG guest on this host, or nothing where the
    rate cannot be known (another architecture, an unsteady counter)."""
    khz = cached_tsc_khz(cache) if cache is not None else measure_tsc_khz()
    return [f"tsc_early_khz={khz}"] if khz else []


def cached_tsc_khz(cache: Cache) -> int | None:
    """The rate measured once per host boot: a file per boot id, written
    once and never changed."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return measure_tsc_khz()
    path = cache.kind_dir("host") / f"tsc-{boot}.json"
    try:
        return int(json.loads(path.read_text())["tsc_khz"]) or None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    khz = measure_tsc_khz()
    _publish(path, {"tsc_khz": khz or 0, "time": time.time()})
    return khz


def _publish(path: Path, data: dict[str, object]) -> None:
    """Write whole or not at all; a run that got there first wins."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tsc-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def measure_tsc_khz(span_s: float = SPAN_S) -> int | None:
    """The host's TSC rate to the nearest MHz (in kHz), or None."""
    if platform.machine() not in ("x86_64", "AMD64") or not _steady():
        return None
    rdtsc = _rdtsc()
    if rdtsc is None:
        return None
    start = _pair(rdtsc)
    time.sleep(span_s)
    end = _pair(rdtsc)
    if start is None or end is None or end[0] <= start[0]:
        return None
    khz = (end[1] - start[1]) * 1_000_000 / (end[0] - start[0])
    return round(khz / 1000) * 1000 or None


def _steady() -> bool:
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return STEADY_FLAGS <= set(line.partition(":")[2].split())
    return False


def _rdtsc() -> Callable[[], int] | None:
    """RDTSC as a function: the instruction in an executable page (None where
    the host forbids one)."""
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, AttributeError):
        return None
    page.write(_RDTSC_X86_64)
    func = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))

    def read() -> int:
        _ = page        # the page lives as long as the function
        return int(func())
    return read


def _pair(rdtsc: Callable[[], int]) -> tuple[int, int] | None:
    """(ns, ticks) read together: the clock on both sides of the counter,
    retried until nothing came between them."""
    for _ in range(TRIES):
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        ticks = rdtsc()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        if after - before < BRACKET_NS:
            return (before + after) // 2, ticks
    return None
