"""Bad input and broken hosts: one clear message that says what to do, exit
status 2 (or 1 for a failed build), no traceback, logs kept."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import guests

EXIT_INPUT = 2


def harness(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def explained(r: subprocess.CompletedProcess, words: str, status: int = EXIT_INPUT) -> None:
    assert r.returncode == status, r.stderr
    assert words in r.stderr and "what to do:" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_qemu(tmp_path: Path):
    r = harness("run", "--results", str(tmp_path), env={"PATH": str(tmp_path)})
    explained(r, "qemu-system-x86_64 is not installed")


def test_missing_debootstrap(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").symlink_to(shutil.which("qemu-system-x86_64"))
    r = harness("run", "--cache-dir", str(tmp_path / "cache"), "--results", str(tmp_path),
                env={"PATH": str(bin_dir)})
    explained(r, "debootstrap is not installed")


def test_cache_dir_that_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = harness("images", "build", "--cache-dir", str(blocker / "cache"))
    explained(r, "cannot create the cache directory")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_no_space_in_the_cache_dir(tmp_path: Path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    try:
        r = harness("images", "build", "--cache-dir", str(small))
    finally:
        subprocess.run(["umount", str(small)], check=True)
    explained(r, "not enough space in")


def test_unreachable_mirror_fails_the_build_with_its_log(tmp_path: Path):
    text = (guests.GUEST_DIR / "debian-bookworm.toml").read_text()
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    text = text.replace('suite = "bookworm"', 'suite = "bookworm"\nmirror = "http://127.0.0.1:9/debian"')
    definition = tmp_path / "debian-bookworm.toml"
    definition.write_text(text)
    r = harness("images", "build", "--guest", str(definition), "--cache-dir",
                str(tmp_path / "cache"))
    explained(r, "debootstrap of bookworm failed", status=1)
    assert "mirror is reachable" in r.stderr
    logs = list((tmp_path / "cache" / "logs").glob("*.log"))
    assert logs and "127.0.0.1:9" in logs[0].read_text()
    assert not (tmp_path / "cache" / "roots").exists() or not any(
        p for p in (tmp_path / "cache" / "roots").iterdir() if not p.name.startswith("."))


def test_damaged_cached_image_is_refused(tmp_path: Path, guest_image):
    image = guest_image("debian-bookworm")
    cache = tmp_path / "cache"
    (cache / "roots").mkdir(parents=True)
    (cache / "roots" / image.root.dir.name).symlink_to(image.root.dir)
    copy = cache / "images" / image.dir.name
    shutil.copytree(image.dir, copy)
    kernel = copy / image.kernel.name
    kernel.chmod(stat.S_IWUSR | stat.S_IRUSR)
    with kernel.open("r+b") as f:
        f.truncate(1024)
    r = harness("run", "--cache-dir", str(cache), "--results", str(tmp_path / "results"))
    explained(r, "is damaged")
    assert "images clean --guest debian-bookworm" in r.stderr


def definition_with(tmp_path: Path, key: str, value: str) -> Path:
    text = (guests.GUEST_DIR / "debian-bookworm.toml").read_text()
    text = text.replace('suite = "bookworm"', f'suite = "bookworm"\n{key} = "{value}"')
    definition = tmp_path / "debian-bookworm.toml"
    definition.write_text(text)
    return definition


def test_missing_archive_keyring_is_refused_before_debootstrap(tmp_path: Path):
    definition = definition_with(tmp_path, "keyring", str(tmp_path / "no-such-keyring.gpg"))
    r = harness("images", "build", "--guest", str(definition), "--cache-dir",
                str(tmp_path / "cache"))
    explained(r, "no-such-keyring.gpg is missing")
    assert not (tmp_path / "cache" / "logs").exists()   # debootstrap never started


def test_release_signed_by_unknown_keys_stops_debootstrap(tmp_path: Path):
    """The archive is real, the keys are not the ones that signed it: refused."""
    definition = definition_with(tmp_path, "keyring",
                                 "/usr/share/keyrings/debian-archive-removed-keys.gpg")
    r = harness("images", "build", "--guest", str(definition), "--cache-dir",
                str(tmp_path / "cache"))
    explained(r, "debootstrap of bookworm failed", status=1)
    assert "signature error" in r.stderr
    (log,) = (tmp_path / "cache" / "logs").glob("*.log")
    assert "--force-check-gpg" in log.read_text()
    assert re.search(r"signed by unknown key|Release signed|NO_PUBKEY|BADSIG|gpgv",
                     log.read_text()), log.read_text()[-2000:]
    roots = tmp_path / "cache" / "roots"
    assert not roots.exists() or not [p for p in roots.iterdir() if not p.name.startswith(".")]
