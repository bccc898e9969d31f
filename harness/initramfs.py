"""The `tiny` flavour: an uncompressed initramfs cut out of the build root.

It holds busybox (as init and shell), Debian's own sshd with the libraries
it links, the kernel modules needed to reach the network, and the keys of
the build root. Uncompressed, because TCG spends seconds in decompressors.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import posixpath
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageBuildError
from .guests import GuestDefinition
from .rootfs import BuildRoot, chroot_output

RECIPE_DIR = Path(__file__).resolve().parent.parent / "guest_images" / "tiny"
SSHD_BINARIES = ["/usr/sbin/sshd", "/usr/lib/openssh/sshd-session",
                 "/usr/lib/openssh/sshd-auth"]
LATER_MODULE_DIRS = ("kernel/drivers/char/hw_random/",)   # see rng_later
EMPTY_DIRS = ["/dev", "/proc", "/sys", "/run", "/run/sshd", "/tmp", "/mnt",
              "/var/empty", "/root", "/etc/mmap-harness"]
PASSWD = "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# '*' (no password) rather than '!' (locked): sshd refuses locked accounts.
SHADOW = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n"
SSHD_CONFIG = """\
# mmap-harness tiny guest: key-only root login, no PAM.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
"""


class CpioWriter:
    """The `newc` format the kernel unpacks; entries are written in order."""

    MAGIC = b"070701"

    def __init__(self, out: io.BufferedIOBase) -> None:
        self.out = out
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        encoded = name.lstrip("/").encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        self.ino += 1
        head = self.MAGIC + b"".join(b"%08x" % f for f in fields) + encoded
        self.out.write(head + b"\0" * (-len(head) % 4))
        self.out.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, b"")

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, b"")


@dataclass
class _Entry:
    kind: str           # "dir" | "file" | "link"
    data: bytes = b""
    perm: int = 0o755


class TreeSelection:
    """Guest paths picked from the build root, with every symlink on the way."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.entries: dict[str, _Entry] = {}

    def canonical(self, path: str) -> str:
        """/bin/sh -> /usr/bin/sh where /bin links to usr/bin (merged /usr).

        The kernel unpacks entries in order, so nothing may be placed
        through a link whose target directory does not exist yet.
        """
        top, _, rest = path.lstrip("/").partition("/")
        if rest and (self.tree / top).is_symlink():
            return posixpath.normpath(posixpath.join("/", os.readlink(self.tree / top), rest))
        return path

    def add_dir(self, path: str, perm: int = 0o755) -> None:
        path = self.canonical(path)
        parent = posixpath.dirname(path)
        if parent != "/" and parent not in self.entries:
            self.add_dir(parent)
        self.entries.setdefault(path, _Entry("dir", perm=perm))

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        path = self.canonical(path)
        self.add_dir(posixpath.dirname(path))
        self.entries[path] = _Entry("file", data, perm)

    def add_link(self, path: str, target: str) -> None:
        path = self.canonical(path)
        self.add_dir(posixpath.dirname(path))
        self.entries.setdefault(path, _Entry("link", target.encode()))

    def copy(self, path: str, depth: int = 0) -> None:
        """Copy `path` from the tree, following symlinks inside the tree."""
        if depth > 16:
            raise ImageBuildError(f"symlink loop at {path} in {self.tree}")
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            guest = "/" + "/".join(parts[:i])
            host = self.tree / guest.lstrip("/")
            if host.is_symlink():
                target = os.readlink(host)
                self.add_link(guest, target)
                base = target if target.startswith("/") else posixpath.join(
                    posixpath.dirname(guest), target)
                rest = parts[i:]
                self.copy(posixpath.normpath(posixpath.join(base, *rest)), depth + 1)
                return
        host = self.tree / path.lstrip("/")
        if not host.is_file():
            raise ImageBuildError(f"{path} is missing from the build root {self.tree}")
        self.add_file(path, host.read_bytes(), stat.S_IMODE(host.stat().st_mode))

    def write(self, out: Path) -> None:
        with out.open("wb") as f:
            cpio = CpioWriter(f)
            for name in sorted(self.entries):
                e = self.entries[name]
                if e.kind == "dir":
                    cpio.directory(name, e.perm)
                elif e.kind == "link":
                    cpio.symlink(name, e.data.decode())
                else:
                    cpio.file(name, e.data, e.perm)
            cpio.close()


def recipe_files() -> list[Path]:
    """What shapes a tiny image besides the build root (for the cache key)."""
    return [Path(__file__), *sorted(RECIPE_DIR.iterdir())]


def build(root: BuildRoot, definition: GuestDefinition, out: Path,
          modules: Path | None = None, timeout_scale: float = 1.0) -> None:
    """Write initrd.img for the tiny flavour into `out`; the NIC's modules
    come from `modules` (lib/modules/<release> of the kernel booted; by
    default the root's own kernel's)."""
    tree = root.tree
    modules = modules or tree / "lib/modules" / root.kernel_release
    sel = TreeSelection(tree)
    for name in ("bin", "sbin", "lib", "lib64"):
        if (tree / name).is_symlink():
            sel.add_link("/" + name, os.readlink(tree / name))
    for d in EMPTY_DIRS:
        sel.add_dir(d, 0o700 if d == "/root" else 0o755)
    _add_busybox(sel, timeout_scale)
    _add_sshd(sel, root, timeout_scale)
    _add_modules(sel, modules, definition.tiny.boot_modules)
    sel.add_file("/etc/passwd", PASSWD.encode())
    sel.add_file("/etc/group", GROUP.encode())
    sel.add_file("/etc/shadow", SHADOW.encode(), 0o600)
    sel.add_file("/etc/hostname", f"{definition.name}\n".encode())
    sel.add_file("/etc/inittab", (RECIPE_DIR / "inittab").read_bytes())
    sel.add_file("/etc/mmap-harness/rc", (RECIPE_DIR / "rc").read_bytes(), 0o755)
    sel.add_link("/init", "/usr/bin/busybox")
    sel.write(out / "initrd.img")


