"""SSH keys made for each image: the guest's host key and the harness's client key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def write_keypair(private: Path, comment: str) -> str:
    """Write a new ed25519 key (0600) and its `.pub`; return the public line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    line = f"{pub} {comment}\n"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    Path(f"{private}.pub").write_text(line)
    return line


def load_private(path: Path) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def load_public(path: Path) -> paramiko.PKey:
    """The key in an OpenSSH `.pub` line, as paramiko compares keys."""
    kind, blob = path.read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
