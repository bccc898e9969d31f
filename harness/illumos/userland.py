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

from ..drivers import INCLUDE_DIR, WORKLOADS_DIR
from ..plan import Workload
from .check import DriverResult, Step
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


def check_workloads(workloads: list[Workload], derived: Derived) -> list[DriverResult]:
    """One result per workload: compiled for illumos, or why not."""
    gate = derived.headers
    argv = ["gcc", "-fsyntax-only", "-nostdinc", "-isystem", _gcc_include(),
            f"-I{gate / USERLAND_HEADERS}", f"-I{gate / 'usr/src/uts/common'}",
            f"-I{gate / 'usr/src/uts/intel'}", f"-I{WORKLOADS_DIR}", f"-I{INCLUDE_DIR}",
            *TARGET, *WARNINGS]
    results = []
    for w in workloads:
        model = "-m32" if w.m32 else "-m64"
        proc = subprocess.run([*argv, model, str(w.source)], capture_output=True, text=True,
                              check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        ok = proc.returncode == 0 and not lines
        step = Step("compile", ok, f"illumos userland headers, {model[1:]}-bit", lines)
        results.append(DriverResult(f"workload {w.name}", [Path(w.source)], [step]))
    return results
