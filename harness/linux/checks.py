"""How the harness checks a driver in a Linux guest: free memory from the
page allocator, the driver's counters in sysfs, rmmod while mapped, the
driver's unload line and the kernel log (the verdicts are harness.checks').
"""

from __future__ import annotations

import re
import time

from ..checks import counters_verdict
from ..results import FAIL, PASS, WorkloadResult
from ..ssh import GuestSSH

PAGE_SIZE = 4096


def free_kib(ssh: GuestSSH) -> int:
    """Free memory as the page allocator sees it: the buddy lists plus the
    per-CPU page lists (MemFree leaves those out, and they hold megabytes,
    so a leak could hide in them). Counter deltas are folded in first."""
    # Clean page cache comes and goes with whatever the guest reads (a disk
    # guest's files): drop it so only memory somebody holds is counted.
    script = ("sync; echo 3 > /proc/sys/vm/drop_caches; "
              "cat /proc/sys/vm/stat_refresh; cat /proc/zoneinfo")
    zoneinfo = ssh.run(["sh", "-c", script], timeout=60, check=True).stdout
    return free_pages(zoneinfo) * PAGE_SIZE // 1024


def free_pages(zoneinfo: str) -> int:
    buddy = sum(int(n) for n in re.findall(r"^\s+nr_free_pages\s+(\d+)", zoneinfo, re.M))
    per_cpu = sum(int(n) for n in re.findall(r"^\s+count:\s+(\d+)", zoneinfo, re.M))
    return buddy + per_cpu


COUNTERS = ("live_pages", "resident_pages", "maps")


def module_counters(ssh: GuestSSH, module: str, names: tuple[str, ...]) -> dict[str, int | None]:
    """/sys/module/MODULE/parameters/NAME for each name, in one command
    (a command costs ~60 ms under TCG); None where a counter is missing."""
    script = 'for f in "$@"; do v=$(cat "$f" 2>/dev/null) || v=-; echo "$v"; done'
    r = ssh.run(["sh", "-c", script, "counters",
                 *(f"/sys/module/{module}/parameters/{n}" for n in names)], timeout=30)
    values = r.stdout.split("\n")[:len(names)] if r.ok else []
    values += ["-"] * (len(names) - len(values))
    return {n: int(v) if v.strip().lstrip("-").isdigit() else None
            for n, v in zip(names, values)}


def counters_settled(ssh: GuestSSH, module: str) -> WorkloadResult:
    """The driver's counters from sysfs, once every workload process has exited."""
    start = time.monotonic()
    return counters_verdict(module_counters(ssh, module, COUNTERS), time.monotonic() - start)


# What a kernel prints when something went wrong; issue-level detail is the
# console watcher's job, this is the per-driver verdict on dmesg.
KERNEL_TROUBLE = re.compile(r"WARNING:|BUG:|Oops|general protection fault|Kernel panic|"
                            r"KASAN|KFENCE|UBSAN|kernel BUG|Call Trace:")


def kernel_log_clean(dmesg_text: str, since: str) -> WorkloadResult:
    """No warning, BUG or oops in the kernel log after the line `since`."""
    at = dmesg_text.rfind(since)
    tail = dmesg_text[at:] if at >= 0 else dmesg_text
    bad = [line for line in tail.splitlines() if KERNEL_TROUBLE.search(line)]
    return WorkloadResult("harness:dmesg-clean", FAIL if bad else PASS,
                          {"trouble_lines": len(bad)},
                          "; ".join(bad[:3]) if bad else "")
