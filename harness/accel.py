"""Choosing the accelerator by booting, not by looking at /dev/kvm.

A /dev/kvm that opens is no proof: a paravirtual KVM (kvm-pvm) accepts
KVM_CREATE_VM, then crawls through the kernel's decompressor for minutes.
So the probe boots the real guest kernel under KVM and asks it to reach
/init within a short time. The verdict is cached per host kernel, QEMU and
guest kernel, so only the first run of a day pays for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import Cache
from .errors import BootError, ConfigError, InfraError
from .qemu import Machine, MachineSpec, qemu_version

PROBE_MARKER = "mmap-harness: probe ok"
PROBE_SECONDS = 20.0
CACHE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class AccelChoice:
    accel: str       # "tcg" | "kvm"
    reason: str


def choose(requested: str, kernel: Path, initrd: Path, cache_dir: Path) -> AccelChoice:
    """`requested` is auto, tcg or kvm; auto probes (or reuses a recent probe)."""
    if requested == "tcg":
        return AccelChoice("tcg", "requested with --accel tcg")
    if requested == "kvm":
        return AccelChoice("kvm", "requested with --accel kvm (not probed)")
    if requested != "auto":
        raise ConfigError(f"--accel {requested!r} is not one of auto, tcg, kvm")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "no usable /dev/kvm on this host")
    cache = Cache(cache_dir).kind_dir("accel-probe") / f"{_probe_key(kernel)}.json"
    cached = _read_cached(cache)
    if cached is not None:
        return cached
    ok, detail = probe_kvm(kernel, initrd)
    choice = AccelChoice("kvm" if ok else "tcg", detail)
    cache.write_text(json.dumps({"accel": choice.accel, "reason": choice.reason,
                                 "time": time.time()}))
    return choice


def probe_kvm(kernel: Path, initrd: Path, seconds: float = PROBE_SECONDS) -> tuple[bool, str]:
    """Boot `kernel` under KVM to /init; (True, why) if it got there in time."""
    spec = MachineSpec(name="mmap-harness-kvm-probe", kernel=kernel, initrd=initrd,
                       kernel_args=["console=ttyS0", "panic=-1", "mmap_harness.probe"],
                       accel="kvm", cpus=1, memory_mib=512)
    with tempfile.TemporaryDirectory(prefix="mmap-harness-probe-") as tmp:
        start = time.monotonic()
        try:
            with Machine(spec, Path(tmp), Path(tmp) / "console.log") as m:
                assert m.console is not None
                if m.console.wait_for(PROBE_MARKER, seconds):
                    took = time.monotonic() - start
                    return True, f"probe boot under KVM reached /init in {took:.1f}s"
                kernel_lines = [line for line in m.console.text().splitlines()
                                if not line.startswith("qemu-system")]
                tail = kernel_lines[-1] if kernel_lines else "no kernel output"
        except (BootError, InfraError) as e:
            return False, f"QEMU could not start with KVM ({e.message.splitlines()[0]}); using TCG"
    return False, (f"probe boot under KVM did not reach /init within {seconds:.0f}s "
                   f"(last console line: {tail.strip()[:120]!r}); using TCG")


def _probe_key(kernel: Path) -> str:
    """Host kernel, QEMU and the guest kernel file. The file is named by
    where it is, its size and its mtime, not hashed again: it sits in a
    sealed cache entry whose contents the cache verifies before use (and
    hashing 50 MB on every run was a third of the harness's own CPU)."""
    st = kernel.stat()
    h = hashlib.sha256()
    for part in (platform.release(), qemu_version(), str(kernel.resolve()),
                 str(st.st_size), str(st.st_mtime_ns)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _read_cached(path: Path) -> AccelChoice | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if time.time() - data.get("time", 0) > CACHE_SECONDS:
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(data["time"]))
    return AccelChoice(data["accel"], f"{data['reason']} (probe of {stamp}, cached)")
