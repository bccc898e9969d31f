"""Guests started from a snapshot of their first boot (harness/snapshot.py), on real QEMU.

Every test works in a private copy of the cache (hard links to the real root
and image), whose first boot, through the CLI, saves the snapshot the tests
restore, damage and replace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import hardlinked_copy
from harness import guests, images, integrity, snapshot
from harness.cache import Cache
from harness.guest import Guest
from harness.guests import Flavour
from harness.images import GuestImage
from harness.linux import LINUX
from harness.progress import Progress
from harness.qemu import DiskImage, MachineSpec
from harness.session import DEBUG_KERNEL_ARGS

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class Snapshotted:
    """A private cache whose default guest has its snapshot, and that image in it."""

    cache: Path
    image: GuestImage
    first_boot: str         # the progress lines of the boot that saved it

    def entries(self) -> list[Path]:
        return Cache(self.cache).entries(snapshot.KIND)

    def boot(self, workdir: Path, kernel_args: tuple[str, ...] = (),
             **kwargs: object) -> Guest:
        """A guest of the image, booted as `run` boots it: through its family,
        with the debug arguments this kernel acts on."""
        return LINUX.guest(self.image, "tcg", workdir, workdir / "console.log",
                           [*DEBUG_KERNEL_ARGS, *kernel_args], 1.0, Cache(self.cache),
                           **kwargs)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def snapshotted(guest_image, mmap_cache_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshotted]:
    cache, _root, _image = hardlinked_copy(guest_image("debian-bookworm"), mmap_cache_dir,
                                           tmp_path_factory.mktemp("snapshots"))
    try:
        first = cli("exec", "--cache-dir", str(cache), "--accel", "tcg", "--", "true")
        assert first.returncode == 0, first.stderr
        with images.use(guests.find("debian-bookworm"), Flavour.TINY, Cache(cache),
                        Progress()) as image:
            yield Snapshotted(cache, image, first.stderr)
    finally:
        shutil.rmtree(cache.parent, ignore_errors=True)


def guest_time_offset(guest: Guest) -> float:
    """The guest's clock minus the host's, in seconds (to within one SSH round trip)."""
    assert guest.ssh is not None
    before = time.time()
    out = guest.ssh.run(["adjtimex"], check=True).stdout
    after = time.time()
    sec, usec = (int(re.search(rf"time\.{f}:\s*(\d+)", out).group(1))  # type: ignore[union-attr]
                 for f in ("tv_sec", "tv_usec"))
    seconds = sec + usec / 1e6
    return seconds - (before + after) / 2


def test_the_first_boot_saves_and_a_run_restores_from_it(snapshotted: Snapshotted,
                                                         tmp_path: Path):
    assert "cold boot (no snapshot of this guest yet; saved one" in snapshotted.first_boot
    (entry,) = snapshotted.entries()
    assert integrity.verify(entry) == []
    assert {p.name for p in entry.iterdir()} == {"state.bin", "console.log", "mh_resume",
                                                 "meta.json", "integrity.json"}
    r = cli("run", "--cache-dir", str(snapshotted.cache), "--accel", "tcg",
            "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"restored from snapshot {entry.name}" in r.stderr
    run_dir = (tmp_path / "latest").resolve()
    (g,) = json.loads((run_dir / "results.json").read_text())["guests"]
    assert g["status"] == "pass" and g["start"] == "restored"
    assert g["start_reason"] == f"restored from snapshot {entry.name}"
    console = (run_dir / g["dir"] / "console.log").read_text()
    marker = (f"=== mmap-harness: restored from snapshot {entry.name} "
              "(saved console above) ===\n")
    saved, after = console.split(marker)     # exactly one marker
    assert saved == (entry / "console.log").read_text()
    assert "Linux version 6.1." in saved and saved.endswith("mmap-harness: sshd started\n")
    assert "mmap-harness: loading mmap_remap" in after and "Linux version" not in after
    assert g["kernel_reports"] == []


def test_restored_guests_get_the_hosts_clock_and_fresh_randomness(snapshotted: Snapshotted,
                                                                  tmp_path: Path):
    (entry,) = snapshotted.entries()
    made = json.loads((entry / "meta.json").read_text())["made"]
    time.sleep(max(0.0, made + 10 - time.time()))   # a clock left as saved is 10 s late
    seen = []
    for n in (1, 2):
        with snapshotted.boot(tmp_path / f"restore{n}") as guest:
            ssh = guest.wait_ssh(120)
            assert guest.start.how == snapshot.RESTORED
            assert abs(guest_time_offset(guest)) < 2.0
            seen.append(ssh.run("head -c 32 /dev/urandom | od -An -tx1; "
                                "cat /proc/sys/kernel/random/boot_id", check=True).stdout)
    assert seen[0] != seen[1]
    first, second = ([line for line in s.splitlines() if line.strip()] for s in seen)
    assert first[0] != second[0] and first[-1] != second[-1]   # urandom and boot_id


def test_a_changed_kernel_argument_makes_a_new_snapshot(snapshotted: Snapshotted,
                                                        tmp_path: Path):
    (old,) = snapshotted.entries()
    arg = "mmap_harness.test=changed"
    with snapshotted.boot(tmp_path / "changed", (arg,)) as guest:
        ssh = guest.wait_ssh(120)
        assert guest.start.how == snapshot.COLD
        assert guest.start.why.startswith("no snapshot of this guest yet; saved one")
        assert arg in ssh.run(["cat", "/proc/cmdline"], check=True).stdout
    assert len(snapshotted.entries()) == 2 and old.is_dir()
    for args, entry_wanted in (((arg,), None), ((), old)):
        with snapshotted.boot(tmp_path / f"again{len(args)}", args) as guest:
            ssh = guest.wait_ssh(120)
            assert guest.start.how == snapshot.RESTORED
            assert (arg in ssh.run(["cat", "/proc/cmdline"], check=True).stdout) == bool(args)
            if entry_wanted is not None:
                assert guest.start.why == f"restored from snapshot {old.name}"


def test_a_damaged_snapshot_is_refused_and_one_qemu_cannot_load_is_replaced(
        snapshotted: Snapshotted, tmp_path: Path):
    entry = next(e for e in snapshotted.entries()
                 if "mmap_harness.test" not in (e / "meta.json").read_text())
    damage(entry / "state.bin")
    told: list[str] = []
    with snapshotted.boot(tmp_path / "damaged", say=told.append) as guest:
        guest.wait_ssh(120)
        assert guest.start.how == snapshot.COLD
        assert (f"snapshot {entry.name} refused: damaged (1 problem: state.bin: content "
                "changed); saved one") in guest.start.why
        assert any("booting cold and saving it again" in t for t in told), told
    assert integrity.verify(entry) == []        # saved again, whole

    damage(entry / "state.bin", at=200)     # sealed again: only QEMU can tell now
    reseal(entry)
    with snapshotted.boot(tmp_path / "unloadable") as guest:
        guest.wait_ssh(120)
        assert guest.start.how == snapshot.COLD
        assert ("restoring failed: QEMU exited while restoring the guest: "
                "qemu-system-x86_64: load of migration failed") in guest.start.why
        assert "booted cold to save it again" in guest.start.why
        assert "; saved one (the guest stood still" in guest.start.why
    # QEMU's complaint quotes the damaged bytes
    restore_log = (tmp_path / "unloadable" / "console.restore.log").read_bytes().decode(
        errors="replace")
    assert "mmap-harness: restored from snapshot" in restore_log
    assert "load of migration failed" in restore_log
    assert "Linux version" in (tmp_path / "unloadable" / "console.log").read_text()
    assert integrity.verify(entry) == []


def test_cold_boot_never_restores_nor_saves(snapshotted: Snapshotted):
    before = {e.name: (e / "integrity.json").stat().st_mtime_ns
              for e in snapshotted.entries()}
    r = cli("exec", "--cold-boot", "--cache-dir", str(snapshotted.cache), "--accel", "tcg",
            "--kernel-arg", "mmap_harness.test=cold", "--", "true")
    assert r.returncode == 0, r.stderr
    assert "cold boot (snapshots off (--cold-boot))" in r.stderr
    assert {e.name: (e / "integrity.json").stat().st_mtime_ns
            for e in snapshotted.entries()} == before


def test_the_key_covers_what_shapes_the_state(snapshotted: Snapshotted):
    base = Guest(snapshotted.image, "tcg", Path("/nonexistent"), Path("/nonexistent/c"),
                 list(DEBUG_KERNEL_ARGS)).machine.spec
    variants = [base, dataclasses.replace(base, name="another run's name"),
                dataclasses.replace(base, accel="kvm"),
                dataclasses.replace(base, cpu_model="max"),
                dataclasses.replace(base, memory_mib=1024), dataclasses.replace(base, cpus=1),
                dataclasses.replace(base, machine="pc"),
                dataclasses.replace(base, kernel_args=[*base.kernel_args, "quiet"])]
    keys = [snapshot.snapshot_key(snapshot.key_parts(snapshotted.image, s)) for s in variants]
    assert keys[0] == keys[1]        # a run's own machine name shapes nothing
    assert len(set(keys)) == len(variants) - 1
    assert all(k.startswith(snapshotted.image.dir.name + "-") for k in keys)


def test_disk_guests_are_never_snapshotted(snapshotted: Snapshotted, tmp_path: Path):
    spec = MachineSpec(name="x", accel="tcg", kernel=Path("/k"), initrd=Path("/i"),
                       disk=Path("/d.img"))
    disk_image = MachineSpec(name="x", accel="tcg", boot_disk=DiskImage(Path("/o"), "qcow2"))
    for s, words in ((spec, "full flavour"), (disk_image, "disk-image guest")):
        p = snapshot.plan(snapshotted.image, s, Cache(snapshotted.cache), print)
        assert (p.restore, p.save) == (None, False) and words in p.why
        assert "never snapshotted" in p.why


def damage(path: Path, at: int | None = None) -> None:
    """Overwrite 4 KiB of `path` in place, its size and times kept."""
    st = path.stat()
    path.chmod(0o600)
    with path.open("r+b") as f:
        f.seek(st.st_size // 2 if at is None else at)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    path.chmod(0o400)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def reseal(entry: Path) -> None:
    """Seal `entry` again as it is now, as snapshot.save seals it."""
    record = entry / integrity.NAME
    record.chmod(0o600)
    record.unlink()
    integrity.seal(entry, critical=[entry / snapshot.STATE], hash_below=1 << 20)
