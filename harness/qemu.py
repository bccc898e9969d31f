"""QEMU: the command line as a pure function, and a Machine that is always reaped.

`with Machine(spec, workdir) as m:` guarantees that QEMU is gone afterwards,
however the block ends. QEMU runs in its own session (pexpect's pty) with
PR_SET_PDEATHSIG, so it dies with the harness even on SIGKILL.
"""

from __future__ import annotations

import enum
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
from qemu.qmp.legacy import QEMUMonitorProtocol

from .console import Console
from .errors import BootError, HostError, InfraError
from .procs import die_with_parent, kill_group, stop_signals_held

QEMU_BINARY = "qemu-system-x86_64"
QMP_CONNECT_S = 15.0    # from launch to QEMU's monitor answering
QUIT_S = 10.0           # from QMP quit to the process gone, before it is killed


# Where the boot disk of a disk-image guest sits: bus 0, slot 4. OmniOS's
# cloud images record their root pool's device as /pci@0,0/pci1af4,2@4/
# blkdev@0,0:b (kayak build/cloud, HVM_Image_Finalise), a virtio block
# device in slot 4; putting it there keeps that path true.
BOOT_DISK_SLOT = "0x4"
DISK_FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class DiskImage:
    """A whole-disk image the firmware boots (its own loader and kernel),
    opened with snapshot=on: the file is never written."""

    path: Path
    format: str                     # "qcow2" | "raw"
    cdrom: Path | None = None       # attached read-only, e.g. a NoCloud seed ISO


@dataclass(frozen=True)
class MachineSpec:
    """Everything the QEMU command line is made of.

    Two boots: a Linux guest gives `kernel` and `initrd` (QEMU loads them
    directly, `kernel_args` is the command line; `disk` is an extra raw disk),
    a disk-image guest gives `boot_disk` instead and boots through the
    firmware. Exactly one of `kernel` and `boot_disk` is set.
    """

    name: str
    accel: str                      # "tcg" | "kvm"
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_args: list[str] = field(default_factory=list)
    boot_disk: DiskImage | None = None
    machine: str = "q35"
    memory_mib: int = 1024
    cpus: int = 2
    cpu_model: str = "qemu64"
    disk: Path | None = None        # opened with snapshot=on: never written
    extra_devices: list[str] = field(default_factory=list)
    firmware: str | None = None     # -bios (a file in QEMU's data directory); None: SeaBIOS

    def __post_init__(self) -> None:
        if (self.kernel is None) == (self.boot_disk is None):
            raise InfraError(f"machine {self.name}: give either a kernel or a boot disk "
                             "image, not both or neither")
        if self.kernel is not None and self.initrd is None:
            raise InfraError(f"machine {self.name}: a kernel boot needs an initrd")
        if self.boot_disk is not None:
            if self.kernel_args or self.disk is not None:
                raise InfraError(f"machine {self.name}: a disk-image guest boots its own "
                                 "kernel: no kernel arguments or extra disk")
            if self.boot_disk.format not in DISK_FORMATS:
                raise InfraError(f"machine {self.name}: disk format "
                                 f"{self.boot_disk.format!r} is not one of {DISK_FORMATS}")


def accel_args(accel: str, cpus: int) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm"]
    # Multi-threaded TCG: one host thread per vCPU (a systemd guest reaches SSH ~30% sooner).
    return ["-accel", "tcg,thread=multi" if cpus > 1 else "tcg"]


def qemu_value(text: str | Path) -> str:
    """`text` as the value of a QEMU option: a comma is doubled, so a file
    name cannot end the value and add options of its own."""
    return str(text).replace(",", ",,")


