"""The `debug` kernel: the suite's own kernel source and Debian's config for
it, plus the options that make a kernel catch misuse of memory and locks.

    guest definition --kbuild root (the suite, linux-source, build deps)-->
    <cache>/kernels/<guest>-debug-<hash>/
        bzImage            what the image boots (through the decompressor: see BOOT)
        build/             what out-of-tree modules are built against (no objects)
        modules/           lib/modules/<release>: modules.dep, modules.builtin
        config             the final .config
        build.log          make's output
        manifest.json      release, source package version, fragment
        integrity.json     the seal, checked before every use

Debian's cloud config is kept whole except for its modules: the few a
guest needs to boot (the NIC, the RNG, the disk) are built in and the rest
dropped (`make localyesconfig`), or the build would take hours on 2 cores.
The build runs in the sandbox over a build root of the suite with
`linux-source` installed (a root of its own: the guest's build root stays
as it is), once per cache: it is published whole or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import integrity, sandbox
from .cache import Cache
from .errors import BuildError, ImageBuildError
from .guests import GuestDefinition
from .progress import Progress
from .rootfs import BuildRoot

KIND = "kernels"
VARIANT = "debug"
# The guests it is built for: KASAN and PAGE_TABLE_CHECK are 64-bit x86 only.
ARCHES = ("amd64",)
# Bumped by hand when the recipe below changes in a way the key misses.
RECIPE = 1
# What the kernel is built with, besides the guest's own packages.
KBUILD_PACKAGES = ["linux-source", "bc", "bison", "flex", "libssl-dev", "openssl",
                   "libelf-dev", "cpio", "xz-utils", "perl", "rsync"]
LOCALVERSION = "-mhdebug"
# Modules a guest loads to boot (tiny: NIC, RNG; full: disk, ext4): built in.
BOOT_MODULES = ["virtio", "virtio_ring", "virtio_pci", "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev", "virtio_net", "net_failover", "failover",
                "virtio_rng", "rng_core", "virtio_blk", "ext4", "jbd2", "mbcache", "crc16",
                "crc32c_generic", "af_packet"]
# Needed to build Debian's config outside Debian's packaging: not Debian's
# keys (MODULE_SIG stays, as Debian's config selects it: a key is made at
# build, and an unsigned module loads tainting E as on the stock kernel), no
# BTF toolchain; no debug info: it would triple the build.
BUILD_OPTIONS: dict[str, str] = {
    "MODULE_SIG_ALL": "n", "SYSTEM_TRUSTED_KEYS": '""',
    # A choice: the other member Debian's config picks must go too.
    "KERNEL_GZIP": "y", "KERNEL_LZ4": "n",
    "SYSTEM_REVOCATION_KEYS": '""', "DEBUG_INFO_BTF": "n", "DEBUG_INFO_NONE": "y",
    "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT": "n", "DEBUG_INFO_DWARF4": "n",
    "DEBUG_INFO_DWARF5": "n", "LOCALVERSION": f'"{LOCALVERSION}"', "LOCALVERSION_AUTO": "n",
}
# What the debug kernel is for. Each must survive `make olddefconfig`.
DEBUG_OPTIONS: dict[str, str] = {
    "KASAN": "y", "KASAN_GENERIC": "y", "KASAN_INLINE": "y",
    "KFENCE": "y",
    "DEBUG_VM": "y",
    "DEBUG_PAGEALLOC": "y", "DEBUG_PAGEALLOC_ENABLE_DEFAULT": "y",
    "PAGE_TABLE_CHECK": "y", "PAGE_TABLE_CHECK_ENFORCED": "y",
    "PAGE_POISONING": "y",
    "PROVE_LOCKING": "y", "DEBUG_ATOMIC_SLEEP": "y",
    # Scanned on demand (after rmmod), never behind the test's back.
    "DEBUG_KMEMLEAK": "y", "DEBUG_KMEMLEAK_AUTO_SCAN": "n",
    "DEBUG_KMEMLEAK_DEFAULT_OFF": "n",
    # Out-of-bounds indexing and bad shifts; alignment reports are x86 noise.
    "UBSAN": "y", "UBSAN_BOUNDS": "y", "UBSAN_SHIFT": "y", "UBSAN_ALIGNMENT": "n",
}
BUILD_DIR = "/build"
# What the script prints for an option the config lost (checked before the
# long compile, so a dropped option costs seconds, not a whole build).
LOST = "mmap-harness: the config lost CONFIG_"
# A cold build took ~15 min on 2 cores; a slow host gets the scale on top.
BUILD_TIMEOUT_S = 3 * 3600
KERNEL_BYTES = 6 * 2**30
PROGRESS_EVERY_S = 30.0
# What an out-of-tree module build reads, as Debian's linux-headers package
# has it: kept whole (but objects), and elsewhere only the Kbuild files.
KEEP_WHOLE = ("include/", "scripts/", "arch/x86/include/")
KEEP_FILES = ("tools/objtool/objtool", "Module.symvers", ".config", "Makefile")
KBUILD_FILES = ("Makefile", "Kconfig", "Kbuild")
PRUNE_SUFFIXES = (".o", ".a", ".ko", ".mod", ".mod.c", ".o.d", ".lst", ".cmd")

SCRIPT = """\
set -eu
cd {build}
tar -xf "$(ls /usr/src/linux-source-*.tar.xz)" -C src --strip-components=1
cd src
cp /boot/config-{stock} .config
scripts/config --file .config {build_options}
make olddefconfig
make LSMOD={build}/lsmod localyesconfig </dev/null
scripts/config --file .config {debug_options}
make olddefconfig
for option in {wanted}; do
	grep -qx "CONFIG_$option=y" .config || {{ echo "{lost}$option"; exit 1; }}
