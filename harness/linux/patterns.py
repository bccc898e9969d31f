"""What a Linux kernel's reports look like on the serial console: the Linux
family's ReportTable for harness.watcher (the illumos one is
harness/illumos/patterns.py)."""

from __future__ import annotations

import re

from ..watcher import Pattern, ReportTable


def _p(kind: str, regex: str, fatal: bool, end: str | None = None) -> Pattern:
    return Pattern(kind, re.compile(regex), fatal, re.compile(end) if end else None)


# A stack dump with no end marker of its own ends with its trace.
TRACE_END = r"\s</TASK>\s*$"

# Order matters: the first match names the report (KASAN before plain BUG).
# The kinds from kasan to page-poison come from the debug kernel's options
# (harness/debug_kernel.py); a stock cloud kernel prints none of them.
LINUX = (
    _p("kasan", r"BUG: KASAN: ", True),
    _p("kfence", r"BUG: KFENCE: ", True),
    _p("ubsan", r"UBSAN: ", False),
    # DEBUG_ATOMIC_SLEEP: the kernel goes on (it was lucky this time).
    _p("sleep-in-atomic", r"BUG: sleeping function called from invalid context|"
                          r"BUG: scheduling while atomic", False, TRACE_END),
    _p("lockdep", r"WARNING: (possible circular locking dependency|possible recursive "
                  r"locking|inconsistent lock state|suspicious RCU usage)|"
                  r"BUG: (spinlock|rwlock) \w+ on CPU", False),
    # DEBUG_VM's VM_BUG_ON_PAGE: the page's state first, then "kernel BUG at".
    _p("vm-bug", r"page dumped because: ", True),
    _p("page-table-check", r"kernel BUG at mm/page_table_check\.c", True),
    _p("bad-page", r"BUG: Bad page (state|map) in process", True),
    # PAGE_POISONING: a freed page was written to.
    _p("page-poison", r"pagealloc: (memory corruption|single bit error)", True),
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
