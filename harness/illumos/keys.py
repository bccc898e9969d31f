"""The SSH keys of one illumos guest run: the harness's client key, which
root in the guest accepts, and the host key the guest's sshd must show.

A Linux image gets its keys when the harness builds it; an illumos guest's
image is the user's, so the harness makes both pairs for each run and gives
them to the guest (NoCloud seed, or the serial console). The host key is
then pinned exactly as for Linux guests (harness/ssh.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..keys import write_keypair

CLIENT_COMMENT = "mmap-harness"
HOST_COMMENT = "mmap-harness-host"


@dataclass(frozen=True)
class GuestKeys:
    """Both key pairs, in one private directory."""

    dir: Path

    @property
    def client_key(self) -> Path:
        """The harness's private key (0600), for harness.keys.load_private."""
        return self.dir / "harness_ed25519"

    @property
    def client_public(self) -> str:
        """The line that goes into root's authorized_keys."""
        return Path(f"{self.client_key}.pub").read_text().strip()

    @property
    def host_key(self) -> Path:
        """The guest's private host key (0600): installed as
        /etc/ssh/ssh_host_ed25519_key."""
        return self.dir / "ssh_host_ed25519_key"

    @property
    def host_key_pub(self) -> Path:
        """The pinned host key, for harness.keys.load_public."""
        return Path(f"{self.host_key}.pub")

    @property
    def host_private(self) -> str:
        return self.host_key.read_text()

    @property
    def host_public(self) -> str:
        return self.host_key_pub.read_text().strip()


def make_keys(directory: Path) -> GuestKeys:
    """New ed25519 key pairs in `directory` (made 0700 if absent)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keys = GuestKeys(directory)
    write_keypair(keys.client_key, CLIENT_COMMENT)
    write_keypair(keys.host_key, HOST_COMMENT)
    return keys