done
make -j"$(nproc)" bzImage modules
make INSTALL_MOD_PATH={build}/modroot modules_install
"""


@dataclass(frozen=True)
class KernelBuild:
    """A built debug kernel in the cache."""

    dir: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.dir / "manifest.json").read_text())

    @property
    def release(self) -> str:
        return self.manifest["release"]

    @property
    def bzimage(self) -> Path:
        """Booted through its decompressor, never as a PVH vmlinux: 6.1's PVH
        entry code is KASAN-instrumented and faults before KASAN's shadow
        exists (a triple fault in xen_prepare_pvh, no console output)."""
        return self.dir / "bzImage"

    @property
    def headers(self) -> Path:
        """The tree `make -C ... M=...` builds against."""
        return self.dir / "build"

    @property
    def modules(self) -> Path:
        """lib/modules/<release>, as installed."""
        return self.dir / "modules" / self.release

    @property
    def config(self) -> str:
        return (self.dir / "config").read_text()


def kbuild_definition(definition: GuestDefinition) -> GuestDefinition:
    """The guest's suite with the kernel source and its build dependencies:
    a build root of its own, so the guest's root stays as it is. The guest's
    own extra packages are not in it: adding a tool to the guest's root must
    not cost a kernel build."""
    d = definition.debian
    assert d is not None
    debian = dataclasses.replace(d, extra_packages=list(KBUILD_PACKAGES))
    return dataclasses.replace(definition, name=f"{definition.name}-kbuild", debian=debian)


def key(definition: GuestDefinition, root: BuildRoot) -> str:
    """The kernel's identity: the source package's version, the stock
    kernel whose config it starts from, the compiler, the options and this
    recipe (a rebuilt kbuild root with the same packages reuses it)."""
    h = hashlib.sha256(f"{RECIPE} {_source_version(root)} {root.manifest['kernel_sha256']} "
                       f"{root.manifest['compiler']}".encode())
    h.update(json.dumps([BUILD_OPTIONS, DEBUG_OPTIONS, BOOT_MODULES]).encode())
    h.update(SCRIPT.encode())
    return f"{definition.name}-{VARIANT}-{h.hexdigest()[:16]}"


def build(root: BuildRoot, out: Path, log: Path, progress: Progress,
          timeout_scale: float = 1.0, cancel: threading.Event | None = None) -> None:
    """Build the debug kernel in `root` into `out` (a fresh directory);
    make's output goes to `log` (outside `out`: it outlives a failure)."""
    work = out / "work"
    (work / "src").mkdir(parents=True)
    (work / "lsmod").write_text("Module Size Used by\n" +
                                "".join(f"{m} 16384 0\n" for m in BOOT_MODULES))
    wanted = [o for o, v in {**BUILD_OPTIONS, **DEBUG_OPTIONS}.items() if v == "y"]
    script = SCRIPT.format(build=BUILD_DIR, stock=root.kernel_release,
                           build_options=_config_args(BUILD_OPTIONS),
                           debug_options=_config_args(DEBUG_OPTIONS),
                           wanted=" ".join(wanted), lost=LOST)
    sandbox.hand_over(work)
    job = sandbox.Job(str(root.tree), ["sh", "-c", f"exec >{BUILD_DIR}/make.log 2>&1\n{script}"],
                      BUILD_DIR, [sandbox.Bind(str(work), BUILD_DIR, writable=True)])
    result = _run_with_progress(job, work / "make.log", BUILD_TIMEOUT_S * timeout_scale,
                                cancel, progress)
    log.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "make.log", log)
    lost = re.findall(rf"^{re.escape(LOST)}(\w+)$", log.read_text(errors="replace"), re.M)
    if lost:
        raise ImageBuildError(f"the debug kernel's config lost CONFIG_{', CONFIG_'.join(lost)} "
                              "(a dependency or a choice Debian's config does not meet)",
                              log=str(log))
    if result.returncode != 0:
        raise BuildError("the debug kernel", _errors(log), str(log),
                         "the log says which step failed; the build root is "
                         f"{root.dir} (`mmap-harness images clean` rebuilds it)")
    shutil.copyfile(log, out / "build.log")
    src = work / "src"
    config = (src / ".config").read_text()
    dropped = missing_options(config, DEBUG_OPTIONS)
    if dropped:
        raise ImageBuildError(f"the debug kernel's config lost {', '.join(dropped)} "
                              "(a dependency Debian's config does not meet)", log=str(log))
    release = (src / "include/config/kernel.release").read_text().strip()
    _publishable(out, work, release)
    (out / "manifest.json").write_text(json.dumps({
        "variant": VARIANT, "build_id": uuid.uuid4().hex, "release": release, "stock_release": root.kernel_release,
        "root": root.dir.name, "root_build_id": root.build_id,
        "source": _source_version(root), "build_options": BUILD_OPTIONS,
        "debug_options": DEBUG_OPTIONS, "built": time.time()}, indent=2) + "\n")
    integrity.seal(out, [out / "bzImage", out / "config", out / "build/Makefile",
                         out / "build/include/config/auto.conf",
                         out / "build/include/generated/autoconf.h"])


