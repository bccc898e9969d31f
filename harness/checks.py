"""Verdicts the harness gives on every driver, whatever its kernel family:

- no leak: with no process using the device, the driver holds only the pages it
  keeps by design (live_pages == resident_pages), and the guest's free memory
  comes back within a tolerance;
- no mapping left (maps == 0) once every process has exited;
- the driver's own unload line says no page is still allocated;
- unloading is refused while a process still maps the device.

How the figures are read from a guest is the family's business (harness/linux,
harness/illumos).
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .results import FAIL, PASS, WorkloadResult
from .ssh import GuestSSH

if TYPE_CHECKING:
    from .family import KernelOps

# Free-memory noise across one driver, measured with the per-CPU lists counted
# and the page cache dropped: under 200 KiB in a tiny guest; up to ~800 KiB for
# the first module a systemd guest loads (journald, sysfs).
FREE_TOLERANCE_KIB = 1536
# Memory freed a moment late (RCU callbacks, the workqueues an unload starts)
# is not a leak: a shortfall is read again after a pause before it counts.
FREE_READS = 4
FREE_PAUSE_S = 1.0
HOLD_READY_TIMEOUT = 30.0   # base seconds for the holder to map the device
HOLD_POLL_S = 0.1           # the in-guest loop's sleep (busybox takes fractions)
COMMAND_SLACK_S = 10.0      # the SSH command around that loop gets this much more


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


def after_unload(kernel: KernelOps, module: str, since: str, template: bool,
                 free_before_kib: int, scope: object | None,
                 announce: Callable[[str], None] = lambda _step: None
                 ) -> Iterator[tuple[WorkloadResult, list[str]]]:
    """The verdicts on a module that unloaded, each yielded as soon as it is
    made (so a crash during one is that one's), with the objects kmemleak
    blamed on it: the kernel log clean since the line `since`, a template
    driver's unload line, free memory back to `free_before_kib`, and where
    the kernel has kmemleak, `scope` (leak_scope, read while loaded)."""
    log = kernel.kernel_log()
    yield kernel.log_clean(log, since), []
    if template:
        yield kernel.unload_report(log, module), []
    yield free_memory_settled(free_before_kib, kernel.free_kib), []
    if scope is not None:
        announce("harness:kmemleak")      # seconds of waiting and scanning
        yield kernel.leaks(scope)


def free_memory_settled(before_kib: int, read_kib: Callable[[], int]) -> WorkloadResult:
    """free_memory_back() on the best of up to FREE_READS readings, stopping
    at the first that is within the tolerance: a leak stays, noise settles."""
    after = read_kib()
    for _ in range(FREE_READS - 1):
        if before_kib - after <= FREE_TOLERANCE_KIB:
            break
        time.sleep(FREE_PAUSE_S)
        after = max(after, read_kib())
    return free_memory_back(before_kib, after)


def free_memory_back(before_kib: int, after_kib: int) -> WorkloadResult:
    lost = before_kib - after_kib
    ok = lost <= FREE_TOLERANCE_KIB
    return WorkloadResult("harness:free-memory", PASS if ok else FAIL,
                          {"free_before_kib": before_kib, "free_after_kib": after_kib,
                           "lost_kib": lost, "tolerance_kib": FREE_TOLERANCE_KIB},
                          "" if ok else f"{lost} KiB of free memory did not come back")


def unload_refused_while_mapped(ssh: GuestSSH, holder: str, device: str,
                                unload: Callable[[], str], how: str) -> WorkloadResult:
    """Start `holder` (maps the device, then sleeps); `unload` (the family's
    rmmod or modunload: an error message, empty when it unloaded) must fail
    until the holder is gone. Plain POSIX sh, so every family's guest runs it."""
    start = time.monotonic()
    # The file is emptied before the holder starts: the holder's own `>` runs
    # in the child, after this shell may already have read the last check's
    # "holding" there.
    script = (': > "$3"; "$1" "$2" > "$3" 2>&1 & echo $!; '
              'i=0; while [ $i -lt "$4" ] && ! grep -q holding "$3"; '
              'do i=$((i+1)); sleep 0.1; done; grep -q holding "$3"')
    out = f"{posixpath.dirname(holder)}/hold.out"
    polls = int(HOLD_READY_TIMEOUT * ssh.timeout_scale / HOLD_POLL_S)
    started = ssh.run(["sh", "-c", script, "hold", holder, device, out, str(polls)],
                      timeout=HOLD_READY_TIMEOUT + COMMAND_SLACK_S)
    pid = started.stdout.split()[0] if started.stdout.split() else ""
    if not started.ok or not pid.isdigit():
        said = ssh.run(["cat", out], timeout=30).stdout.strip()
        if pid.isdigit():
            ssh.run(["kill", "-9", pid], timeout=30)
        return WorkloadResult("harness:rmmod-busy", FAIL, {},
                              f"the holder could not map {device} (exit {started.exit_status}): "
                              f"{said or started.stdout.strip()}",
                              time.monotonic() - start)
    refused = unload()
    ssh.run(["sh", "-c", 'kill -9 "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done',
             "reap", pid], timeout=30)
    ok = bool(refused)
    message = "" if ok else f"{how} succeeded while a process still mapped the device"
    return WorkloadResult("harness:rmmod-busy", PASS if ok else FAIL,
                          {f"{how}_error": refused}, message, time.monotonic() - start)
