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

from .errors import BootError, SSHError
from .images import GuestImage
from .keys import load_private, load_public
from .qemu import Machine, MachineSpec
from .ssh import GuestSSH


def machine_spec(image: GuestImage, accel: str, kernel_args: list[str]) -> MachineSpec:
    q = image.definition.qemu
    return MachineSpec(name=f"mmap-harness-{image.definition.name}-{os.getpid()}",
                       kernel=image.kernel, initrd=image.initrd,
                       kernel_args=image.kernel_args + kernel_args, accel=accel,
                       machine=q.machine, memory_mib=q.memory_mib, cpus=q.cpus,
                       cpu_model=q.cpu_model, disk=image.disk)


class Guest:
    def __init__(self, image: GuestImage, accel: str, workdir: Path, console_log: Path,
                 kernel_args: list[str] | None = None) -> None:
        self.image = image
        self.machine = Machine(machine_spec(image, accel, kernel_args or []), workdir,
                               console_log)
        self.ssh: GuestSSH | None = None
        self.boot_to_ssh_s = 0.0
        self.shutdown_s = 0.0

    def __enter__(self) -> Guest:
        self.machine.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ssh(self, timeout: float,
                 abandon: Callable[[], bool] = lambda: False) -> GuestSSH:
        """Wait for the guest's sshd and log in; BootError if it never answers.

        `abandon` returning True stops the wait early (the caller already
        knows the guest is not needed, e.g. the build failed).
        """
        port = self.machine.ssh_port()
        try:
            self.ssh = GuestSSH.wait(port, load_public(self.image.root.host_key_pub),
                                     load_private(self.image.root.client_key), timeout,
                                     lambda: self.machine.alive() and not abandon())
        except SSHError as e:
            assert self.machine.console is not None
            raise BootError(f"{self.image.definition.name} did not come up: {e.message}",
                            self.machine.console.tail(25),
                            hint="console.log in the results directory has the whole boot") \
                from None
        self.boot_to_ssh_s = time.monotonic() - self.machine.started
        return self.ssh

    def stop(self) -> float:
        """Close SSH and quit QEMU (always reaped); returns the shutdown seconds."""
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        self.shutdown_s = self.machine.stop()
        return self.shutdown_s
