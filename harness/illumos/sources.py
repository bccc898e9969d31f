"""The driver modules an illumos check looks at: the harness's specs rendered
for illumos, and a user's own source directories."""

from __future__ import annotations

from pathlib import Path

from .. import drivers
from ..errors import ConfigError
from ..render import render
from .check import Module

FAMILY = "illumos"


def specs(names: list[str] | None) -> list[drivers.DriverSpec]:
    """The named specs, or every spec with an illumos template."""
    return drivers.find_specs(names) if names else [
        s for s in drivers.all_specs() if FAMILY in s.families()]


def rendered(specs: list[drivers.DriverSpec], out_dir: Path) -> list[Module]:
    """`specs` rendered under `out_dir`. cstyle reads the driver's C file and
    the user-API header it compiles in (the harness's, shared with Linux)."""
    modules = []
    for spec in specs:
        target = render(spec, out_dir, FAMILY)
        source = target / f"{spec.name}.c"
        modules.append(Module(spec.name, [source], [target, drivers.INCLUDE_DIR],
                              [source, drivers.INCLUDE_DIR / drivers.API_HEADER]))
    return modules


def from_dir(path: Path, platform: str = "intel") -> Module:
    """Every .c of `path` as one module, named after the directory, built as a
    module of `platform`'s uts directory; cstyle reads its .c and .h files."""
    if not path.is_dir():
        raise ConfigError(f"--driver-dir {path}: no such directory",
                          hint="give the directory holding the driver's .c files")
    sources = sorted(path.glob("*.c"))
    if not sources:
        raise ConfigError(f"--driver-dir {path}: no .c file in it",
                          hint="give the directory holding the driver's .c files")
    return Module(path.resolve().name, sources, [path, drivers.INCLUDE_DIR],
                  [*sources, *sorted(path.glob("*.h"))], platform)
