"""Loading and unloading a module in the guest, and reading the kernel's state."""

from __future__ import annotations

from ..ssh import GuestSSH

LOG_BUFFER_BYTES = 1 << 22


def mark(ssh: GuestSSH, text: str) -> None:
    """Write a line into the guest's kernel log, so dmesg shows where we were."""
    ssh.run(["sh", "-c", 'echo "$1" > /dev/kmsg', "mark", f"mmap-harness: {text}"], timeout=30)


def insmod(ssh: GuestSSH, path: str, params: list[str], timeout: float) -> str:
    """Load the module at `path`; returns an error message, empty on success."""
    r = ssh.run(["insmod", path, *params], timeout=timeout)
    return "" if r.ok else f"insmod failed (exit {r.exit_status}): {(r.stderr or r.stdout).strip()}"


def rmmod(ssh: GuestSSH, name: str, timeout: float) -> str:
    r = ssh.run(["rmmod", name], timeout=timeout)
    return "" if r.ok else f"rmmod failed (exit {r.exit_status}): {(r.stderr or r.stdout).strip()}"


def has_char_device(ssh: GuestSSH, path: str) -> bool:
    return ssh.run(["test", "-c", path], timeout=30).ok


def taint(ssh: GuestSSH) -> int:
    return int(ssh.run(["cat", "/proc/sys/kernel/tainted"], timeout=30, check=True).stdout)


def dmesg(ssh: GuestSSH) -> str:
    # busybox reads 16 KiB by default: ask for more than any log buffer holds.
    return ssh.run(["dmesg", "-s", str(LOG_BUFFER_BYTES)], timeout=60).stdout
