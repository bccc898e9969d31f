"""Kernel reports on the serial console: recognised, captured whole, classified.

A kernel family's ReportTable says what each report is (its start
patterns), whether the kernel is done for (fatal) and which line ends a
report. Each family keeps its table in its own package
(harness/linux/patterns.py, harness/illumos/patterns.py) and hands it to
the Watcher. A report
runs from its start line to the table's end marker, a size limit, or the
end of the console. The first fatal report sets `fatal`, which the SSH
layer polls so a workload stuck on a dead guest ends at once instead of at
its timeout.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from .console import Console


@dataclass(frozen=True)
class Pattern:
    kind: str
    start: re.Pattern[str]
    fatal: bool
    # A report of this kind also ends here (one that has no end marker of
    # its own: a bare stack dump ends with its trace).
    end: re.Pattern[str] | None = None


@dataclass(frozen=True)
class ReportTable:
    """One kernel family's reports: start patterns, first match wins, and
    the line that ends a report."""

    patterns: tuple[Pattern, ...]
    end: re.Pattern[str]


MAX_LINES = 200
REPORT_END_S = 5.0   # base seconds a report in progress gets to reach its end marker


@dataclass
class KernelReport:
    kind: str
    fatal: bool
    first_line: str
    at_s: float
    lines: list[str] = field(default_factory=list)
    complete: bool = False
    end: re.Pattern[str] | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def summary(self) -> str:
        return f"{self.kind}: {self.first_line.strip()}"


class Watcher:
    """Subscribes to a Console and keeps the kernel reports it sees."""

    def __init__(self, console: Console, table: ReportTable) -> None:
        self.table = table
        self.reports: list[KernelReport] = []
        self.fatal = threading.Event()
        self._current: KernelReport | None = None
        self._lock = threading.Lock()
        self._start = console.started
        self._last_line = time.monotonic()
        console.subscribe(self._on_line)

    @property
    def silent_for(self) -> float:
        """Seconds since the console last printed a whole line."""
        return time.monotonic() - self._last_line

    def first_fatal(self) -> KernelReport | None:
        with self._lock:
            return next((r for r in self.reports if r.fatal), None)

    def wait_complete(self, timeout: float = REPORT_END_S) -> None:
        """Give a report in progress a moment (base seconds `timeout`, scaled
        by the caller) to reach its end marker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._current is None:
                    return
            time.sleep(0.05)
        with self._lock:
            self._current = None

    def add(self, report: KernelReport) -> None:
        """A report found elsewhere than on the console (kmemleak's file)."""
        with self._lock:
            self.reports.append(report)

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.complete = True
                self._current = None

    def _on_line(self, line: str) -> None:
        self._last_line = time.monotonic()
        with self._lock:
            current = self._current
            if current is not None:
                current.lines.append(line)
                self._upgrade(current, line)
                if (self.table.end.search(line) or len(current.lines) >= MAX_LINES
                        or (current.end is not None and current.end.search(line))):
                    current.complete = True
                    self._current = None
                return
            for p in self.table.patterns:
                if p.start.search(line):
                    report = KernelReport(p.kind, p.fatal, line,
                                          round(time.monotonic() - self._start, 3), [line],
                                          end=p.end)
                    self.reports.append(report)
                    self._current = report
                    if p.fatal:
                        self.fatal.set()
                    return

    def _upgrade(self, report: KernelReport, line: str) -> None:
        """A report that began as a warning may turn out worse (panic_on_warn)."""
        if "cut here" in report.first_line:
            # The cut-here line opens WARNs and BUGs alike: the next line says which.
            for p in self.table.patterns:
                if p.start.search(line) and "cut here" not in line:
                    report.kind, report.first_line = p.kind, line
                    report.fatal = report.fatal or p.fatal
                    break
        for p in self.table.patterns:
            if p.fatal and p.start.search(line):
                report.fatal = True
                self.fatal.set()
                return
