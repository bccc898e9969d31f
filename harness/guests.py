"""Guest definitions: the TOML files in guest_images/, typed and validated."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .config import decode, load_toml
from .errors import ConfigError

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest_images"
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# A command name or absolute path in the guest: no spaces, quotes or `$`.
_COMMAND = re.compile(r"^/?[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$")
FAMILIES = ("linux", "illumos")
IMAGE_FORMATS = ("qcow2", "raw")


class Flavour(str, Enum):
    """How the guest's root is provided."""

    TINY = "tiny"   # initramfs: busybox, Debian's sshd, needed modules; no disk
    FULL = "full"   # debootstrap root with systemd on an ext4 disk image


# Debian architectures a guest may have; all boot in qemu-system-x86_64.
ARCHES = ("amd64", "i386")

@dataclass(frozen=True)
class Debian:
    """What debootstrap and apt install for a Debian guest and its build root."""

    suite: str
    kernel_package: str
    headers_package: str
    compiler_package: str = "gcc"
    extra_packages: list[str] = field(default_factory=list)
    # Debian's name for the guest's architecture: amd64, or i386 (a 32-bit
    # guest; its build root's programs run on the x86-64 host as they are).
    arch: str = "amd64"
    mirror: str = ""  # empty: debootstrap's own default mirror
    # The keys the archive's Release file must verify against (debootstrap
    # stops otherwise); empty: Debian's, from debian-archive-keyring.
    keyring: str = ""


@dataclass(frozen=True)
class Image:
    """A user-supplied disk image that boots itself (an OmniOS cloud image):
    the [image] table of a non-Linux guest. Opened with snapshot=on, never
    written."""

    # qcow2 or raw file; `~` is the user's home, a relative path is relative
    # to the definition's directory. Empty: give it with `run --image PATH`.
    path: str = ""
    format: str = "qcow2"
    # Root's password on the serial console, used only when the NoCloud seed
    # was not applied and the harness logs in on the console. OmniOS images
    # have none (OmniOS docs, setup/freshinstall: "the password for user root
    # will be blank").
    root_password: str = ""
    # The guest's C compiler (for the driver and the workloads): a name on
    # root's PATH or an absolute path, e.g. /opt/gcc-14/bin/gcc.
    compiler: str = "gcc"
    # Base seconds from QEMU's start to the guest's SSH (times --timeout-scale):
    # a first boot imports every SMF manifest, minutes under TCG.
    boot_timeout_s: float = 900.0


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
    debian: Debian | None = None    # family "linux": built with debootstrap
    image: Image | None = None      # other families: a disk image that boots itself
    qemu: Qemu = field(default_factory=Qemu)
    tiny: Tiny = field(default_factory=Tiny)
    default: bool = False


def _validate(g: GuestDefinition, where: str, data: dict) -> None:
    if not _NAME.match(g.name):
        raise ConfigError(f"{where}: name {g.name!r} must be lower-case letters, digits, "
                          "'.' or '-'")
    if g.family not in FAMILIES:
        raise ConfigError(f"{where}: family {g.family!r} is not a kernel family the harness "
                          "knows", hint=f"use one of: {', '.join(FAMILIES)}")
    if (g.debian is None) == (g.image is None):
        raise ConfigError(f"{where}: give exactly one of the tables [debian] (a Linux guest "
                          "built with debootstrap) and [image] (a disk image that boots "
                          "itself)")
    if g.family == "linux":
        if g.debian is None:
            raise ConfigError(f"{where}: a linux guest needs a [debian] table, not [image]",
                              hint="the harness builds Linux guests itself with debootstrap")
        _validate_debian(g.debian, where)
    else:
        if g.image is None:
            raise ConfigError(f"{where}: an {g.family} guest needs an [image] table, "
                              "not [debian]", hint="name the guest's disk image in [image]")
        _validate_image(g, where, data)
    if not 256 <= g.qemu.memory_mib <= 65536:
        raise ConfigError(f"{where}: qemu.memory_mib must be 256..65536")
    if not 1 <= g.qemu.cpus <= 64:
        raise ConfigError(f"{where}: qemu.cpus must be 1..64")
    for m in g.tiny.boot_modules:
        if not re.match(r"^[a-z0-9_]+$", m):
            raise ConfigError(f"{where}: {m!r} is not a kernel module name")


def _validate_debian(d: Debian, where: str) -> None:
    for p in [d.kernel_package, d.headers_package, d.compiler_package, *d.extra_packages]:
        if not _PACKAGE.match(p):
            raise ConfigError(f"{where}: {p!r} is not a Debian package name")
    if not _NAME.match(d.suite):
        raise ConfigError(f"{where}: suite {d.suite!r} is not a Debian suite name")
    if d.arch not in ARCHES:
        raise ConfigError(f"{where}: debian.arch {d.arch!r} is not one the harness boots",
                          hint=f"choose one of: {', '.join(ARCHES)}")


