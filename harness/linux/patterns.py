"""What a Linux kernel's reports look like on the serial console: the Linux
family's ReportTable for harness.watcher (the illumos one is
harness/illumos/patterns.py)."""

from __future__ import annotations

import re

from ..watcher import Pattern, ReportTable


def _p(kind: str, regex: str, fatal: bool) -> Pattern:
    return Pattern(kind, re.compile(regex), fatal)


# Order matters: the first match names the report (KASAN before plain BUG).
LINUX = (
    _p("kasan", r"BUG: KASAN: ", True),
    _p("kfence", r"BUG: KFENCE: ", True),
    _p("ubsan", r"UBSAN: ", False),
    _p("soft-lockup", r"watchdog: BUG: soft lockup", True),
    _p("hard-lockup", r"Watchdog detected hard LOCKUP", True),
    # slub_debug: "BUG kmalloc-64 (Tainted: G O): Poison overwritten". The kernel
    # goes on, but its memory is corrupt: nothing after it can be trusted.
    _p("slub", r"BUG [\w.:-]+ \([^)]*\): ", True),
    _p("bug", r"kernel BUG at |BUG: ", True),
    _p("gpf", r"general protection fault", True),
    _p("oops", r"Oops: |Oops#", True),
    _p("warning", r"------------\[ cut here \]------------|WARNING: CPU: \d+ PID: \d+ at ", False),
    _p("hung-task", r"INFO: task \S+ blocked for more than", False),
    _p("panic", r"Kernel panic - not syncing", True),
)
END = re.compile(r"---\[ end (trace|Kernel panic)")
TABLE = ReportTable(LINUX, END)
