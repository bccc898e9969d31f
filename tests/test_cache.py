"""The cache: damaged entries are found, entries in use are never deleted, one
artifact has one identity, and the keys in it stay private."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import debug_kernel, guests, images, integrity, keys, rootfs
from harness.cache import Cache
from harness.guests import Flavour
from harness.rootfs import BuildRoot


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- integrity: a small synthetic tree -------------------------------------------------

@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    entry = tmp_path / "entry"
    (entry / "dir" / "sub").mkdir(parents=True)
    (entry / "dir" / "a.txt").write_text("hello")
    (entry / "dir" / "cc1").write_bytes(b"\x7fELF compiler" * 100)
    (entry / "dir" / "other").write_text("other")
    (entry / "link").symlink_to("dir/a.txt")
    (entry / "dir" / "a.txt").chmod(0o644)
    integrity.seal(entry, [entry / "dir" / "cc1"])
    return entry


def keep_mtime(path: Path, change) -> None:
    """Apply `change`, then put the old mtime back: only other signs can tell."""
    st = path.stat()
    change()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_untouched_tree_passes(sealed: Path):
    assert integrity.verify(sealed) == []
    assert mode(sealed / integrity.NAME) == 0o400


def test_a_copy_that_keeps_times_is_the_same_entry(sealed: Path, tmp_path: Path):
    """`cp -a` (or a restored CI cache that keeps times) gives new inodes only."""
    subprocess.run(["cp", "-a", str(sealed), str(tmp_path / "copy")], check=True)
    assert integrity.verify(tmp_path / "copy") == []


def _unlink_and_replace(p: Path) -> None:
    data = p.read_bytes()
    p.unlink()
    p.write_bytes(data.upper())  # same size


def _replace_quietly(p: Path) -> None:
    """Unlink and replace with the same size, the file's and its directory's
    mtimes put back; the old inode lives on (as the original of a hard-linked
    copy does), so the new file cannot get its number."""
    os.link(p, p.parent.parent.parent / "old-inode")
    keep_mtime(p.parent, lambda: keep_mtime(p, lambda: _unlink_and_replace(p)))


@pytest.mark.parametrize("damage, expected", [
    (lambda e: (e / "dir/a.txt").unlink(), "dir/a.txt: deleted"),
    (lambda e: (e / "dir/a.txt").write_text("hello, world"), "dir/a.txt: changed (size 5 -> 12"),
    (lambda e: _unlink_and_replace(e / "dir/a.txt"), "dir/a.txt: "),
    (lambda e: _replace_quietly(e / "dir/cc1"), "dir/cc1: content changed"),
    (lambda e: (e / "dir/a.txt").chmod(0o666), "dir/a.txt: changed (mode 0o644 -> 0o666)"),
    (lambda e: ((e / "link").unlink(), (e / "link").symlink_to("dir/other")),
     "link: changed (target dir/a.txt -> dir/other"),
    (lambda e: (e / "dir/sub/new.h").write_text("#define X 1"), "dir/sub/new.h: added"),
    (lambda e: (e / "dir/sub").rmdir(), "dir/sub: deleted"),
    (lambda e: keep_mtime(e / "dir/cc1", lambda: (e / "dir/cc1").write_bytes(
        b"\x7fELF compilex" * 100)), "dir/cc1: content changed"),
], ids=["deleted", "size", "replaced-same-size", "replaced-mtimes-kept", "mode", "symlink", "added", "dir-deleted",
        "content"])
@pytest.mark.parametrize("memo", [False, True], ids=["hashing", "stamps-kept"])
def test_damage_is_found(sealed: Path, damage, expected, memo: bool, tmp_path: Path):
    """Also when the stamps of the files found right before are kept."""
    stamps = tmp_path / "stamps" if memo else None
    assert integrity.verify(sealed, stamps) == []
    assert (stamps is None) or stamps.is_file()
    damage(sealed)
    problems = integrity.verify(sealed, stamps)
    assert problems[0].startswith(expected), problems  # the cause first, echoes after


def test_stamps_spare_hashing_until_a_file_is_touched(sealed: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    hashed: list[str] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    stamps = tmp_path / "stamps"
    assert integrity.verify(sealed, stamps) == [] and "cc1" in hashed
    hashed.clear()
    assert integrity.verify(sealed, stamps) == [] and hashed == []
    cc1 = sealed / "dir" / "cc1"
    keep_mtime(cc1, lambda: os.chmod(cc1, mode(cc1)))   # same bytes, new ctime
    assert integrity.verify(sealed, stamps) == [] and hashed == ["cc1"]
    subprocess.run(["cp", "-a", str(sealed), str(tmp_path / "copy")], check=True)
    hashed.clear()
    assert integrity.verify(tmp_path / "copy", stamps) == [] and "cc1" in hashed  # new inodes


def test_missing_record_is_a_problem(sealed: Path):
    (sealed / integrity.NAME).unlink()
    assert integrity.verify(sealed) == [f"{integrity.NAME}: missing or unreadable"]


def test_summary_shows_the_first_few():
    text = integrity.summary([f"f{i}: deleted" for i in range(8)])
    assert text.splitlines() == ["  f0: deleted", "  f1: deleted", "  f2: deleted",
                                 "  f3: deleted", "  f4: deleted", "  ... and 3 more"]


def test_links_resolve_inside_the_tree(tmp_path: Path):
    tree = tmp_path / "root"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "etc/alternatives").mkdir(parents=True)
    (tree / "bin").symlink_to("usr/bin")
    (tree / "usr/bin/x86_64-linux-gnu-gcc-12").write_text("gcc")
    (tree / "usr/bin/gcc-12").symlink_to("x86_64-linux-gnu-gcc-12")
    (tree / "usr/bin/gcc").symlink_to("gcc-12")
    (tree / "etc/alternatives/cc").symlink_to("/usr/bin/gcc")
    (tree / "usr/bin/cc").symlink_to("/etc/alternatives/cc")
    (tree / "usr/bin/loop").symlink_to("loop")
    gcc = tree / "usr/bin/x86_64-linux-gnu-gcc-12"
    assert integrity.resolve_in(tree, "/bin/cc") == gcc
    assert integrity.resolve_in(tree, "/usr/bin/gcc") == gcc
    assert integrity.resolve_in(tree, "/usr/bin/loop") is None
    assert integrity.resolve_in(tree, "/usr/bin/clang") is None


# --- leases ----------------------------------------------------------------------------

HOLD_LEASE = """
import sys
from pathlib import Path
from harness.cache import Cache
with Cache(Path(sys.argv[1])).lease("roots", sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


def clean_cli(cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "images", "clean",
                           "--cache-dir", str(cache)], capture_output=True, text=True,
                          timeout=60, check=True)


