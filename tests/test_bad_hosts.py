"""Bad input and broken hosts: one clear message that says what to do, exit
status 2 (or 1 for a failed build), no traceback, logs kept."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import guests, integrity

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


def _refused_as_damaged(cache: Path, results: Path, entry: Path, booted: bool) -> str:
    """Run against a damaged cache: exit 2 naming the entry and the clean
    command, nothing compiled, and no guest booted unless `booted` (a build
    root is checked by the build, which starts with the boot)."""
    r = harness("run", "--cache-dir", str(cache), "--results", str(results))
    explained(r, f"{entry} is damaged")
    assert f"`mmap-harness images clean --guest debian-bookworm --cache-dir {cache}`" \
        in r.stderr
    (run_dir,) = [d for d in results.iterdir() if not d.is_symlink()]
    guest_dir = run_dir / "debian-bookworm-tiny"
    assert not (guest_dir / "build").exists()          # no compile was attempted
    (guest,) = json.loads((run_dir / "results.json").read_text())["guests"]
    assert (guest["status"], guest["error_kind"]) == ("error", "infra")   # not the driver's
    assert f"{entry} is damaged" in guest["error"]
    if not booted:
        assert not (guest_dir / "console.log").exists()
    return r.stderr


def test_damaged_build_root_is_refused_before_any_compile(tmp_path: Path, hardlinked_cache,
                                                          guest_image):
    cache, root, _image = hardlinked_cache()
    tree = root / "root"
    (header,) = tree.glob("usr/src/linux-headers-*-common/include/linux/mm.h")
    header.unlink()
    gcc = integrity.resolve_in(tree, "/usr/bin/gcc")
    assert gcc is not None
    gcc.unlink()  # a new file in its place: the original's link is untouched
    gcc.write_text("#!/bin/sh\necho 'mm.h: No such file or directory' >&2\nexit 1\n")
    gcc.chmod(0o755)
    err = _refused_as_damaged(cache, tmp_path / "results", root, booted=True)
    assert f"{header.relative_to(root)}: deleted" in err
    assert f"{gcc.relative_to(root)}: changed (" in err
    assert "failed to compile" not in err
    assert integrity.verify(guest_image("debian-bookworm").root.dir) == []  # original intact


def test_damaged_cached_image_is_refused(tmp_path: Path, hardlinked_cache, guest_image):
    cache, _root, image = hardlinked_cache()
    kernel = image / "vmlinux"
    data = kernel.read_bytes()
    kernel.unlink()
    kernel.write_bytes(data[:1024])  # a truncated copy; the original keeps its link
    err = _refused_as_damaged(cache, tmp_path / "results", image, booted=False)
    assert "vmlinux: changed (size" in err
    assert integrity.verify(guest_image("debian-bookworm").dir) == []  # original intact


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
    assert not list((tmp_path / "cache").glob("logs/*.log"))   # debootstrap never started


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