def missing_options(config: str, wanted: dict[str, str]) -> list[str]:
    """The options of `wanted` set to y that `config` does not have as y."""
    have = set(re.findall(r"^CONFIG_(\w+)=y$", config, re.M))
    return [f"CONFIG_{o}" for o, v in wanted.items() if v == "y" and o not in have]


def _config_args(options: dict[str, str]) -> str:
    args = []
    for name, value in options.items():
        if value == "y":
            args.append(f"--enable {name}")
        elif value == "n":
            args.append(f"--disable {name}")
        else:
            args.append(f"--set-val {name} '{value}'")
    return " ".join(args)


def _run_with_progress(job: sandbox.Job, log: Path, timeout: float,
                       cancel: threading.Event | None, progress: Progress) -> object:
    """sandbox.run in a thread, saying how far make got every so often; an
    exception here (^C, SIGTERM) stops the build before it is passed on."""
    done: list[object] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            done.append(sandbox.run(job, timeout, stop))
        except BaseException as e:  # handed to the caller's thread
            failed.append(e)
    worker = threading.Thread(target=run, name="kernel-build", daemon=True)
    start = time.monotonic()
    worker.start()
    try:
        while worker.is_alive():
            worker.join(PROGRESS_EVERY_S)
            if cancel is not None and cancel.is_set():
                stop.set()
            if worker.is_alive():
                progress.say("kernel", f"building the debug kernel: {_progress(log)} "
                             f"({time.monotonic() - start:.0f}s; a cold build takes ~15 "
                             "min on 2 cores, once per cache)")
    except BaseException:
        stop.set()
        worker.join()
        raise
    if failed:
        raise failed[0]
    return done[0]


