"""A running guest: an image booted in a Machine, reachable over pinned SSH.

    with Guest(image, "tcg", workdir, console_log) as guest:
        ssh = guest.wait_ssh(timeout)     # BootError with the console tail if not
        ssh.run(["uname", "-r"])
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .errors import BootError, SSHError, SSHTrustError
from .images import GuestImage
from .keys import load_private, load_public
from .qemu import Machine, MachineSpec
from .ssh import GuestSSH
from .linux.patterns import TABLE as LINUX_TABLE
from .watcher import ReportTable, Watcher


def machine_spec(image: GuestImage, accel: str, kernel_args: list[str]) -> MachineSpec:
    q = image.definition.qemu
    return MachineSpec(name=f"mmap-harness-{image.definition.name}-{os.getpid()}",
                       kernel=image.kernel, initrd=image.initrd,
                       kernel_args=image.kernel_args + kernel_args, accel=accel,
                       machine=q.machine, memory_mib=q.memory_mib, cpus=q.cpus,
                       cpu_model=q.cpu_model, disk=image.disk)


class Guest:
    """A Linux guest booted from its image's kernel; another family's guest
    (harness.illumos.family) overrides the machine, the console's report
    table and what must happen on the console before SSH answers."""

    patterns: ReportTable = LINUX_TABLE

    def __init__(self, image: GuestImage, accel: str, workdir: Path, console_log: Path,
                 kernel_args: list[str] | None = None, timeout_scale: float = 1.0) -> None:
        self.image = image
        self.workdir = workdir
        self.timeout_scale = timeout_scale
        self.machine = Machine(self._spec(accel, kernel_args or []), workdir, console_log,
                               timeout_scale)
        self.ssh: GuestSSH | None = None
        self.watcher: Watcher | None = None
        self.boot_to_ssh_s = 0.0
        self.shutdown_s = 0.0

    def _spec(self, accel: str, kernel_args: list[str]) -> MachineSpec:
        return machine_spec(self.image, accel, kernel_args)

    def _before_ssh(self, timeout: float) -> None:
        """What the console must see before SSH can answer (BootError if it
        does not): nothing for a Linux image, whose keys are baked in."""

    def __enter__(self) -> Guest:
        self.machine.start()
        assert self.machine.console is not None
        self.watcher = Watcher(self.machine.console, self.patterns)
        return self

    def dead_reason(self) -> str | None:
        """Why the guest can no longer be used, or None while it is fine."""
        if self.watcher is not None and self.watcher.fatal.is_set():
            report = self.watcher.first_fatal()
            return f"the guest kernel crashed: {report.summary() if report else 'fatal report'}"
        if not self.machine.alive():
            return "QEMU exited"
        return None

    def crash_report(self) -> str:
        """The first fatal kernel report, whole (after letting it finish), or ''."""
        if self.watcher is None:
            return ""
        self.watcher.wait_complete()
        report = self.watcher.first_fatal()
        return report.text if report else ""

    def console_text(self) -> str:
        """Everything the console printed so far."""
        console = self.machine.console
        return console.text() if console is not None else ""

    def save_registers(self, path: Path) -> None:
        """vCPU registers through QMP, for a hang report; best effort."""
        registers = self.machine.registers()
        if registers:
            path.write_text(registers)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ssh(self, timeout: float, silence: float = 60.0,
                 abandon: Callable[[], bool] = lambda: False) -> GuestSSH:
        """Wait for the guest's sshd and log in; BootError if it never answers,
        SSHTrustError (the harness's problem, not the kernel's) if it answers
        with the wrong key or refuses ours. `timeout` and `silence` are scaled.

        The wait ends early when the kernel crashes, when the console says
        nothing for `silence` seconds (a hang), or when `abandon` returns True
        (the caller no longer needs the guest, e.g. the build failed).
        """
        assert self.watcher is not None and self.machine.console is not None
        self._before_ssh(timeout)   # then SSH has the whole `timeout` once more
        port = self.machine.ssh_port()
        watcher = self.watcher

        def keep_waiting() -> bool:
            return (self.machine.alive() and not watcher.fatal.is_set()
                    and watcher.silent_for < silence and not abandon())
        try:
            self.ssh = GuestSSH.wait(port, load_public(self.image.host_key_pub),
                                     load_private(self.image.client_key), timeout,
                                     keep_waiting, self.timeout_scale)
        except SSHTrustError as e:  # the harness's problem, never the kernel's
            raise SSHTrustError(e.message, hint=(
                "another process may own that port, or the image was altered: rebuild it "
                f"with `mmap-harness images clean --guest {self.image.definition.name}` "
                "and run again")) from None
        except SSHError as e:
            why, hung = e.message, False
            if watcher.fatal.is_set():
                why = self.dead_reason() or why
            elif self.machine.alive() and watcher.silent_for >= silence:
                why, hung = f"the console printed nothing for {silence:.0f}s (hung?)", True
            if self.machine.alive():
                self.save_registers(self.machine.console_log.parent / "registers.txt")
            raise BootError(f"{self.image.definition.name} did not come up: {why}",
                            self.crash_report() or self.machine.console.tail(25),
                            hint="console.log in the results directory has the whole boot",
                            hung=hung) from None
        self.ssh.dead = self.dead_reason
        self.boot_to_ssh_s = time.monotonic() - self.machine.started
        return self.ssh

    def stop(self) -> float:
        """Close SSH and quit QEMU (always reaped); returns the shutdown seconds."""
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        self.shutdown_s = self.machine.stop()
        if self.watcher is not None:
            self.watcher.close()
        return self.shutdown_s
