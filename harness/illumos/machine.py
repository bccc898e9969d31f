"""The QEMU machine of an illumos guest: its own disk image booted by the
firmware, the NoCloud seed as a CD-ROM, the definition's shape."""

from __future__ import annotations

import os
from pathlib import Path

from ..guests import GuestDefinition, image_path
from ..qemu import DiskImage, MachineSpec


def machine_spec(definition: GuestDefinition, seed_iso: Path | None,
                 accel: str) -> MachineSpec:
    """The MachineSpec of `definition` (an [image] guest; its image is
    checked first), with `seed_iso` attached read-only if given."""
    image = image_path(definition)
    assert definition.image is not None  # image_path() refused it otherwise
    q = definition.qemu
    return MachineSpec(name=f"mmap-harness-{definition.name}-{os.getpid()}", accel=accel,
                       boot_disk=DiskImage(image, definition.image.format, seed_iso),
                       machine=q.machine, memory_mib=q.memory_mib, cpus=q.cpus,
                       cpu_model=q.cpu_model)