def _add_busybox(sel: TreeSelection, timeout_scale: float) -> None:
    sel.copy("/usr/bin/busybox")
    applets = chroot_output(sel.tree, ["/usr/bin/busybox", "--list-full"],
                            timeout_scale).split()
    for applet in applets:
        path = sel.canonical("/" + applet)
        if path not in sel.entries:
            sel.add_link(path, "/usr/bin/busybox")



def _add_sshd(sel: TreeSelection, root: BuildRoot, timeout_scale: float) -> None:
    binaries = [b for b in SSHD_BINARIES if (sel.tree / b.lstrip("/")).exists()]
    for b in binaries:
        sel.copy(b)
    for lib in _shared_libraries(sel.tree, binaries, timeout_scale):
        sel.copy(lib)
    sel.add_file("/etc/ssh/sshd_config", SSHD_CONFIG.encode())
    sel.add_file("/etc/ssh/ssh_host_ed25519_key",
                 (sel.tree / "etc/ssh/ssh_host_ed25519_key").read_bytes(), 0o600)
    sel.add_dir("/root/.ssh", 0o700)
    sel.add_file("/root/.ssh/authorized_keys",
                 (sel.tree / "root/.ssh/authorized_keys").read_bytes(), 0o600)


def _shared_libraries(tree: Path, binaries: list[str], timeout_scale: float) -> list[str]:
    libs: set[str] = set()
    for line in chroot_output(tree, ["ldd", *binaries], timeout_scale).splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            path = words[words.index("=>") + 1]
        elif words and words[0].startswith("/") and len(words) == 2:
            path = words[0]
        else:
            continue
        if path.startswith("/"):
            libs.add(path)
    return sorted(libs)


def module_load_order(modules_dep: str, wanted: list[str], builtin: str = "") -> list[str]:
    """Relative module paths, dependencies first, for `wanted` module names.

    Modules listed in `builtin` (modules.builtin) are part of the kernel
    image and need no loading: trixie builds virtio_pci in, bookworm not.
    """
    built_in = {_module_name(line) for line in builtin.split()}
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order or _module_name(path) in built_in:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in built_in:
            continue
        if key not in by_name:
            raise ImageBuildError(f"kernel module {name!r} is not in modules.dep",
                                  hint="check tiny.boot_modules in the guest definition")
        visit(by_name[key])
    return order


def rng_later(modules_dep: str, order: list[str]) -> tuple[list[str], list[str]]:
    """`order` split in two, each still in load order: what the guest loads
    before it sets up the network (the NIC's driver, its bus, what they need),
    and hardware RNG drivers (virtio_rng), which load meanwhile: they feed the
    entropy pool, and nothing on the way to SSH waits for them."""
    needed_by_others = {dep for path, _, rest in
                        (line.partition(":") for line in modules_dep.splitlines() if ":" in line)
                        if not path.startswith(LATER_MODULE_DIRS)
                        for dep in rest.split()}
    later = [p for p in order if p.startswith(LATER_MODULE_DIRS) and p not in needed_by_others]
    return [p for p in order if p not in later], later


def load_levels(modules_dep: str, order: list[str]) -> list[int]:
    """For each module of `order`, its level: 0 when it needs none of the
    others, else one more than the highest of those it needs. The guest loads
    a level's modules at once (two vCPUs, and insmod under TCG is slow), each
    level once the one before is in."""
    deps = {path: rest.split() for path, _, rest in
            (line.partition(":") for line in modules_dep.splitlines() if ":" in line)}
    level: dict[str, int] = {}
    for path in order:   # dependencies first
        level[path] = 1 + max((level[d] for d in deps.get(path, []) if d in level), default=-1)
    return [level[path] for path in order]


def _module_name(path: str) -> str:
    base = posixpath.basename(path)
    return base.split(".ko")[0].replace("-", "_")


def _add_modules(sel: TreeSelection, moddir: Path, wanted: list[str]) -> None:
    release = moddir.name
    builtin = moddir / "modules.builtin"
    order = module_load_order((moddir / "modules.dep").read_text(), wanted,
                              builtin.read_text() if builtin.is_file() else "")
    modules_dep = (moddir / "modules.dep").read_text()
    first, later = rng_later(modules_dep, order)
    for name, part in (("modules", first), ("modules.later", later)):
        lines = []
        for rel, level in zip(part, load_levels(modules_dep, part)):
            plain = rel.split(".ko")[0] + ".ko"
            guest = f"/lib/modules/{release}/{plain}"
            sel.add_file(guest, _decompressed(moddir / rel))
            lines.append(f"{level} {guest}\n")
        sel.add_file(f"/etc/mmap-harness/{name}", "".join(lines).encode())


def _decompressed(path: Path) -> bytes:
    """busybox insmod takes plain .ko files only."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                              check=True).stdout
    return data

