"""kmemleak on a debug kernel: the objects a driver allocated and lost.

kmemleak reports an object only once it is older than 5 s and was found
unreferenced by a scan after one that saw its contents unchanged, so after
a driver's workloads the harness waits out the age, scans twice and reads
the report. The driver is unloaded by then, so its frames in the backtraces
are bare addresses: an object is the driver's when a frame lies in the
module's memory, read from /proc/modules while it was loaded. The report is
cleared afterwards, so the next driver starts from nothing.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..results import FAIL, PASS, WorkloadResult
from ..ssh import GuestSSH

KMEMLEAK = "/sys/kernel/debug/kmemleak"
# kmemleak's jiffies_min_age, and a margin for the guest's clock.
MIN_AGE_S = 5.5
ROW = "harness:kmemleak"
SHOWN = 3   # objects quoted in the row's message
_MOUNT = "grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug"
_FRAME = re.compile(r"\[<([0-9a-f]+)>\]")


@dataclass(frozen=True)
class Scope:
    """A loaded module's memory, and when its last allocation may have been made."""

    module: str
    start: int
    size: int
    since: float    # host monotonic time

    def holds(self, address: int) -> bool:
        return self.start <= address < self.start + self.size


def scope(ssh: GuestSSH, module: str) -> Scope | None:
    """The module's memory, if this kernel has kmemleak (else None)."""
    script = f"{_MOUNT}; [ -e {KMEMLEAK} ] || exit 3; grep '^{module} ' /proc/modules"
    r = ssh.run(["sh", "-c", script], timeout=30)
    fields = r.stdout.split()
    if not r.ok or len(fields) < 6 or not fields[5].startswith("0x"):
        return None
    return Scope(module, int(fields[5], 16), int(fields[1]), time.monotonic())


def check(ssh: GuestSSH, where: Scope) -> tuple[WorkloadResult, list[str]]:
    """After unload: the row, and the objects the module leaked (kmemleak's text)."""
    start = time.monotonic()
    wait = max(0.0, MIN_AGE_S - (start - where.since))
    script = (f"{_MOUNT}; sleep {wait:.1f}; echo scan > {KMEMLEAK}; echo scan > {KMEMLEAK}; "
              f"cat {KMEMLEAK}; echo clear > {KMEMLEAK}")
    r = ssh.run(["sh", "-c", script], timeout=120)
    if not r.ok:
        return WorkloadResult(ROW, FAIL, {}, f"kmemleak could not be read: "
                              f"{r.stderr.strip() or r.stdout.strip()}",
                              time.monotonic() - start), []
    objects = split(r.stdout)
    mine = [o for o in objects if any(where.holds(a) for a in frames(o))]
    metrics = {"leaks": len(mine), "others": len(objects) - len(mine)}
    seconds = time.monotonic() - start
    if not mine:
        return WorkloadResult(ROW, PASS, metrics, "", seconds), []
    quoted = "\n".join(mine[:SHOWN])
    return WorkloadResult(ROW, FAIL, metrics,
                          f"kmemleak: {len(mine)} object(s) allocated by {where.module} "
                          f"and never freed:\n{quoted}", seconds), mine


def split(report: str) -> list[str]:
    """kmemleak's file, one text per unreferenced object."""
    parts = re.split(r"(?m)^(?=unreferenced object )", report)
    return [p.rstrip() for p in parts if p.startswith("unreferenced object ")]


def frames(obj: str) -> list[int]:
    return [int(a, 16) for a in _FRAME.findall(obj)]