def _validate_image(g: GuestDefinition, where: str, data: dict) -> None:
    assert g.image is not None
    if "tiny" in data:
        raise ConfigError(f"{where}: [tiny] is for linux guests (the initramfs flavour); "
                          f"an {g.family} guest boots its own image",
                          hint="remove the [tiny] table")
    if g.qemu.kernel_args:
        raise ConfigError(f"{where}: qemu.kernel_args cannot be given to an {g.family} "
                          "guest: it boots its own loader and kernel from the image",
                          hint="remove qemu.kernel_args")
    if g.image.format not in IMAGE_FORMATS:
        raise ConfigError(f"{where}: image.format {g.image.format!r} must be one of "
                          f"{', '.join(IMAGE_FORMATS)}",
                          hint="convert other formats with `qemu-img convert -O qcow2 IN OUT`")
    if "\n" in g.image.path or "\0" in g.image.path:
        raise ConfigError(f"{where}: image.path must be one line")
    if not _COMMAND.match(g.image.compiler):
        raise ConfigError(f"{where}: image.compiler {g.image.compiler!r} must be a command "
                          "name or an absolute path (letters, digits, . _ + - /)")
    if "\n" in g.image.root_password or "\r" in g.image.root_password:
        raise ConfigError(f"{where}: image.root_password must be one line")
    if not 30 <= g.image.boot_timeout_s <= 7200:
        raise ConfigError(f"{where}: image.boot_timeout_s must be 30..7200")


def load_definition(path: Path) -> GuestDefinition:
    """Load and validate one definition file. A relative image path is made
    absolute against the file's directory."""
    data = load_toml(path)
    g = decode(GuestDefinition, data, str(path))
    _validate(g, str(path), data)
    if g.name != path.stem:
        raise ConfigError(f"{path}: name {g.name!r} must match the file name {path.stem!r}")
    if g.image is not None and g.image.path:
        image = Path(g.image.path).expanduser()
        if not image.is_absolute():
            image = path.resolve().parent / image
        g = dataclasses.replace(g, image=dataclasses.replace(g.image, path=str(image)))
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


# The first bytes of files that are the wrong kind of image, and what to do.
_QCOW2_MAGIC = b"QFI\xfb"
_OTHER_MAGICS = {
    b"KDMV": ("a VMDK image", "convert it: `qemu-img convert -O qcow2 IN.vmdk OUT.qcow2`"),
    b"\x28\xb5\x2f\xfd": ("zstd-compressed", "decompress it first: `zstd -d FILE`"),
    b"\xfd7zXZ": ("xz-compressed", "decompress it first: `xz -d FILE`"),
    b"\x1f\x8b": ("gzip-compressed", "decompress it first: `gzip -d FILE`"),
}


def with_image(definition: GuestDefinition, path: Path) -> GuestDefinition:
    """`definition` booting the image at `path` (`run --image PATH`); the
    image is checked as image_path() does."""
    if definition.image is None:
        raise ConfigError(f"--image goes with a guest that boots a disk image; "
                          f"{definition.name} is a {definition.family} guest built by the "
                          "harness", hint="choose an illumos guest, e.g. --guest omnios-example")
    image = Path(path).expanduser().absolute()
    g = dataclasses.replace(definition,
                            image=dataclasses.replace(definition.image, path=str(image)))
    image_path(g)
    return g


def image_path(definition: GuestDefinition) -> Path:
    """The disk image `definition` boots, checked: it exists, is a readable
    regular file and its first bytes fit the format. ConfigError otherwise."""
    if definition.image is None:
        raise ConfigError(f"guest {definition.name} is built by the harness; it has no "
                          "disk image of its own")
    if not definition.image.path:
        raise ConfigError(f"guest {definition.name} needs a disk image and its definition "
                          "names none",
                          hint=f"pass it: mmap-harness run --guest {definition.name} "
                               f"--image PATH (a {definition.image.format} image), or set "
                               "[image] path in the definition")
    path = Path(definition.image.path)
    fmt = definition.image.format
    try:
        if not path.is_file():  # before opening: a FIFO would block the open
            raise ConfigError(f"disk image {path}: "
                              + ("not a regular file" if path.exists() else "no such file"),
                              hint="check the path given with --image or in [image] path")
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ConfigError(f"disk image {path} cannot be read: {e.strerror}") from None
    for magic, (what, hint) in _OTHER_MAGICS.items():
        if head.startswith(magic):
            raise ConfigError(f"disk image {path} is {what}, not a {fmt} disk image",
                              hint=hint)
    if fmt == "qcow2" and not head.startswith(_QCOW2_MAGIC):
        raise ConfigError(f"disk image {path} is not a qcow2 image (no QFI header) but the "
                          f"definition of {definition.name} says format = \"qcow2\"",
                          hint="set [image] format = \"raw\" for a raw disk image")
    if fmt == "raw" and head.startswith(_QCOW2_MAGIC):
        raise ConfigError(f"disk image {path} is a qcow2 image but the definition of "
                          f"{definition.name} says format = \"raw\"",
                          hint="set [image] format = \"qcow2\"")
    return path
