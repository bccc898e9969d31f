"""A running guest: an image booted in a Machine, reachable over pinned SSH.

    with Guest(image, "tcg", workdir, console_log) as guest:
        ssh = guest.wait_ssh(timeout)     # BootError with the console tail if not
        ssh.run(["uname", "-r"])

Given a cache (`snapshots=`), a guest starts from the snapshot of its own
first boot when there is a sound one, and its first boot saves one
(harness/snapshot.py); `start` says which it was, and why.
"""

from __future__ import annotations

import re
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import host_clock, snapshot
from .cache import Cache
from .errors import BootError, GuestDied, HarnessError, InfraError, Interrupted, SSHError, \
    SSHHandshakeError, SSHTrustError
from .images import GuestImage
from .keys import load_private, load_public
from .qemu import Machine, MachineSpec, kernel_firmware
from .ssh import GuestSSH
from .linux.patterns import TABLE as LINUX_TABLE
from .watcher import REPORT_END_S, ReportTable, Watcher


# The debug kernel's KASAN shadow, kmemleak's pool, page poisoning and
# lockdep's tables do not fit in a 512 MiB guest: it panicked at boot
# ("System is deadlocked on memory").
DEBUG_MEMORY_MIB = 1536


def _least_memory(image: GuestImage) -> int:
    return DEBUG_MEMORY_MIB if getattr(image, "kernel_build", None) is not None else 0


# What a guest's console says once its sshd listens: the tiny init's line,
# or systemd's for the full flavour's ssh.service (Type=notify: after the bind).
SSHD_LISTENS = re.compile(rf"{re.escape(snapshot.READY_LINE)}|Started .*OpenBSD Secure Shell server")


def sshd_listens(line: str) -> bool:
    return SSHD_LISTENS.search(line) is not None


# Under TCG every vCPU's TSC is QEMU's one virtual tick counter (paused and
# migrated with the guest), so the TSCs are synchronized by construction; the
# kernel's warp check, racing across TCG threads, finds them "unsynchronized"
# anyway and falls back to the HPET. Then each clock read is an emulated MMIO
# access, and printk's timestamps lag when timer ticks come late (by 0.1-0.2 s
# at /init, measured): the floor the loop is measured against was wrong by that.
# The TSC's rate comes with it (harness/host_clock.py).
TCG_KERNEL_ARGS = ["tsc=reliable"]


def machine_spec(image: GuestImage, accel: str, kernel_args: list[str],
                 cache: Cache | None = None) -> MachineSpec:
    """`cache` keeps the host's measured TSC rate a TCG guest is told."""
    q = image.definition.qemu
    tcg = TCG_KERNEL_ARGS + host_clock.tcg_kernel_args(cache) if accel == "tcg" else []
    return MachineSpec(name=f"mmap-harness-{image.definition.name}-{os.getpid()}",
                       kernel=image.kernel, initrd=image.initrd,
                       kernel_args=image.kernel_args + tcg + kernel_args, accel=accel,
                       machine=q.machine, memory_mib=max(q.memory_mib, _least_memory(image)),
                       cpus=q.cpus,
                       cpu_model=q.cpu_model, disk=image.disk,
                       firmware=kernel_firmware(image.kernel))


