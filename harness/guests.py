"""Guest definitions: the TOML files in guest_images/, typed and validated."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .config import decode, load_toml
from .errors import ConfigError

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest_images"
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


class Flavour(str, Enum):
    """How the guest's root is provided."""

    TINY = "tiny"   # initramfs: busybox, Debian's sshd, needed modules; no disk
    FULL = "full"   # debootstrap root with systemd on an ext4 disk image


@dataclass(frozen=True)
class Debian:
    """What debootstrap and apt install for a Debian guest and its build root."""

    suite: str
    kernel_package: str
    headers_package: str
    compiler_package: str = "gcc"
    extra_packages: list[str] = field(default_factory=list)
    mirror: str = ""  # empty: debootstrap's own default mirror
    # The keys the archive's Release file must verify against (debootstrap
    # stops otherwise); empty: Debian's, from debian-archive-keyring.
    keyring: str = ""


@dataclass(frozen=True)
class Qemu:
    """Machine shape; the command line itself is built in qemu.py."""

    machine: str = "q35"
    memory_mib: int = 1024
    cpus: int = 2
    cpu_model: str = "qemu64"
    kernel_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Tiny:
    """The initramfs flavour: which kernel modules /init loads to reach SSH."""

    boot_modules: list[str] = field(default_factory=lambda: ["virtio_pci", "virtio_net"])


@dataclass(frozen=True)
class GuestDefinition:
    name: str
    family: str
    description: str
    debian: Debian
    qemu: Qemu = field(default_factory=Qemu)
    tiny: Tiny = field(default_factory=Tiny)
    default: bool = False



def _validate(g: GuestDefinition, where: str) -> None:
    if not _NAME.match(g.name):
        raise ConfigError(f"{where}: name {g.name!r} must be lower-case letters, digits, "
                          "'.' or '-'")
    if g.family != "linux":
        raise ConfigError(f"{where}: family {g.family!r} cannot be booted yet",
                          hint="only 'linux' guests are supported")
    pkgs = [g.debian.kernel_package, g.debian.headers_package,
            g.debian.compiler_package, *g.debian.extra_packages]
    for p in pkgs:
        if not _PACKAGE.match(p):
            raise ConfigError(f"{where}: {p!r} is not a Debian package name")
    if not _NAME.match(g.debian.suite):
        raise ConfigError(f"{where}: suite {g.debian.suite!r} is not a Debian suite name")
    if not 256 <= g.qemu.memory_mib <= 65536:
        raise ConfigError(f"{where}: qemu.memory_mib must be 256..65536")
    if not 1 <= g.qemu.cpus <= 64:
        raise ConfigError(f"{where}: qemu.cpus must be 1..64")
    for m in g.tiny.boot_modules:
        if not re.match(r"^[a-z0-9_]+$", m):
            raise ConfigError(f"{where}: {m!r} is not a kernel module name")


def load_definition(path: Path) -> GuestDefinition:
    """Load and validate one definition file."""
    g = decode(GuestDefinition, load_toml(path), str(path))
    _validate(g, str(path))
    if g.name != path.stem:
        raise ConfigError(f"{path}: name {g.name!r} must match the file name {path.stem!r}")
    return g


def all_definitions(directory: Path = GUEST_DIR) -> dict[str, GuestDefinition]:
    return {p.stem: load_definition(p) for p in sorted(directory.glob("*.toml"))}


def find(name: str, directory: Path = GUEST_DIR) -> GuestDefinition:
    """The definition called `name` (or a path to a .toml file of one);
    ConfigError listing the known ones if absent."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise ConfigError(f"guest definition {name}: no such file")
        return load_definition(Path(name))
    path = directory / f"{name}.toml"
    if not _NAME.match(name) or not path.is_file():
        known = ", ".join(all_definitions(directory)) or "none"
        raise ConfigError(f"unknown guest {name!r}", hint=f"choose one of: {known}")
    return load_definition(path)


def default_guest(directory: Path = GUEST_DIR) -> GuestDefinition:
    defaults = [g for g in all_definitions(directory).values() if g.default]
    if len(defaults) != 1:
        raise ConfigError(f"{directory}: exactly one definition must say default = true")
    return defaults[0]
