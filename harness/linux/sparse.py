"""Static checks on every module build: sparse through Kbuild (`C=2`).

Kbuild runs sparse on each of the module's sources beside the compiler;
its findings in the module's own files (not the kernel's headers, which are
not the driver's to fix) become the `harness:sparse` row. The findings are
read from the build's log, so a module reused from the artifact cache
reports what its build found.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from ..results import PASS, WARN, WorkloadResult

ROW = "harness:sparse"
# What the build root needs for it; without sparse nothing is checked.
SPARSE = "usr/bin/sparse"
MAKE_ARGS = ["C=2"]
FINDING = re.compile(r"^(?P<file>\S+?\.[ch]):\d+:\d+: (?:warning|error): .*$", re.M)
SHOWN = 10


def available(tree: Path) -> bool:
    return (tree / SPARSE).is_file()


def findings(log: str, module_dir: str) -> list[str]:
    """Warnings and errors sparse (or the compiler) gave on the module's own
    files, those under `module_dir` (its place in the build sandbox)."""
    seen: list[str] = []
    for m in FINDING.finditer(log):
        path = m.group("file")
        if path.startswith(module_dir.rstrip("/") + "/") and m.group(0) not in seen:
            seen.append(m.group(0))
    return seen


def verdict(log: str, module_dir: str) -> WorkloadResult:
    """A `warn` row when sparse found something: its findings are worth
    reading, but a third party's driver that sparse dislikes still works."""
    found = findings(log, module_dir)
    if not found:
        return WorkloadResult(ROW, PASS, {"warnings": 0})
    shown = "\n".join(found[:SHOWN]) + (f"\n... and {len(found) - SHOWN} more"
                                        if len(found) > SHOWN else "")
    path = FINDING.match(found[0]).group("file")    # type: ignore[union-attr]
    first = posixpath.basename(path) + found[0][len(path):]
    return WorkloadResult(ROW, WARN, {"warnings": len(found)},
                          f"sparse: {len(found)} finding(s), first {first}\n{shown}")
