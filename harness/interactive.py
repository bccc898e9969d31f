"""A guest for a person: `mmap-harness shell` and `mmap-harness exec`.

Like vng, the guest is reached with the host's own OpenSSH client (a real
terminal, job control, ^C going to the guest), pinned to the image's host key
through a known_hosts file of its own and logged in with the image's client
key. The LiveGuest around it is reaped however the client ends: `exit`, a
failed command, ^C while booting, SIGTERM, or SIGHUP from a dropped terminal
(the CLI turns both signals into Interrupted).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from .errors import HostError
from .live import LiveGuest
from .ssh import HOST, USER


def openssh_argv(live: LiveGuest, workdir: Path, tty: bool) -> list[str]:
    """`ssh` to the guest, trusting only the image's host key."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise HostError("no `ssh` client on this host",
                        hint="install openssh-client (ci/bootstrap.sh does)")
    assert live.guest is not None
    port = live.guest.machine.ssh_port()
    known = workdir / "known_hosts"
    key = live.image.host_key_pub.read_text().split()
    known.write_text(f"[{HOST}]:{port} {key[0]} {key[1]}\n")
    return [ssh, "-p", str(port), "-i", str(live.image.client_key),
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=5",
            "-t" if tty else "-T", f"{USER}@{HOST}"]


def shell(live: LiveGuest, workdir: Path) -> int:
    """An interactive login shell in the guest; its exit status."""
    return subprocess.run(openssh_argv(live, workdir, tty=True)).returncode


def execute(live: LiveGuest, workdir: Path, command: list[str]) -> int:
    """Run `command` (an argv, quoted for the guest's shell) with this
    process's stdin, stdout and stderr; the command's exit status (255:
    ssh itself failed, as with ssh)."""
    argv = [*openssh_argv(live, workdir, tty=False), "--", shlex.join(command)]
    return subprocess.run(argv).returncode
