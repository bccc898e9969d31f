"""One driver's life in a booted guest: insmod, workloads, checks, rmmod.

Whatever step is running when the guest dies is recorded as that step's
result: `kernel-crash` with the kernel's report when the console showed a
fatal one (or QEMU vanished), `error` with the vCPU registers saved when a
command hung. Then GuestDied is raised again: a dead guest runs nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import checks, workloads
from .errors import CommandTimeout, GuestDied
from .family import KernelFamily
from .guest import Guest
from .plan import HOLDER, DriverPlan
from .results import ERROR, KERNEL_CRASH, DriverResult, Timings, WorkloadResult
from .ssh import GuestSSH
from .watcher import KernelReport
# error_kind of a driver: it would not load or unload, or a command in its run hung.
DRIVER, HANG = "driver", "hang"


def leak_report(leaked: list[str]) -> KernelReport:
    """kmemleak's objects as one report of kind `kmemleak` (its file, not the console)."""
    text = "\n".join(leaked)
    return KernelReport("kmemleak", False, leaked[0].splitlines()[0], 0.0,
                        text.splitlines(), complete=True)


@dataclass(frozen=True)
class Limits:
    command_s: float
    workload_s: float
    env: tuple[tuple[str, str], ...] = ()   # given to every workload (fuzz seed)


class DriverRun:
    """`ko` is the built module file; what loading means is the family's."""

    def __init__(self, family: KernelFamily, guest: Guest, ssh: GuestSSH, plan: DriverPlan,
                 ko: Path, out_dir: Path, limits: Limits, timings: Timings,
                 say: Callable[[str, str], None],
                 static: WorkloadResult | None = None) -> None:
        """`static`: the module's static checks (harness:sparse), recorded first."""
        self.guest, self.ssh, self.plan, self.ko = guest, ssh, plan, ko
        self.family, self.kernel = family, family.ops(ssh, guest.kernel_config)
        self.module = family.module_name(ko)
        self.out_dir, self.limits, self.timings, self.say = out_dir, limits, timings, say
        self.result = DriverResult(plan.key)
        self.step = "load"
        self.static = static

    def run(self) -> DriverResult:
        if self.static is not None:
            self._record(self.static)
        try:
            if self._load():
                self._workloads()
                self._unload()
        except GuestDied as e:
            self._died(str(e))
            raise
        except CommandTimeout as e:
            self._hung(e)
            raise GuestDied(f"a command hung during {self.step}") from None
        return self.result

    def _set_step(self, step: str) -> None:
        self.step = step

    def _record(self, w: WorkloadResult) -> None:
        self.result.workloads.append(w)
        self.say("run", f"{self.result.name}/{w.name}: {w.status} {w.message}".split("\n")[0])

    def _load(self) -> bool:
        d, remote, start = self.result, workloads.REMOTE_DIR, time.monotonic()
        self.free_before = self.kernel.free_kib()
        self.kernel.mark(f"loading {self.module}")
        d.error = self.kernel.load(f"{remote}/{self.ko.name}", self.plan.module_params,
                                   self.limits.command_s)
        device = self.plan.device
        if not d.error and device and not self.kernel.has_device(device):
            d.error = f"{device} did not appear after the module was loaded"
        d.loaded = not d.error
        d.error_kind = DRIVER if d.error else ""
        self.timings.load_s = round(self.timings.load_s + time.monotonic() - start, 3)
        self.say("load", f"{self.module}: {'loaded' if d.loaded else d.error}")
        return d.loaded

    def _workloads(self) -> None:
        remote, start = workloads.REMOTE_DIR, time.monotonic()
        (self.out_dir / "workloads").mkdir(exist_ok=True)
        for w in self.plan.workloads:
            self.step = w.name
            argv = [f"{remote}/{w.name}", *([self.plan.device] if self.plan.device else [])]
            if self.limits.env:
                argv = ["env", *(f"{k}={v}" for k, v in self.limits.env), *argv]
            result, output = workloads.run(self.ssh, w.name, argv, self.limits.workload_s)
            (self.out_dir / "workloads" / f"{self.plan.key}.{w.name}.out").write_text(output)
            self._record(result)
        if self.plan.spec is not None:
            self.step = "harness:counters"
            self._record(self.kernel.counters_settled(self.module))
            self.step = "harness:rmmod-busy"
            self._record(self.kernel.unload_refused_while_mapped(
                f"{remote}/{HOLDER}", self.plan.spec.device, self.module))
        self.timings.workloads_s = round(self.timings.workloads_s + time.monotonic() - start, 3)

    def _unload(self) -> None:
        d, start = self.result, time.monotonic()
        self.step = "unload"
        scope = self.kernel.leak_scope(self.module)
        d.error = self.kernel.unload(self.module, self.limits.command_s)
        d.error_kind = DRIVER if d.error else ""
        d.taint = self.kernel.taint()
        d.taint_flags = self.family.taint_flags(d.taint)
        since = f"mmap-harness: loading {self.module}"
        if d.error:
            self._record(self.kernel.log_clean(self.kernel.kernel_log(), since))
        else:
            for row, leaked in checks.after_unload(
                    self.kernel, self.module, since, self.plan.spec is not None,
                    self.free_before, scope, self._set_step):
                self._record(row)
                if leaked and self.guest.watcher is not None:
                    self.guest.watcher.add(leak_report(leaked))
        self.timings.load_s = round(self.timings.load_s + time.monotonic() - start, 3)

    def _died(self, reason: str) -> None:
        trace = self.guest.crash_report()
        report = self.guest.watcher.first_fatal() if self.guest.watcher else None
        metrics = {"kind": report.kind} if report else {}
        message = f"{reason} during {self.step}"
        if not trace:
            message += " (no kernel report on the console; see console.log)"
        self._record(WorkloadResult(self.step, KERNEL_CRASH, metrics,
                                    f"{message}\n{trace}".rstrip()))
        self.result.error, self.result.error_kind = message, GuestDied.kind
        if trace:
            self.say("crash", f"{self.module}: kernel report:\n{trace}")

    def _hung(self, e: CommandTimeout) -> None:
        registers = self.out_dir / "registers.txt"
        self.guest.save_registers(registers)
        assert self.guest.machine.console is not None
        tail = self.guest.machine.console.tail(15)
        message = (f"{self.step} timed out after {e.timeout:.0f}s (the guest counts as hung); "
                   f"vCPU registers in {registers.name}, last console lines:\n{tail}")
        self._record(WorkloadResult(self.step, ERROR, {}, message, e.timeout))
        self.result.error, self.result.error_kind = f"a command hung during {self.step}", HANG
