"""Guest images in the cache: build root first, then the flavour's boot files.

    definition --rootfs.build--> build root --initramfs.build--> tiny image
                                            --_build_disk-----> full image
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import initramfs, integrity, kernel_image, rootfs
from . import debug_kernel
from .debug_kernel import KernelBuild
from .cache import Cache, default_cache_dir
from .errors import CacheDamaged, ConfigError, HostError, ImageBuildError
from .guests import Flavour, GuestDefinition
from .procs import run_logged
from .progress import Progress
from .rootfs import BuildRoot

DISK_SLACK_MIB = 512
# Space a build needs in the cache, measured with some margin.
ROOT_BYTES = 2 * 2**30
IMAGE_BYTES = {Flavour.TINY: 256 * 2**20, Flavour.FULL: 3 * 2**30}
# Image files below this are hashed at every use (~0.05 s for a tiny image);
# bigger ones (the full flavour's disk) are checked by size and mtime.
HASH_BELOW = 256 * 2**20
# The keys an image is reached with, copied from its root at image build.
CLIENT_KEY, HOST_KEY_PUB = "keys/harness_ed25519", "keys/ssh_host_ed25519_key.pub"
# Kernel variants: the suite's packaged kernel, or the debug build of its source.
STOCK, DEBUG = "stock", debug_kernel.VARIANT
KERNELS = (STOCK, DEBUG)


@dataclass(frozen=True)
class GuestImage:
    definition: GuestDefinition
    flavour: Flavour
    dir: Path
    root: BuildRoot
    # What this use had to build first ("root", "image"): empty on a warm start.
    built: tuple[str, ...] = ()
    # Checks the build root, once, before anything is compiled in it (a run
    # whose products all come from the artifact cache never pays for it).
    verify_root: Callable[[], None] = field(default=lambda: None, compare=False)
    # The debug kernel the image boots; None: the root's packaged kernel.
    kernel_build: KernelBuild | None = None

    @property
    def kernel_variant(self) -> str:
        return STOCK if self.kernel_build is None else DEBUG

    @property
    def kernel_release(self) -> str:
        """What the guest's `uname -r` says, and what modules are built for."""
        return self.root.kernel_release if self.kernel_build is None \
            else self.kernel_build.release

    @functools.cached_property
    def kernel_config(self) -> str:
        """The booted kernel's .config (boot options are checked against it)."""
        if self.kernel_build is not None:
            return self.kernel_build.config
        return (self.root.tree / "boot" / f"config-{self.root.kernel_release}").read_text()

    @property
    def compiler(self) -> str:
        """The build root's gcc, first --version line."""
        return self.root.manifest["compiler"]

    @property
    def kernel_compiler(self) -> str:
        """What built the guest's kernel (its CONFIG_CC_VERSION_TEXT)."""
        return self.root.manifest["kernel_compiler"]

    @property
    def client_key(self) -> Path:
        """The harness's private key the guest accepts (0600)."""
        return self.dir / CLIENT_KEY

    @property
    def host_key_pub(self) -> Path:
        """The guest's host key, pinned: any other is refused."""
        return self.dir / HOST_KEY_PUB

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


@contextlib.contextmanager
def use(definition: GuestDefinition, flavour: Flavour, cache: Cache,
        progress: Progress, kernel: str = STOCK,
        timeout_scale: float = 1.0) -> Iterator[GuestImage]:
    """The verified image for `definition`/`flavour` booting the `kernel`
    variant, built first if absent, with leases on it and its build root
    (and debug kernel) held until the block ends. The builds' timeouts are
    multiplied by `timeout_scale`.

    The leases are taken before anything is built or checked, so `images
    clean` can never delete an entry between its check and its use.
    """
    if definition.debian is None:
        raise ConfigError(f"{definition.name} is an {definition.family} guest: it boots its "
                          "own disk image, the harness builds and caches nothing for it",
                          hint="`images build` and `images clean` are for Linux guests")
    if kernel not in KERNELS:
        raise ConfigError(f"unknown kernel variant {kernel!r}",
                          hint=f"choose one of: {', '.join(KERNELS)}")
    if kernel == DEBUG and flavour is not Flavour.TINY:
        raise ConfigError("the debug kernel boots the tiny flavour only (the full flavour's "
                          "initrd comes from Debian's packaged kernel)",
                          hint="drop --flavour full, or --kernel debug")
    if kernel == DEBUG and definition.debian.arch not in debug_kernel.ARCHES:
        raise ConfigError(f"{definition.name} is an {definition.debian.arch} guest: the debug "
                          "kernel is built for amd64 guests only (KASAN and "
                          "PAGE_TABLE_CHECK exist for 64-bit x86 only)",
                          hint="run --kernel debug on an amd64 guest, such as debian-bookworm")
    built: list[str] = []
    with contextlib.ExitStack() as held:
        root, verify_root = leased_root(definition, cache, progress, held, built,
                                        timeout_scale)
        kernel_build = None
        if kernel == DEBUG:
            kernel_build = _leased_debug_kernel(definition, cache, progress, held, built,
                                                timeout_scale)
            verify_root = _Once(_both(verify_root, lambda: _check(
                kernel_build.dir, "debug kernel", definition, cache)))
        image_key = _image_key(root, definition, flavour, kernel_build)
        waiting = lambda what: lambda: progress.say(  # noqa: E731
            "image", f"waiting for another process {what}")
        held.enter_context(cache.lease("images", image_key, waiting("cleaning the image")))

        def build_image(tmp: Path) -> None:
            progress.say("image", f"assembling the {flavour.value} image of {definition.name}")
            built.append("image")
            verify_root()
            _build_image(root, definition, flavour, tmp,
                         cache.kind_dir("logs") / f"{image_key}.log", kernel_build,
                         timeout_scale)

        path = cache.get_or_build(
            "images", image_key, build_image,
            waiting(f"building the {definition.name} {flavour.value} image"),
            IMAGE_BYTES[flavour])
        _check(path, "image", definition, cache)
        yield GuestImage(definition, flavour, path, root, tuple(built), verify_root,
                         kernel_build)


