"""The workloads compiled for illumos userland, on this host.

The same C programs that run in Linux guests are compiled against the gate's
own libc and system headers (usr/src/head, uts/common, uts/intel), 64-bit and
-m32 for the ILP32 ones, with -Wall -Werror: what is Linux-only in them is
guarded (mremap(2), /proc/self/maps, sysfs), and this proves the rest is
plain illumos C. It is a compile check (-fsyntax-only): linking needs
illumos's libc, which only an illumos guest has.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..drivers import INCLUDE_DIR
from ..plan import Workload
from .check import INSIDE_GATE, INSIDE_WORK, DriverResult, Step, stage
from .derived import USERLAND_HEADERS, Derived

# Not a Linux host's compiler any more: its built-in Linux macros go, illumos's come.
TARGET = ["-U__linux__", "-U__linux", "-Ulinux", "-U__gnu_linux__", "-U__unix__",
          "-D__sun", "-Dsun", "-D__SVR4", "-D__unix"]
# The gate's userland warning policy keeps Sun pragmas (#pragma unknown_control_flow).
WARNINGS = ["-Wall", "-Werror", "-Wno-unknown-pragmas"]


def _gcc_include() -> str:
    """gcc's own freestanding headers (<stdarg.h>, <stddef.h>) come with it."""
    return subprocess.run(["gcc", "-print-file-name=include"], capture_output=True,
                          text=True, check=True).stdout.strip()


def check_workloads(workloads: list[Workload], derived: Derived,
                    work: Path, timeout_scale: float = 1.0) -> list[DriverResult]:
    """One result per workload: compiled for illumos, or why not. Each is
    compiled in the sandbox (harness.illumos.check.Box) beside the headers
    of its own directory, then the harness's user-API headers."""
    gate = Path(INSIDE_GATE)
    argv = ["gcc", "-fsyntax-only", "-nostdinc", "-isystem", _gcc_include(),
            f"-I{gate / USERLAND_HEADERS}", f"-I{gate / 'usr/src/uts/common'}",
            f"-I{gate / 'usr/src/uts/intel'}", f"-I{INSIDE_WORK}/include", *TARGET, *WARNINGS]
    results = []
    for n, w in enumerate(workloads):
        here = f"{n}-{w.name}"
        files = {f"{here}/{h.name}": h for h in sorted(w.source.parent.glob("*.h"))}
        files[f"{here}/{w.source.name}"] = w.source
        files |= {f"include/{h.name}": h for h in sorted(INCLUDE_DIR.glob("*.h"))}
        box = stage(work, derived.headers, files, timeout_scale)
        model = "-m32" if w.m32 else "-m64"
        proc = box.run([*argv, model, f"{INSIDE_WORK}/{here}/{w.source.name}"])
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        ok = proc.returncode == 0 and not lines
        step = Step("compile", ok, f"illumos userland headers, {model[1:]}-bit", lines)
        results.append(DriverResult(f"workload {w.name}", [Path(w.source)], [step]))
    return results