def _progress(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "starting"
    compiled = len(re.findall(r"^\s+CC\s", text, re.M))
    last = text.rstrip().rsplit("\n", 1)[-1].strip()
    return f"{compiled} files compiled, now `{last[:60]}`"


def _errors(log: Path, lines: int = 30) -> str:
    """The compiler's and make's complaints (a parallel build interleaves
    them with other jobs' lines), else the log's end."""
    text = log.read_text(errors="replace").splitlines()
    found = [line for line in text if re.search(r"error|\*\*\*|No such file", line)]
    return "\n".join((found or text)[-lines:])


def _publishable(out: Path, work: Path, release: str) -> None:
    """Move what is kept out of the scratch tree, owned by root, read-only."""
    src = work / "src"
    shutil.copyfile(src / "arch/x86/boot/bzImage", out / "bzImage")
    shutil.copyfile(src / ".config", out / "config")
    (out / "modules").mkdir()
    os.rename(work / "modroot/lib/modules" / release, out / "modules" / release)
    for link in ("build", "source"):
        (out / "modules" / release / link).unlink(missing_ok=True)
    _prune(src)
    os.rename(src, out / "build")
    shutil.rmtree(work)
    for dirpath, dirnames, filenames in os.walk(out):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, 0, 0)
            if not os.path.islink(name) and os.path.isfile(name):
                os.chmod(name, os.stat(name).st_mode & 0o555)


def _prune(src: Path) -> None:
    """Keep what an out-of-tree module build reads (KEEP_*, every Kbuild
    file); drop the rest: objects, sources, other architectures."""
    for dirpath, _dirnames, filenames in os.walk(src, topdown=False):
        rel_dir = os.path.relpath(dirpath, src)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not _kept(rel, name):
                os.unlink(os.path.join(dirpath, name))
        if rel_dir != "." and not os.listdir(dirpath):
            os.rmdir(dirpath)


def _kept(rel: str, name: str) -> bool:
    if name.endswith(PRUNE_SUFFIXES):
        return False
    if rel in KEEP_FILES or rel.startswith(KEEP_WHOLE):
        return True
    if rel.startswith("arch/") and not rel.startswith("arch/x86/"):
        return False
    return name.startswith(KBUILD_FILES)


def _source_version(root: BuildRoot) -> str:
    status = (root.tree / "var/lib/dpkg/status").read_text(errors="replace")
    m = re.search(r"^Package: (linux-source-[\d.]+)\n(?:[^\n]+\n)*?Version: (\S+)", status, re.M)
    return f"{m.group(1)} {m.group(2)}" if m else "unknown"


def ensure_kernel(definition: GuestDefinition, root: BuildRoot, cache: Cache,
                  progress: Progress, timeout_scale: float = 1.0,
                  cancel: threading.Event | None = None) -> KernelBuild:
    """The cached debug kernel built in `root` (the kbuild root), built
    first if absent; the caller holds the lease."""
    name = key(definition, root)

    def make(tmp: Path) -> None:
        progress.say("kernel", f"building the debug kernel of {definition.name} from "
                     f"{_source_version(root)} (about 15 minutes on 2 cores)")
        build(root, tmp, cache.kind_dir("logs") / f"{name}-{int(time.time())}.log",
              progress, timeout_scale, cancel)

    waiting: Callable[[], None] = lambda: progress.say(  # noqa: E731
        "kernel", f"waiting for another process building the {definition.name} debug kernel")
    return KernelBuild(cache.get_or_build(KIND, name, make, waiting, KERNEL_BYTES))