def _leased_debug_kernel(definition: GuestDefinition, cache: Cache, progress: Progress,
                         held: contextlib.ExitStack, built: list[str],
                         timeout_scale: float) -> KernelBuild:
    """The debug kernel of `definition`, built first (in a build root of its
    own) if absent, leased until `held` closes."""
    kdef = debug_kernel.kbuild_definition(definition)
    kroot, verify_kroot = leased_root(kdef, cache, progress, held, built, timeout_scale)
    name = debug_kernel.key(definition, kroot)
    held.enter_context(cache.lease(debug_kernel.KIND, name))
    if not cache.path(debug_kernel.KIND, name).is_dir():
        verify_kroot()
        built.append("kernel")
    return debug_kernel.ensure_kernel(definition, kroot, cache, progress, timeout_scale)


def leased_root(definition: GuestDefinition, cache: Cache, progress: Progress,
                held: contextlib.ExitStack, built: list[str],
                timeout_scale: float = 1.0) -> tuple[BuildRoot, Callable[[], None]]:
    """The build root of `definition`, built first if absent ("root" is then
    added to `built`), leased until `held` closes; and its check, to be
    called before the root is compiled in or cut from."""
    root_key = rootfs.recipe_key(definition)
    waiting = lambda what: lambda: progress.say(  # noqa: E731
        "image", f"waiting for another process {what}")
    held.enter_context(cache.lease("roots", root_key, waiting("cleaning the build root")))
    if not cache.path("roots", root_key).is_dir():
        require_host_tools()
    fresh: list[str] = []

    def build_root(tmp: Path) -> None:
        log = cache.kind_dir("logs") / f"{root_key}-{int(time.time())}.log"
        fresh.append("root")
        rootfs.build(definition, tmp, log, cache.kind_dir("debs"), progress, timeout_scale)

    root = BuildRoot(cache.get_or_build(
        "roots", root_key, build_root,
        waiting(f"building the {definition.name} build root"), ROOT_BYTES))
    built.extend(fresh)
    return root, _Once(lambda: None if fresh else
                       _check(root.dir, "build root", definition, cache))


def ensure(definition: GuestDefinition, flavour: Flavour, cache: Cache,
           progress: Progress, kernel: str = STOCK, timeout_scale: float = 1.0) -> GuestImage:
    """The cached image and its build root, built first if absent and
    verified; no lease is kept."""
    with use(definition, flavour, cache, progress, kernel, timeout_scale) as image:
        image.verify_root()
        return image


