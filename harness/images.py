"""Guest images in the cache: build root first, then the flavour's boot files.

    definition --rootfs.build--> build root --initramfs.build--> tiny image
                                            --_build_disk-----> full image
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import initramfs, kernel_image, rootfs
from .cache import Cache
from .errors import HostError, ImageBuildError
from .guests import Flavour, GuestDefinition
from .procs import run_logged
from .progress import Progress
from .rootfs import BuildRoot

DISK_SLACK_MIB = 512
# Space a build needs in the cache, measured with some margin.
ROOT_BYTES = 2 * 2**30
IMAGE_BYTES = {Flavour.TINY: 256 * 2**20, Flavour.FULL: 3 * 2**30}


@dataclass(frozen=True)
class GuestImage:
    definition: GuestDefinition
    flavour: Flavour
    dir: Path
    root: BuildRoot

    @property
    def kernel(self) -> Path:
        """The PVH vmlinux where the kernel has the entry note, else the bzImage."""
        vmlinux = self.dir / "vmlinux"
        return vmlinux if vmlinux.is_file() else self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def disk(self) -> Path | None:
        return self.dir / "disk.img" if self.flavour is Flavour.FULL else None

    @property
    def kernel_args(self) -> list[str]:
        args = ["console=ttyS0,115200", "panic=-1"]
        if self.flavour is Flavour.FULL:
            args += ["root=/dev/vda", "rw", "net.ifnames=0"]
        return args + self.definition.qemu.kernel_args


def require_host_tools() -> None:
    if os.geteuid() != 0:
        raise HostError("building a guest image needs root (debootstrap and chroot)",
                        hint="run as root, e.g. `sudo .venv/bin/mmap-harness ...`")
    for tool in ("debootstrap", "chroot", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise HostError(f"{tool} is not installed",
                            hint="run `bash ci/bootstrap.sh` to install the host tools")


def ensure(definition: GuestDefinition, flavour: Flavour, cache: Cache,
           progress: Progress) -> GuestImage:
    """The cached image for `definition`/`flavour`, built first if absent."""
    root_key = rootfs.recipe_key(definition)
    waiting = lambda what: lambda: progress.say(  # noqa: E731
        "image", f"waiting for another process building {what}")
    if not cache.path("roots", root_key).is_dir():
        require_host_tools()

    def build_root(tmp: Path) -> None:
        log = cache.root / "logs" / f"{root_key}-{int(time.time())}.log"
        rootfs.build(definition, tmp, log, cache.root / "debs", progress)

    root = BuildRoot(cache.get_or_build("roots", root_key, build_root,
                                        waiting(f"the {definition.name} build root"),
                                        ROOT_BYTES))
    _verify(root.dir, ["manifest.json", "keys/harness_ed25519", "root/etc/ssh/sshd_config"],
            definition.name)
    image_key = _image_key(root_key, definition, flavour)

    def build_image(tmp: Path) -> None:
        progress.say("image", f"assembling the {flavour.value} image of {definition.name}")
        kernel_image.write_boot_kernel(
            root.tree / "boot" / f"vmlinuz-{root.kernel_release}", tmp)
        if flavour is Flavour.TINY:
            initramfs.build(root, definition, tmp)
        else:
            _build_disk(root, tmp, cache.root / "logs" / f"{image_key}.log")
        sizes = {f.name: f.stat().st_size for f in tmp.iterdir()}
        (tmp / "manifest.json").write_text(json.dumps(
            {"guest": definition.name, "flavour": flavour.value, "root": root.dir.name,
             "kernel_release": root.kernel_release, "built": time.time(), "files": sizes},
            indent=2))
        for f in tmp.iterdir():
            f.chmod(0o444)  # base images are never written; QEMU opens them read-only

    path = cache.get_or_build("images", image_key, build_image,
                              waiting(f"the {definition.name} {flavour.value} image"),
                              IMAGE_BYTES[flavour])
    _verify_sizes(path, definition.name)
    return GuestImage(definition, flavour, path, root)


def _damaged(entry: Path, guest: str, what: str) -> HostError:
    return HostError(f"the cached image {entry} is damaged: {what}",
                     hint=f"remove it with `mmap-harness images clean --guest {guest}` "
                          "and run again (it will be rebuilt)")


def _verify(entry: Path, files: list[str], guest: str) -> None:
    for name in files:
        if not os.access(entry / name, os.R_OK):
            raise _damaged(entry, guest, f"{name} is missing or unreadable")


def _verify_sizes(entry: Path, guest: str) -> None:
    """Every boot file is there with the size it was built with."""
    try:
        files = json.loads((entry / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        raise _damaged(entry, guest, "manifest.json is missing or unreadable") from None
    for name, size in files.items():
        path = entry / name
        if not os.access(path, os.R_OK) or path.stat().st_size != size:
            raise _damaged(entry, guest, f"{name} is missing, unreadable or truncated")


def _image_key(root_key: str, definition: GuestDefinition, flavour: Flavour) -> str:
    h = hashlib.sha256(root_key.encode())
    h.update(flavour.value.encode())
    h.update(json.dumps(asdict(definition.tiny), sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(kernel_image.__file__).read_bytes())
    if flavour is Flavour.TINY:
        for f in initramfs.recipe_files():
            h.update(f.read_bytes())
    return f"{root_key.rsplit('-', 1)[0]}-{flavour.value}-{h.hexdigest()[:16]}"


def _build_disk(root: BuildRoot, out: Path, log: Path) -> None:
    tree, release = root.tree, root.kernel_release
    used = sum(p.lstat().st_size for p in tree.rglob("*") if not p.is_symlink())
    size_mib = used * 5 // 4 // 2**20 + DISK_SLACK_MIB
    rc = run_logged(["mkfs.ext4", "-q", "-F", "-L", "mmap-root", "-d", str(tree),
                     str(out / "disk.img"), f"{size_mib}M"], log)
    if rc != 0:
        raise ImageBuildError("mkfs.ext4 could not make the disk image", log=str(log))
    shutil.copyfile(tree / "boot" / f"initrd.img-{release}", out / "initrd.img")


def list_images(cache: Cache) -> list[dict]:
    rows = []
    for kind in ("roots", "images"):
        for entry in cache.entries(kind):
            size = sum(p.lstat().st_size for p in entry.rglob("*"))
            rows.append({"kind": kind, "name": entry.name, "path": str(entry),
                         "size_mib": size // 2**20})
    return rows


def current_keys(definitions: list[GuestDefinition]) -> set[str]:
    """The cache entries today's definitions and recipes would use."""
    keys = set()
    for d in definitions:
        root_key = rootfs.recipe_key(d)
        keys.add(root_key)
        keys.update(_image_key(root_key, d, f) for f in Flavour)
    return keys


def clean(cache: Cache, guest: str | None = None,
          keep: frozenset[str] = frozenset()) -> list[Path]:
    """Remove cached roots and images (of one guest, or all) except `keep`;
    returns what went."""
    removed = []
    for kind in ("roots", "images"):
        for entry in cache.entries(kind):
            if entry.name in keep:
                continue
            if guest is None or entry.name.startswith(f"{guest}-"):
                cache.remove(entry)
                removed.append(entry)
    return removed
