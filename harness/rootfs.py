"""The build root: a debootstrap tree of the guest's suite.

One tree serves three purposes: modules and workloads are compiled inside it
(chroot) by the suite's own gcc against the kernel's own headers; the tiny
initramfs takes its kernel, sshd and modules from it; the full disk image is
made from it. Its SSH keys are made here, so each image has its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from . import integrity, keys, sandbox
from .errors import HostError, ImageBuildError
from .guests import GuestDefinition
from .procs import run_logged
from .progress import Progress

# Bumped by hand when the recipe below changes in a way the source hash misses.
RECIPE = 1
# What builds and images depend on most: hashed at publish, checked before use.
CRITICAL_PROGRAMS = ["/usr/bin/gcc", "/usr/bin/cc", "/usr/bin/ld", "/usr/bin/as",
                     "/usr/bin/make", "/usr/bin/busybox", "/usr/sbin/sshd",
                     "/usr/lib/openssh/sshd-session", "/usr/lib/openssh/sshd-auth"]
CRITICAL_KEYS = ["keys/harness_ed25519", "keys/harness_ed25519.pub",
                 "root/etc/ssh/ssh_host_ed25519_key", "root/etc/ssh/ssh_host_ed25519_key.pub",
                 "root/root/.ssh/authorized_keys", "manifest.json"]
BASE_PACKAGES = [
    "openssh-server", "busybox-static", "kmod", "make", "libc6-dev",
    "gcc-multilib", "systemd-sysv", "udev", "iproute2",
]
# Base seconds for one command run in the tree while it is built (`gcc --version`, `ldd`).
CHROOT_S = 60.0
# Release files are checked against Debian's keys, or debootstrap stops.
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# In namespaces of its own: the /proc and /sys debootstrap mounts in the new
# tree vanish with it, and every process it starts dies with it.
CONFINED = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--kill-child=SIGKILL"]
SSHD_CONFIG = """\
# Written by mmap-harness: key-only root login for the harness.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""
NETWORK_UNIT = """\
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
"""


@dataclass(frozen=True)
class BuildRoot:
    """A finished build root in the cache."""

    dir: Path

    @property
    def tree(self) -> Path:
        return self.dir / "root"

    @property
    def client_key(self) -> Path:
        return self.dir / "keys" / "harness_ed25519"

    @property
    def client_key_pub(self) -> Path:
        return self.dir / "keys" / "harness_ed25519.pub"

    @property
    def host_key_pub(self) -> Path:
        return self.tree / "etc/ssh/ssh_host_ed25519_key.pub"

    @property
    def manifest(self) -> dict:
        return json.loads((self.dir / "manifest.json").read_text())

    @property
    def kernel_release(self) -> str:
        return self.manifest["kernel_release"]

    @property
    def arch(self) -> str:
        """Debian's name for the root's architecture (guests.ARCHES)."""
        return self.manifest.get("arch", "amd64")

    @property
    def build_id(self) -> str:
        """New for every build: tells a rebuilt root from the one it replaced."""
        return self.manifest["build_id"]


