"""Verdicts the harness gives on every driver, whatever its kernel family:

- no leak: with no process using the device, the driver holds only the pages it
  keeps by design (live_pages == resident_pages), and the guest's free memory
  comes back within a tolerance;
- no mapping left (maps == 0) once every process has exited;
- the driver's own unload line says no page is still allocated.

How the figures are read from a guest is the family's business (harness/linux,
harness/illumos).
"""

from __future__ import annotations

import re

from .results import FAIL, PASS, WorkloadResult

# Free-memory noise across one driver, measured with the per-CPU lists counted
# and the page cache dropped: under 200 KiB in a tiny guest; up to ~800 KiB for
# the first module a systemd guest loads (journald, sysfs).
FREE_TOLERANCE_KIB = 1536


def counters_verdict(found: dict[str, int | None], seconds: float) -> WorkloadResult:
    """`found` holds live_pages, resident_pages and maps (None: not exported)."""
    live, resident, maps = (found.get(k) for k in ("live_pages", "resident_pages", "maps"))
    if live is None or resident is None or maps is None:
        return WorkloadResult("harness:counters", FAIL, dict(found),
                              "the driver exports no live_pages/resident_pages/maps counters",
                              seconds)
    problems = []
    if live != resident:
        problems.append(f"{live - resident} page(s) still allocated after every process exited")
    if maps != 0:
        problems.append(f"maps is {maps} with no process left (the mapping open/close callbacks are unbalanced)")
    return WorkloadResult("harness:counters", FAIL if problems else PASS, dict(found),
                          "; ".join(problems), seconds)


def unload_report(log: str, module: str) -> WorkloadResult:
    """The driver's own unload line ("NAME: unloaded, N pages still allocated",
    printed by every family's templates) must say 0."""
    found = re.findall(rf"{re.escape(module)}: unloaded, (-?\d+) pages still allocated",
                       log)
    if not found:
        return WorkloadResult("harness:unload", FAIL, {}, "no unload report in the kernel log")
    left = int(found[-1])
    return WorkloadResult("harness:unload", PASS if left == 0 else FAIL,
                          {"pages_still_allocated": left},
                          "" if left == 0 else f"{left} page(s) leaked at unload")


def free_memory_back(before_kib: int, after_kib: int) -> WorkloadResult:
    lost = before_kib - after_kib
    ok = lost <= FREE_TOLERANCE_KIB
    return WorkloadResult("harness:free-memory", PASS if ok else FAIL,
                          {"free_before_kib": before_kib, "free_after_kib": after_kib,
                           "lost_kib": lost, "tolerance_kib": FREE_TOLERANCE_KIB},
                          "" if ok else f"{lost} KiB of free memory did not come back")
