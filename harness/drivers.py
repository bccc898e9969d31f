"""Driver specs: the small TOML files in drivers/specs/, validated before rendering.

One spec, every kernel family that has its template: drivers/<family>/templates/
<template>.c.j2 (Linux and illumos today). Nothing in a spec names a family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import decode, load_toml
from .errors import ConfigError

DRIVERS_DIR = Path(__file__).resolve().parent.parent / "drivers"
SPECS_DIR = DRIVERS_DIR / "specs"
FAMILIES = ("linux", "illumos")
WORKLOADS_DIR = DRIVERS_DIR / "workloads"
INCLUDE_DIR = DRIVERS_DIR / "include"
# The user-API header (ioctls, counters) every template and workload includes.
API_HEADER = "mmap_harness.h"
PAGE_SIZE = 4096
MAX_ORDER = 10          # alloc_pages() cannot do more on x86-64 (MAX_ORDER 11)
_C_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")
# Goes into a C string literal and MODULE_DESCRIPTION: no quotes, no escapes.
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9 ,.;:()_/+=-]{1,120}$")


# Template-specific integer parameters: name -> (lowest, highest, default).
TEMPLATE_PARAMS: dict[str, dict[str, tuple[int, int, int]]] = {
    "remap": {},
    "fault": {},
    "umem": {},
    "dmabuf": {"max_buffer_pages": (1, 1024, 64), "max_buffers": (1, 256, 16)},
}
# Templates whose layout needs a minimum area (remap: four regions).
MIN_ORDER = {"remap": 2, "umem": 1}


def templates_dir(family: str) -> Path:
    return DRIVERS_DIR / family / "templates"


@dataclass(frozen=True)
class DriverSpec:
    name: str
    template: str
    description: str
    order: int = 8
    workloads: list[str] = field(default_factory=list)
    # Built with -m32 and run as NAME-m32: the compat (ILP32) view of the driver.
    workloads_m32: list[str] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)
    # `mmap-harness bench`'s workloads for this driver (bench_*.c), none: not benchmarked.
    bench: list[str] = field(default_factory=list)
    source: str = ""    # the spec's file name, filled in by load_spec

    @property
    def device(self) -> str:
        return f"/dev/{self.name}"

    def all_params(self) -> dict[str, int]:
        """The template's parameters with defaults filled in."""
        declared = TEMPLATE_PARAMS.get(self.template, {})
        return {k: self.params.get(k, default) for k, (_lo, _hi, default) in declared.items()}

    def families(self) -> list[str]:
        """The kernel families that have this spec's template."""
        return [f for f in FAMILIES if (templates_dir(f) / f"{self.template}.c.j2").is_file()]

    def executables(self) -> list[str]:
        """Workload programs in run order; compat ones carry a -m32 suffix."""
        return [*self.workloads, *(f"{w}-m32" for w in self.workloads_m32)]


def load_spec(path: Path) -> DriverSpec:
    data = load_toml(path)
    if "source" in data:
        raise ConfigError(f"{path}: 'source' is set by the harness, not by a spec")
    spec = decode(DriverSpec, {**data, "source": path.name}, str(path))
    validate(spec, str(path))
    return spec


def validate(spec: DriverSpec, where: str) -> None:
    if not _C_IDENT.match(spec.name):
        raise ConfigError(f"{where}: name {spec.name!r} is not a short lower-case C identifier")
    if not _C_IDENT.match(spec.template) or not spec.families():
        known = ", ".join(sorted({p.name[:-5] for f in FAMILIES
                                  for p in templates_dir(f).glob("*.c.j2")}))
        raise ConfigError(f"{where}: unknown template {spec.template!r}",
                          hint=f"templates are: {known}")
    if not _SAFE_TEXT.match(spec.description):
        raise ConfigError(f"{where}: description must be 1-120 plain characters "
                          "(letters, digits, spaces and ,.;:()_/+=-)")
    if not MIN_ORDER.get(spec.template, 0) <= spec.order <= MAX_ORDER:
        raise ConfigError(f"{where}: order must be {MIN_ORDER.get(spec.template, 0)}.."
                          f"{MAX_ORDER} (2^order pages) for template {spec.template}")
    if not spec.workloads and not spec.workloads_m32:
        raise ConfigError(f"{where}: a driver needs at least one workload")
    for w in [*spec.workloads, *spec.workloads_m32, *spec.bench]:
        if not _C_IDENT.match(w) or not (WORKLOADS_DIR / f"{w}.c").is_file():
            raise ConfigError(f"{where}: no workload {w!r} in {WORKLOADS_DIR}")
    declared = TEMPLATE_PARAMS.get(spec.template, {})
    for key, value in spec.params.items():
        if key not in declared:
            raise ConfigError(f"{where}: template {spec.template} takes no parameter {key!r}",
                              hint=f"it takes: {', '.join(declared) or 'none'}")
        low, high, _ = declared[key]
        if not low <= value <= high:
            raise ConfigError(f"{where}: params.{key} must be {low}..{high}")


def all_specs() -> list[DriverSpec]:
    return [load_spec(p) for p in sorted(SPECS_DIR.glob("*.toml"))]


def find_specs(names: list[str]) -> list[DriverSpec]:
    """The specs whose `name` is in `names`; only those files are validated."""
    by_name: dict[str, Path] = {}
    for path in sorted(SPECS_DIR.glob("*.toml")):
        name = load_toml(path).get("name")
        if isinstance(name, str):
            by_name[name] = path
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown driver(s) {', '.join(unknown)}",
                          hint=f"choose from: {', '.join(sorted(by_name))}")
    return [load_spec(by_name[n]) for n in names]