def recipe_key(definition: GuestDefinition) -> str:
    """Cache key: what debootstrap is asked for, plus this recipe's source."""
    h = hashlib.sha256()
    h.update(json.dumps(asdict(definition.debian), sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    h.update(f"{RECIPE}-{integrity.FORMAT}".encode())
    return f"{definition.name}-{h.hexdigest()[:16]}"


def packages(definition: GuestDefinition) -> list[str]:
    d = definition.debian
    return [d.kernel_package, d.headers_package, d.compiler_package,
            *BASE_PACKAGES, *d.extra_packages]


def build(definition: GuestDefinition, out: Path, log: Path, debs: Path,
          progress: Progress, timeout_scale: float = 1.0) -> None:
    """Populate `out` (a fresh directory) with root/, keys/, manifest.json and
    integrity.json.

    `debs` keeps downloaded packages between builds (debootstrap checks each
    one against the signed Release file before using it).
    """
    tree = out / "root"
    _debootstrap(definition, tree, log, debs / definition.debian.suite, progress)
    progress.say("image", "configuring the build root (ssh keys, network, fstab)")
    (out / "keys").mkdir(mode=0o700)
    client_pub = keys.write_keypair(out / "keys" / "harness_ed25519", "mmap-harness")
    _configure(tree, client_pub, definition.name)
    release = _kernel_release(tree)
    manifest = {
        "build_id": uuid.uuid4().hex,
        "kernel_sha256": integrity.sha256_file(tree / "boot" / f"vmlinuz-{release}"),
        "guest": definition.name,
        "suite": definition.debian.suite,
        "arch": definition.debian.arch,
        "kernel_release": release,
        "kernel_compiler": _kernel_compiler(tree, release),
        "compiler": chroot_output(tree, ["gcc", "--version"], timeout_scale).splitlines()[0],
        "packages": packages(definition),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(tree / "var/cache/apt/archives", ignore_errors=True)
    integrity.seal(out, _critical(out, release))


def _critical(out: Path, release: str) -> list[Path]:
    """The kernel, the Kbuild files and configuration of its headers, the
    programs builds and guests run, and the keys."""
    tree = out / "root"
    found = [tree / "boot" / f"vmlinuz-{release}", *(out / k for k in CRITICAL_KEYS)]
    found += [p for c in CRITICAL_PROGRAMS if (p := integrity.resolve_in(tree, c))]
    found += [*tree.glob("usr/lib/gcc/*/*/cc1"), *tree.glob("usr/libexec/gcc/*/*/cc1")]
    build = integrity.resolve_in(tree, f"/lib/modules/{release}/build")
    if build is not None:
        found += [build / "include/config/auto.conf", build / "include/generated/autoconf.h",
                  build / ".config"]
    for link in ("build", "source", "build/scripts"):
        headers = integrity.resolve_in(tree, f"/lib/modules/{release}/{link}")
        if headers is not None:
            found += [p for p in headers.rglob("*")
                      if p.name.startswith(("Makefile", "Kbuild")) and p.is_file()
                      and not p.is_symlink()]
    return sorted({p for p in found if p.is_file()})


def _debootstrap(definition: GuestDefinition, tree: Path, log: Path, debs: Path,
                 progress: Progress) -> None:
    d = definition.debian
    keyring = Path(d.keyring) if d.keyring else ARCHIVE_KEYRING
    if not keyring.is_file():
        raise HostError(f"the archive keyring {keyring} is missing: debootstrap cannot "
                        "check the archive's signatures",
                        hint="install debian-archive-keyring and gpgv (`bash ci/bootstrap.sh` "
                             "does), or fix debian.keyring in the guest definition")
    debs.mkdir(mode=0o700, parents=True, exist_ok=True)
    cmd = [*CONFINED, "debootstrap", "--variant=minbase", f"--arch={d.arch}",
           f"--keyring={keyring}",
           "--force-check-gpg", f"--cache-dir={debs.resolve()}",
           f"--include={','.join(packages(definition))}", d.suite, str(tree)]
    if d.mirror:
        cmd.append(d.mirror)
    progress.say("image", f"debootstrap {d.suite} with {len(packages(definition))} packages "
                 f"(a few minutes; log: {log})")
    with FileLock(str(debs.parent / f".{debs.name}.lock")):  # one writer per package cache
        rc = run_logged(cmd, log, tick=progress.ticker("image", "debootstrap"))
    if rc != 0:
        raise ImageBuildError(
            f"debootstrap of {d.suite} failed (exit {rc})", log=str(log),
            hint="check that Debian's package mirror is reachable and the suite "
                 "and package names exist; the log's last lines say which step failed "
                 f"(a signature error: the Release file did not verify against "
                 f"{keyring}; update debian-archive-keyring)")


def _configure(tree: Path, client_pub: str, hostname: str) -> None:
    ssh = tree / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    keys.write_keypair(ssh / "ssh_host_ed25519_key", f"root@{hostname}")
    (ssh / "sshd_config.d").mkdir(exist_ok=True)
    (ssh / "sshd_config.d/mmap-harness.conf").write_text(SSHD_CONFIG)
    dot_ssh = tree / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    (dot_ssh / "authorized_keys").write_text(client_pub)
    os.chmod(dot_ssh / "authorized_keys", 0o600)
    (tree / "etc/hostname").write_text(hostname + "\n")
    (tree / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    network = tree / "etc/systemd/network"
    network.mkdir(parents=True, exist_ok=True)
    (network / "10-mmap-harness.network").write_text(NETWORK_UNIT)
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.is_symlink():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")


def _kernel_release(tree: Path) -> str:
    releases = sorted(p.name for p in (tree / "lib/modules").iterdir()
                      if (p / "modules.dep").is_file())
    if len(releases) != 1:
        raise ImageBuildError(f"expected one kernel in the build root, found {releases}")
    return releases[0]


def _kernel_compiler(tree: Path, release: str) -> str:
    config = (tree / "boot" / f"config-{release}").read_text()
    m = re.search(r'^CONFIG_CC_VERSION_TEXT="(.*)"$', config, re.M)
    return m.group(1) if m else "unknown"


def chroot_output(tree: Path, cmd: list[str], timeout_scale: float = 1.0) -> str:
    """The output of `cmd` run in the tree, in a throwaway layer (the tree is
    never written); it gets CHROOT_S seconds times `timeout_scale`."""
    result = sandbox.run(sandbox.Job(str(tree), cmd), timeout=CHROOT_S * timeout_scale)
    if result.returncode != 0:
        raise ImageBuildError(f"`{' '.join(cmd)}` failed in the build root: {result.stdout}")
    return result.stdout