def test_clean_skips_an_entry_leased_by_another_process(tmp_path: Path):
    cache = Cache(tmp_path / "cache")
    entry = cache.get_or_build("roots", "g-1", lambda d: (d / "f").write_text("x"))
    other = cache.get_or_build("roots", "g-2", lambda d: (d / "f").write_text("y"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(cache.root), "g-1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        r = clean_cli(cache.root)
        assert f"kept {entry}: in use by a running harness" in r.stdout
        assert f"removed {other}" in r.stdout
        assert (entry / "f").read_text() == "x" and not other.exists()
    finally:
        holder.communicate("", timeout=30)  # end of stdin: the holder lets go
    assert holder.returncode == 0
    r = clean_cli(cache.root)
    assert r.stdout == f"removed {entry}\n"
    assert not entry.exists() and not (entry.parent / ".g-1.use").exists()


def test_lease_is_taken_again_after_clean_removed_its_file(tmp_path: Path):
    cache = Cache(tmp_path / "cache")
    entry = cache.get_or_build("roots", "g-1", lambda d: None)
    assert cache.remove(entry)
    with cache.lease("roots", "g-1"):
        entry.mkdir()
        assert not cache.remove(entry) and entry.is_dir()
    assert cache.remove(entry) and not entry.exists()


# --- identity --------------------------------------------------------------------------

def fake_root(path: Path, build_id: str) -> BuildRoot:
    """The parts of a build root that an image's identity is made of."""
    (path / "keys").mkdir(parents=True, exist_ok=True)
    (path / "root/etc/ssh").mkdir(parents=True, exist_ok=True)
    if not (path / "keys/harness_ed25519").exists():
        keys.write_keypair(path / "keys/harness_ed25519", "mmap-harness")
        keys.write_keypair(path / "root/etc/ssh/ssh_host_ed25519_key", "root@guest")
    (path / "manifest.json").write_text(json.dumps(
        {"build_id": build_id, "kernel_sha256": "ab" * 32, "kernel_release": "6.1.0-x"}))
    return BuildRoot(path)


def test_image_key_follows_the_identity_of_its_root(tmp_path: Path):
    definition = guests.default_guest()
    root = fake_root(tmp_path / "debian-bookworm-0123456789abcdef", "1" * 32)
    first = images._image_key(root, definition, Flavour.TINY)
    assert images._image_key(root, definition, Flavour.TINY) == first  # stable
    assert first.startswith("debian-bookworm-tiny-")
    assert images._image_key(root, definition, Flavour.FULL) != first
    rebuilt = fake_root(root.dir, "2" * 32)
    assert images._image_key(rebuilt, definition, Flavour.TINY) != first
    fake_root(root.dir, "1" * 32)
    (root.dir / "root/etc/ssh/ssh_host_ed25519_key").unlink()
    keys.write_keypair(root.dir / "root/etc/ssh/ssh_host_ed25519_key", "root@guest")
    assert images._image_key(root, definition, Flavour.TINY) != first  # a new host key


def test_stale_clean_keeps_the_images_of_existing_current_roots(tmp_path: Path):
    definition = guests.default_guest()
    cache = Cache(tmp_path / "cache")
    root_key = rootfs.recipe_key(definition)
    # the debug kernel's own build root is kept too (its kernel and image once they exist)
    kbuild_key = rootfs.recipe_key(debug_kernel.kbuild_definition(definition))
    assert images.current_keys([definition], cache) == {root_key, kbuild_key}  # no image yet
    root = fake_root(cache.path("roots", root_key), "3" * 32)
    kept = images.current_keys([definition], cache)
    assert kept == {root_key, kbuild_key,
                    *(images._image_key(root, definition, f) for f in Flavour)}


# --- permissions -----------------------------------------------------------------------

def test_cache_dirs_are_made_and_fixed_private(tmp_path: Path):
    old = os.umask(0o022)
    try:
        cache = Cache(tmp_path / "cache")
        assert mode(cache.kind_dir("accel-probe")) == 0o700 and mode(cache.root) == 0o700
        loose = cache.root / "roots" / "g-1"
        loose.mkdir(parents=True)
        for d in (cache.root, cache.root / "roots", loose):
            d.chmod(0o755)
        assert cache.get_or_build("roots", "g-1", lambda d: None) == loose
        assert [mode(d) for d in (cache.root, cache.root / "roots", loose)] == [0o700] * 3
    finally:
        os.umask(old)


def test_a_real_cached_root_and_image_verify_quickly(guest_image):
    image = guest_image("debian-bookworm")
    hashed = json.loads((image.root.dir / integrity.NAME).read_text())["sha256"]
    release = image.root.kernel_release
    for wanted in (f"root/boot/vmlinuz-{release}", "/cc1", "-gcc-", "-ld", "-as",
                   "root/usr/bin/make", "/Makefile", "scripts/Makefile.build",
                   "include/config/auto.conf", "include/generated/autoconf.h",
                   "root/usr/bin/busybox", "root/usr/sbin/sshd", "keys/harness_ed25519",
                   "root/etc/ssh/ssh_host_ed25519_key", "manifest.json"):
        assert any(wanted in rel for rel in hashed), wanted
    assert set(json.loads((image.dir / integrity.NAME).read_text())["sha256"]) >= {
        image.kernel.name, image.initrd.name, images.CLIENT_KEY, images.HOST_KEY_PUB}
    for entry, limit in ((image.root.dir, 1.0), (image.dir, 0.5)):
        start = time.monotonic()
        assert integrity.verify(entry) == []
        took = time.monotonic() - start
        print(f"verify {entry.name}: {took:.3f}s")
        assert took < limit


# --- a deleted root is rebuilt with its image, no manual step --------------------------

@pytest.mark.integration
def test_deleting_a_root_and_running_again_gives_a_working_guest(tmp_path: Path,
                                                                 hardlinked_cache):
    cache, root, image = hardlinked_cache()
    old_build_id = BuildRoot(root).build_id
    shutil.rmtree(root)
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--driver", "mmap_remap",
                        "--no-debug-boot", "--cache-dir", str(cache), "--results", str(results)],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout + r.stderr
    assert BuildRoot(root).build_id != old_build_id and integrity.verify(root) == []
    new_images = [p for p in (cache / "images").iterdir()
                  if not p.name.startswith(".") and p != image]
    assert len(new_images) == 1 and integrity.verify(new_images[0]) == []
    assert image.is_dir()  # the image cut from the old root was left alone, not reused
    data = json.loads(next(results.glob("2*/results.json")).read_text())
    assert data["status"] == "pass"


BUILD_ONCE = """
import sys, time
from pathlib import Path
from harness.cache import Cache

def build(tmp: Path) -> None:
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    time.sleep(1.5)   # long enough for the other worker to find the build under way
    (tmp / "payload").write_text("image")

print(Cache(Path(sys.argv[1])).get_or_build("images", "guest-tiny-0123", build))
"""


def test_two_workers_asking_at_once_build_an_entry_once(tmp_path: Path):
    """pytest-xdist workers (or two runs) share one cache: the second waits
    on the first's build lock and takes what it published."""
    log = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_ONCE, str(tmp_path / "cache"),
                               str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    paths = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert log.read_text() == "built\n" and len(paths) == 1
    assert (Path(paths.pop()) / "payload").read_text() == "image"
