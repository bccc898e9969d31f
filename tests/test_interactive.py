"""`mmap-harness shell` and `mmap-harness exec` on a real guest: a real
terminal (pexpect), a real OpenSSH client, and nothing left behind however the
person leaves: `exit`, ^C while booting, or a terminal that goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect
import pytest

CLI = [sys.executable, "-m", "harness.cli"]
GUEST = "debian-bookworm"


def qemu_of(pid: int) -> list[str]:
    """QEMU processes started by harness process `pid` (its machine name says so)."""
    r = subprocess.run(["pgrep", "-fa", f"mmap-harness-{GUEST}-{pid}"],
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if "qemu-system" in line]


def scratch() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("mmap-harness-*")}


def gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while qemu_of(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not qemu_of(pid)


def spawn_shell(*args: str) -> pexpect.spawn:
    child = pexpect.spawn(CLI[0], [*CLI[1:], "shell", "--guest", GUEST, *args],
                          encoding="utf-8", timeout=180, dimensions=(40, 200))
    child.expect("ends the shell")
    child.expect(r"# ")
    return child


@pytest.mark.integration
def test_exec_returns_the_commands_status_with_drivers_loaded():
    before = scratch()
    r = subprocess.run([*CLI, "exec", "--guest", GUEST, "--driver", "mmap_remap", "--",
                        "sh", "-c", "cat /sys/module/mmap_remap/parameters/live_pages; "
                                    "test -c /dev/mmap_remap && echo 'has device'; exit 3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr
    assert r.stdout.split("\n")[:2] == ["256", "has device"]
    assert "mmap_remap loaded" in r.stderr
    r = subprocess.run([*CLI, "exec", "--guest", GUEST, "-q", "--", "uname", "-r"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("-amd64") and r.stderr == ""
    assert scratch() == before


def test_exec_refuses_bad_input_before_booting():
    r = subprocess.run([*CLI, "exec", "--guest", GUEST], capture_output=True, text=True)
    assert r.returncode == 2 and "exec needs a command" in r.stderr
    r = subprocess.run([*CLI, "shell", "--driver", "no_such_driver"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown driver(s) no_such_driver" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.integration
def test_shell_runs_commands_and_exit_ends_the_guest():
    before = scratch()
    child = spawn_shell("--driver", "mmap_fault")
    child.sendline("grep -c '^mmap_fault ' /proc/modules; echo done$((40 + 2))")
    child.expect(r"\r\n1\r\ndone42")
    child.sendline("exit 4")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    assert gone(child.pid) and scratch() == before


@pytest.mark.integration
def test_a_dropped_terminal_ends_the_shell_and_the_guest():
    before = scratch()
    child = spawn_shell()
    pid = child.pid
    assert qemu_of(pid)
    os.close(child.child_fd)        # the terminal goes away: SIGHUP, as a lost SSH session
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.2)
    assert gone(pid), qemu_of(pid)
    assert scratch() == before


@pytest.mark.integration
def test_ctrl_c_while_booting_leaves_nothing():
    before = scratch()
    proc = subprocess.Popen([*CLI, "exec", "--guest", GUEST, "--", "true"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not qemu_of(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert gone(proc.pid) and scratch() == before