def _both(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
    def check() -> None:
        first()
        then()
    return check


class _Once:
    """`check()` runs on the first call only; a failure is raised to every caller."""

    def __init__(self, check: Callable[[], None]) -> None:
        self._check = check
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if not self._done:
                self._check()
                self._done = True


def _build_image(root: BuildRoot, definition: GuestDefinition, flavour: Flavour,
                 out: Path, log: Path, kernel_build: KernelBuild | None = None,
                 timeout_scale: float = 1.0) -> None:
    if kernel_build is None:
        release = root.kernel_release
        kernel_image.write_boot_kernel(root.tree / "boot" / f"vmlinuz-{release}", out)
        modules = root.tree / "lib/modules" / release
    else:
        release = kernel_build.release
        shutil.copyfile(kernel_build.bzimage, out / "vmlinuz")   # see KernelBuild.bzimage
        modules = kernel_build.modules
    if flavour is Flavour.TINY:
        initramfs.build(root, definition, out, modules, timeout_scale)
    else:
        _build_disk(root, out, log)
    sizes = {f.name: f.stat().st_size for f in out.iterdir()}
    (out / "manifest.json").write_text(json.dumps(
        {"guest": definition.name, "flavour": flavour.value, "root": root.dir.name,
         "root_build_id": root.build_id, "kernel_release": release,
         "kernel": None if kernel_build is None else kernel_build.dir.name,
         "built": time.time(), "files": sizes}, indent=2))
    (out / "keys").mkdir(mode=0o700)
    for source, target in ((root.client_key, CLIENT_KEY),
                           (root.client_key_pub, f"{CLIENT_KEY}.pub"),
                           (root.host_key_pub, HOST_KEY_PUB)):
        shutil.copyfile(source, out / target)
    for f in out.rglob("*"):
        if f.is_file():  # base images are never written; QEMU opens them read-only
            f.chmod(0o600 if f == out / CLIENT_KEY else 0o400)
    integrity.seal(out, hash_below=HASH_BELOW)


def _check(entry: Path, what: str, definition: GuestDefinition, cache: Cache) -> None:
    """Refuse a damaged entry, before anything is compiled against or booted from it."""
    problems = integrity.verify(entry, cache.memo(entry))
    if problems:
        where = "" if cache.root == default_cache_dir() else f" --cache-dir {cache.root}"
        raise CacheDamaged(
            f"the cached {what} {entry} is damaged ({len(problems)} "
            f"problem{'s' if len(problems) > 1 else ''}):\n{integrity.summary(problems)}",
            hint=f"run `mmap-harness images clean --guest {definition.name}{where}`, "
                 "then run again (it will be rebuilt)")


def _image_key(root: BuildRoot, definition: GuestDefinition, flavour: Flavour,
               kernel_build: KernelBuild | None = None) -> str:
    """Everything an image is cut from: the recipe, and the identity of the
    very root (and debug kernel) it comes from (a rebuilt root or kernel
    never reuses an older image)."""
    h = hashlib.sha256(root.dir.name.encode())
    h.update(flavour.value.encode())
    variant = ""
    if kernel_build is not None:
        h.update(f"{kernel_build.dir.name} {kernel_build.manifest['build_id']}".encode())
        variant = f"-{DEBUG}"
    h.update(json.dumps(asdict(definition.tiny), sort_keys=True).encode())
    h.update(f"{root.build_id} {root.manifest['kernel_sha256']} {integrity.FORMAT}".encode())
    for key in (root.host_key_pub, root.client_key, root.client_key_pub):
        h.update(integrity.sha256_file(key).encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(kernel_image.__file__).read_bytes())
    if flavour is Flavour.TINY:
        for f in initramfs.recipe_files():
            h.update(f.read_bytes())
    return f"{root.dir.name.rsplit('-', 1)[0]}-{flavour.value}{variant}-{h.hexdigest()[:16]}"


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
    for kind in ("roots", debug_kernel.KIND, "images"):
        for entry in cache.entries(kind):
            size = sum(p.lstat().st_size for p in entry.rglob("*"))
            rows.append({"kind": kind, "name": entry.name, "path": str(entry),
                         "size_mib": size // 2**20})
    return rows


def current_keys(definitions: list[GuestDefinition], cache: Cache) -> set[str]:
    """The cache entries today's definitions and recipes use: their build
    roots, and the images that would be cut from the roots that exist."""
    keys = set()
    for d in definitions:
        if d.debian is None:  # boots its own disk image: nothing of it is cached
            continue
        root_key = rootfs.recipe_key(d)
        keys.add(root_key)
        root = BuildRoot(cache.path("roots", root_key))
        kroot_key = rootfs.recipe_key(debug_kernel.kbuild_definition(d))
        keys.add(kroot_key)
        try:
            keys.update(_image_key(root, d, f) for f in Flavour)
            kernel = debug_kernel.key(d, BuildRoot(cache.path("roots", kroot_key)))
            keys.add(kernel)
            keys.add(_image_key(root, d, Flavour.TINY,
                                KernelBuild(cache.path(debug_kernel.KIND, kernel))))
        except (OSError, ValueError, KeyError):  # absent or unreadable: nothing more to keep
            pass
    return keys


class Cleaned(NamedTuple):
    removed: list[Path]
    in_use: list[Path]     # kept: a running harness holds its lease


def clean(cache: Cache, guest: str | None = None,
          keep: frozenset[str] = frozenset()) -> Cleaned:
    """Remove cached roots and images (of one guest, or all) except `keep`
    and those in use."""
    done = Cleaned([], [])
    for kind in ("roots", debug_kernel.KIND, "images"):
        removed, in_use = cache.clean(kind, guest, keep.__contains__)
        done.removed.extend(removed)
        done.in_use.extend(in_use)
    return done