def command_line(spec: MachineSpec, qmp_socket: Path, binary: str = QEMU_BINARY,
                 incoming: bool = False) -> list[str]:
    """The argv for `spec`; SSH is forwarded from a host port QEMU picks itself.
    `incoming`: QEMU waits for a saved state (migrate-incoming) instead of booting."""
    cmd = [
        binary, "-name", spec.name,
        "-machine", spec.machine, "-m", str(spec.memory_mib), "-smp", str(spec.cpus),
        *accel_args(spec.accel, spec.cpus), "-cpu", spec.cpu_model,
        "-display", "none", "-no-reboot", "-nodefaults",
        "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
        "-monitor", "none",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        *(["-bios", spec.firmware] if spec.firmware else []),
        *(_disk_boot(spec.boot_disk) if spec.boot_disk is not None else _kernel_boot(spec)),
        # Port 0: the host kernel picks a free port, read back over QMP (no race).
        # restrict=on: the guest reaches nothing, not even the host's loopback
        # services through 10.0.2.2; the forward into the guest still works.
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
    ]
    if spec.disk is not None:
        cmd += ["-drive", f"file={qemu_value(spec.disk)},format=raw,if=virtio,snapshot=on"]
    for device in spec.extra_devices:
        cmd += ["-device", device]
    if incoming:
        cmd += ["-incoming", "defer"]
    return cmd


# QEMU's minimal firmware for a kernel it loads itself: it hands over to a
# PVH kernel 40-50 ms sooner than SeaBIOS under TCG (a tenth of the way from
# QEMU's start to SSH). It has no PCI BIOS, which a 32-bit kernel needs to find
# its NIC, and boots no disk: a bzImage or a disk image keeps SeaBIOS.
PVH_FIRMWARE = "qboot.rom"


def kernel_firmware(kernel: Path) -> str | None:
    """The firmware for booting `kernel` directly: qboot for a PVH ELF vmlinux."""
    with open(kernel, "rb") as f:
        return PVH_FIRMWARE if f.read(4) == b"\x7fELF" else None


def _kernel_boot(spec: MachineSpec) -> list[str]:
    """QEMU loads the kernel and initramfs itself: no firmware boot."""
    return ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd),
            "-append", " ".join(spec.kernel_args)]


def _disk_boot(image: DiskImage) -> list[str]:
    """The firmware boots the image's own loader from a virtio disk in
    BOOT_DISK_SLOT (snapshot=on: writes go to a temporary overlay, never the
    file); the CD-ROM, if any, sits on the q35 AHCI controller, read-only."""
    args = ["-drive", f"file={qemu_value(image.path)},format={image.format},if=none,"
                      "id=boot,snapshot=on",
            "-device", f"virtio-blk-pci,drive=boot,addr={BOOT_DISK_SLOT},bootindex=0"]
    if image.cdrom is not None:
        args += ["-drive", f"file={qemu_value(image.cdrom)},format=raw,if=none,id=seed,"
                           "media=cdrom,readonly=on",
                 "-device", "ide-cd,drive=seed,bus=ide.1"]
    return args


