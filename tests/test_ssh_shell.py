"""GuestSSH.run on real guests: commands go through one long-lived shell
(harness/ssh.py, _Shell), and each must still behave as if it had an SSH
session of its own: its own output, status and state, stdin at EOF, and a
shell that overran or died replaced for the next command."""

from __future__ import annotations

import threading

import pytest

from harness.errors import CommandTimeout

pytestmark = pytest.mark.mmap_guest("debian-bookworm", "debian-trixie")


def test_a_command_leaves_nothing_for_the_next(guest):
    ssh = guest.ssh
    assert ssh.run("cd /tmp; X=1; export Y=2; umask 077").ok
    r = ssh.run('pwd; echo "${X:-unset} ${Y:-unset}"; umask')
    assert r.stdout == f"{ssh.run('echo ~').stdout.strip()}\nunset unset\n0022\n", r


def test_output_status_and_streams_are_the_commands_own(guest):
    ssh = guest.ssh
    r = ssh.run(["printf", "a\nb"])     # no newline at the end: none added
    assert (r.exit_status, r.stdout, r.stderr) == (0, "a\nb", "")
    r = ssh.run("echo out; echo err >&2; exit 7")
    assert (r.exit_status, r.stdout, r.stderr) == (7, "out\n", "err\n")
    # What looks like the shell's own end-of-command line is only output.
    r = ssh.run("echo '@@mmap-harness-0123456789abcdef-1 5'")
    assert (r.exit_status, r.stdout) == (0, "@@mmap-harness-0123456789abcdef-1 5\n")
    big = ssh.run("i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done")
    assert big.stdout.splitlines()[-1] == "line19999" and len(big.stdout.splitlines()) == 20000


def test_stdin_is_empty(guest):
    r = guest.ssh.run(["cat"], timeout=20)   # would wait for input that never comes
    assert (r.exit_status, r.stdout) == (0, "")


def test_a_killed_command_reads_as_killed(guest):
    ssh = guest.ssh
    r = ssh.run(["sh", "-c", "echo before; kill -9 $$"])
    assert (r.exit_status, r.stdout) == (-1, "before\n")
    # A command that kills the shell it runs in ($$ is the long-lived shell)
    r = ssh.run("echo going; kill -9 $$")
    assert (r.exit_status, r.stdout) == (-1, "going\n")
    assert ssh.run("echo back").stdout == "back\n"


def test_an_overrun_leaves_the_next_command_a_working_shell(guest):
    ssh = guest.ssh
    with pytest.raises(CommandTimeout):
        ssh.run(["sleep", "30"], timeout=1)
    r = ssh.run("echo ok")
    assert (r.exit_status, r.stdout) == (0, "ok\n")
    ssh.run(["pkill", "-x", "sleep"])


def test_commands_from_two_threads_at_once(guest):
    """The shell takes one command at a time; another thread's gets a session."""
    ssh = guest.ssh
    got: dict[int, str] = {}

    def one(n: int) -> None:
        got[n] = ssh.run(f"sleep 0.5; echo {n}").stdout

    threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == {0: "0\n", 1: "1\n", 2: "2\n"}