class Guest:
    """A Linux guest booted from its image's kernel; another family's guest
    (harness.illumos.family) overrides the machine, the console's report
    table and what must happen on the console before SSH answers."""

    patterns: ReportTable = LINUX_TABLE

    def __init__(self, image: GuestImage, accel: str, workdir: Path, console_log: Path,
                 kernel_args: list[str] | None = None, timeout_scale: float = 1.0,
                 snapshots: Cache | None = None,
                 say: Callable[[str], None] = lambda _text: None) -> None:
        """`snapshots`: the cache to restore from and save to (None: always a cold
        boot); `say` tells a person about a snapshot refused."""
        self.image = image
        self.workdir = workdir
        self.timeout_scale = timeout_scale
        self._snapshots = snapshots
        self.machine = Machine(self._spec(accel, kernel_args or []), workdir, console_log,
                               timeout_scale)
        self.ssh: GuestSSH | None = None
        self.watcher: Watcher | None = None
        self.boot_to_ssh_s = 0.0
        self.shutdown_s = 0.0
        self.start = snapshot.Start()
        self._say = say
        self._plan = snapshot.Plan()
        self._saved_console = ""    # a restored guest's: the boot its snapshot was made in
        # Set when the console says sshd listens (or the guest was restored
        # from a snapshot taken after it did): SSH then waits patiently.
        self._sshd_ready = threading.Event()

    def _spec(self, accel: str, kernel_args: list[str]) -> MachineSpec:
        return machine_spec(self.image, accel, kernel_args, self._snapshots)

    def _before_ssh(self, timeout: float) -> None:
        """What the console must see before SSH can answer (BootError if it
        does not): nothing for a Linux image, whose keys are baked in."""

    def __enter__(self) -> Guest:
        self._plan = snapshot.plan(self.image, self.machine.spec, self._snapshots, self._say)
        self.start = snapshot.Start(snapshot.COLD, self._plan.why)
        if self._plan.restore is None or not self._restore():
            self.machine.start()
        self._watch()
        return self

    def _watch(self) -> None:
        """The crash watcher reads this boot's console output only: a
        restored guest's saved part was read when it was printed."""
        assert self.machine.console is not None
        self.watcher = Watcher(self.machine.console, self.patterns)
        self._sshd_ready.clear()
        if self._saved_console:
            self._sshd_ready.set()
        self.machine.console.subscribe(self._on_line)

    def _on_line(self, line: str) -> None:
        if sshd_listens(line):
            self._sshd_ready.set()

    def _restore(self) -> bool:
        """Start QEMU from the planned snapshot; False (with QEMU gone and the
        reason in `start`) when it cannot be, and the caller boots cold."""
        assert self._plan.restore is not None
        m = self.machine
        restoring = Machine(m.spec, m.workdir, m.console_log, m.timeout_scale, incoming=True)
        saved = snapshot.saved_console(self._plan.restore)
        m.console_log.parent.mkdir(parents=True, exist_ok=True)
        m.console_log.write_text(saved)  # QEMU's output is appended after the marker
        try:
            restoring.start()
            snapshot.load_state(restoring, self._plan)
        except (InfraError, BootError) as e:
            restoring.stop()
            self._restore_failed(f"restoring failed: {e.message.splitlines()[0]}")
            return False
        except BaseException:  # nobody else will stop it: we are still in __enter__
            restoring.stop()
            raise
        self.machine, self._saved_console = restoring, saved
        self.start = snapshot.Start(snapshot.RESTORED, self._plan.why)
        return True

    def _restore_failed(self, why: str) -> None:
        """Keep the failed restore's console beside the cold boot's, drop the
        snapshot (the cold boot saves another) and say why."""
        log = self.machine.console_log
        if log.exists():
            log.rename(log.with_name("console.restore.log"))
        self._plan = snapshot.discard(self._plan)
        self.start = snapshot.Start(snapshot.COLD, (
            f"{why}; booted cold{' to save it again' if self._plan.save else ''} "
            "(console.restore.log keeps the restore)"))
        self._say(self.start.why)

    @property
    def kernel_config(self) -> str:
        """The booted kernel's config, where the image knows it ("" for an illumos image)."""
        return getattr(self.image, "kernel_config", "")

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
        self.watcher.wait_complete(REPORT_END_S * self.timeout_scale)
        report = self.watcher.first_fatal()
        return report.text if report else ""

    def console_text(self) -> str:
        """Everything the console printed so far (for a restored guest, from
        the saved boot's first line on, as console.log has it)."""
        console = self.machine.console
        return self._saved_console + (console.text() if console is not None else "")

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

        A restored guest must answer within RESTORED_SSH_S and is resumed
        (its clock set, its random state renewed) before this returns; if
        either fails it is replaced by a cold boot. A first boot saves its
        snapshot on the way, before anything has connected to it.
        """
        if self.start.how == snapshot.RESTORED:
            try:
                return self._resumed(silence, abandon)
            except (BootError, InfraError, GuestDied) as e:
                if abandon():
                    raise
                self._reboot_cold(f"the restored guest failed: {e.message.splitlines()[0]}")
        if self._plan.save:
            started = time.monotonic()
            self._save_snapshot(timeout, silence, abandon)
            timeout = max(timeout - (time.monotonic() - started), 1.0)
        return self._connect(timeout, silence, abandon)

    def _resumed(self, silence: float, abandon: Callable[[], bool]) -> GuestSSH:
        assert self._plan.restore is not None
        ssh = self._connect(snapshot.RESTORED_SSH_S * self.timeout_scale, silence, abandon)
        snapshot.resume(ssh, self._plan.restore)
        self.boot_to_ssh_s = time.monotonic() - self.machine.started
        return ssh

    def _reboot_cold(self, why: str) -> None:
        """Replace a restored guest that failed with a cold boot of the same machine."""
        self.stop()
        registers = self.machine.console_log.with_name("registers.txt")
        if registers.exists():
            registers.rename(registers.with_name("registers.restore.txt"))
        self._restore_failed(why)
        m, self._saved_console = self.machine, ""
        self.machine = Machine(m.spec, m.workdir, m.console_log, m.timeout_scale)
        self.machine.start()
        self._watch()

    def _save_snapshot(self, timeout: float, silence: float,
                       abandon: Callable[[], bool]) -> None:
        """Once sshd has started, and before anything has connected to it,
        save the guest as its snapshot; `start` says how that went. The
        guest runs on either way."""
        console = self.machine.console
        assert console is not None
        why = self.start.why
        if not snapshot.wait_ready(console, timeout, self._booting(silence, abandon)):
            self.start = snapshot.Start(snapshot.COLD, f"{why}; none saved: the console "
                                        f"never said {snapshot.READY_LINE!r}")
            return
        try:
            paused = snapshot.save(self.machine, self.image, self._plan, console)
            why = f"{why}; saved one (the guest stood still {paused:.1f}s)"
        except Interrupted:
            raise
        except HarnessError as e:
            why = f"{why}; none saved: {e.message.splitlines()[0]}"
            self._say(why)
        self.start = snapshot.Start(snapshot.COLD, why)

    def _booting(self, silence: float, abandon: Callable[[], bool]) -> Callable[[], bool]:
        """Whether a wait on the booting guest should go on: QEMU alive, no
        fatal kernel report, the console not silent for `silence` seconds,
        and the caller still wanting the guest. Once sshd said it listens a
        quiet console is no hang (a full guest waits at its login prompt)."""
        watcher = self.watcher
        assert watcher is not None
        return lambda: (self.dead_reason() is None and not abandon() and
                        (watcher.silent_for < silence or self._sshd_ready.is_set()))

    def _connect(self, timeout: float, silence: float,
                 abandon: Callable[[], bool]) -> GuestSSH:
        assert self.watcher is not None and self.machine.console is not None
        self._before_ssh(timeout)   # then SSH has the whole `timeout` once more
        port = self.machine.ssh_port()
        watcher = self.watcher
        try:
            self.ssh = GuestSSH.wait(port, load_public(self.image.host_key_pub),
                                     load_private(self.image.client_key), timeout,
                                     self._booting(silence, abandon), self.timeout_scale,
                                     self._sshd_ready.is_set)
        except SSHTrustError as e:  # the harness's problem, never the kernel's
            raise SSHTrustError(e.message, hint=(
                "another process may own that port, or the image was altered: rebuild it "
                f"with `mmap-harness images clean --guest {self.image.definition.name}` "
                "and run again")) from None
        except SSHHandshakeError as e:
            if not watcher.fatal.is_set() and self.machine.alive():
                raise SSHHandshakeError(
                    f"{self.image.definition.name} booted and its sshd answered, but {e.message}",
                    hint="another process may own the forwarded port, or the host is too "
                         "loaded for the handshake: try --timeout-scale 2") from None
            raise self._not_up(e.message, silence) from None
        except SSHError as e:
            raise self._not_up(e.message, silence) from None
        self.ssh.dead = self.dead_reason
        self.boot_to_ssh_s = time.monotonic() - self.machine.started
        return self.ssh

    def _not_up(self, why: str, silence: float) -> BootError:
        """The boot failed before SSH worked: why, as the console tells it."""
        watcher = self.watcher
        assert watcher is not None and self.machine.console is not None
        hung = False
        if watcher.fatal.is_set():
            why = self.dead_reason() or why
        elif (self.machine.alive() and watcher.silent_for >= silence
              and not self._sshd_ready.is_set()):
            why, hung = f"the console printed nothing for {silence:.0f}s (hung?)", True
        if self.machine.alive():
            self.save_registers(self.machine.console_log.parent / "registers.txt")
        return BootError(f"{self.image.definition.name} did not come up: {why}",
                         self.crash_report() or self.machine.console.tail(25),
                         hint="console.log in the results directory has the whole boot",
                         hung=hung)

    def stop(self) -> float:
        """Close SSH and quit QEMU (always reaped); returns the shutdown seconds."""
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        self.shutdown_s = self.machine.stop()
        if self.watcher is not None:
            self.watcher.close()
        return self.shutdown_s