def qemu_version(binary: str = QEMU_BINARY) -> str:
    path = shutil.which(binary)
    if path is None:
        raise HostError(f"{binary} is not installed",
                        hint="run `bash ci/bootstrap.sh` (or apt-get install qemu-system-x86)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Machine:
    """One QEMU process with its console reader and QMP connection."""

    def __init__(self, spec: MachineSpec, workdir: Path, console_log: Path,
                 timeout_scale: float = 1.0, incoming: bool = False) -> None:
        self.spec = spec
        self.incoming = incoming    # started paused, waiting for a saved state
        self.timeout_scale = timeout_scale
        self.workdir = workdir
        self.console_log = console_log
        self.qmp_socket = workdir / "qmp.sock"
        self.state = State.NEW
        self.console: Console | None = None
        self._child: pexpect.spawn | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self.started = 0.0

    def __enter__(self) -> Machine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, qmp_timeout: float = QMP_CONNECT_S) -> None:
        """Launch QEMU; raises BootError if it exits before its monitor answers.
        Timeouts here and in stop() are base seconds times `timeout_scale`."""
        if self.state is not State.NEW:
            raise InfraError(f"machine {self.spec.name} was already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = command_line(self.spec, self.qmp_socket, incoming=self.incoming)
        (self.console_log.parent / "qemu.cmdline").write_text(" ".join(argv) + "\n")
        self.started = time.monotonic()
        self._child = pexpect.spawn(argv[0], argv[1:], encoding=None, echo=False,
                                    preexec_fn=die_with_parent, dimensions=(24, 512))
        self.state = State.RUNNING
        self.console = Console(self._child, self.console_log)
        self.console.start()
        try:
            self._connect_qmp(qmp_timeout * self.timeout_scale)
        except BaseException:
            self.stop()
            raise

    def _connect_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                assert self.console is not None
                self.console.wait_for(r"\Z", 1.0)
                raise BootError("QEMU exited at start", self.console.tail(15),
                                hint="read the QEMU message above; qemu.cmdline in the "
                                     "results directory has the full command")
            if self.qmp_socket.exists():
                with stop_signals_held():
                    qmp = QEMUMonitorProtocol(str(self.qmp_socket))
                    try:
                        qmp.connect()
                        self._qmp = qmp
                        return
                    except OSError:
                        qmp.close()
            if time.monotonic() > deadline:
                raise InfraError(f"QEMU's monitor did not answer within {timeout:.0f}s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self._child is not None and self._child.isalive()

    def wait_exit(self, timeout: float) -> bool:
        """Whether QEMU has ended (by itself) within `timeout` seconds, its
        last words read from the console."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.alive():
            return False
        deadline = time.monotonic() + 1.0   # the console reader drains what is left
        while self.console is not None and not self.console.eof and time.monotonic() < deadline:
            time.sleep(0.02)
        return True

    def _monitor(self) -> QEMUMonitorProtocol:
        if self._qmp is None or self.state is not State.RUNNING:
            raise InfraError(f"machine {self.spec.name} is not running")
        return self._qmp

    def hmp(self, command: str) -> str:
        """A human-monitor command through QMP (used where QMP has no equivalent)."""
        reply = self.qmp("human-monitor-command", **{"command-line": command})
        return reply if isinstance(reply, str) else ""

    def qmp(self, command: str, **arguments: object) -> object:
        """A QMP command's return value; InfraError when QEMU refuses it or is gone."""
        monitor = self._monitor()
        # The monitor's loop must not be left mid-command; a stop signal held
        # meanwhile is raised as the block ends, outside the `except`.
        with stop_signals_held():
            try:
                reply = monitor.cmd(command, **arguments)
            except Exception as e:  # qemu.qmp's ExecuteError, or a closed connection
                raise InfraError(f"QEMU's monitor refused `{command}`: {e}") from None
        # qemu.qmp's legacy cmd() returned the whole reply before 0.0.3, the value since.
        return reply["return"] if isinstance(reply, dict) and "return" in reply else reply

    def pass_fd(self, fd: int, name: str) -> None:
        """Hand QEMU an open file descriptor (SCM_RIGHTS), known to it as `name`
        (for a `fd:NAME` migration URI): QEMU never opens our files itself."""
        monitor = self._monitor()
        with stop_signals_held():
            monitor.send_fd_scm(fd)
        self.qmp("getfd", fdname=name)

    def ssh_port(self) -> int:
        """The host port QEMU bound for the guest's port 22."""
        table = self.hmp("info usernet")
        m = re.search(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b", table)
        if not m:
            raise InfraError(f"QEMU reported no SSH port forward:\n{table}")
        return int(m.group(1))

    def registers(self) -> str:
        """vCPU registers for a hang report; empty if the monitor is gone."""
        try:
            return self.hmp("info registers -a")
        except Exception:  # the report must not fail on a dead monitor
            return ""

    def stop(self, timeout: float = QUIT_S) -> float:
        """Quit through QMP, kill if that does not work; always reaps. Returns seconds."""
        start = time.monotonic()
        timeout *= self.timeout_scale
        if self.state is State.RUNNING and self._child is not None:
            if self._qmp is not None:
                try:
                    self._qmp.cmd("quit")
                except Exception:  # QEMU may already be gone; we kill below
                    pass
            deadline = time.monotonic() + timeout
            while self._child.isalive() and time.monotonic() < deadline:
                time.sleep(0.02)
            kill_group(self._child.pid)
            while self._child.isalive():
                time.sleep(0.01)
        self.state = State.STOPPED
        if self._qmp is not None:
            try:
                self._qmp.close()
            except (EOFError, OSError):  # QEMU closed its end first, as it does on quit
                pass
            self._qmp = None
        if self.console is not None:
            self.console.close()  # after QEMU is gone: the reader has seen EOF
        if self._child is not None:
            self._child.close(force=True)
        self.qmp_socket.unlink(missing_ok=True)
        return time.monotonic() - start
