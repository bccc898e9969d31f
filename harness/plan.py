"""What a run will build, load and run for each driver: the harness's own
template drivers and a driver someone else wrote (`--driver-dir`).

Inputs from the command line are checked here, before anything is built,
so a typo is one clear message instead of a failed build a minute later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .drivers import INCLUDE_DIR, WORKLOADS_DIR, DriverSpec
from .errors import ConfigError

HOLDER = "hold"  # the workload that keeps a mapping alive for the busy-unload check
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=[^\0\n]*$")
_STEM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9_./-]+$")


@dataclass(frozen=True)
class Workload:
    name: str            # the executable's name in the guest (NAME, or NAME-m32)
    source: Path
    m32: bool = False


@dataclass(frozen=True)
class ExternalDriver:
    """An out-of-tree module someone else wrote, built with its own Makefile."""

    source_dir: Path
    module_params: list[str] = field(default_factory=list)
    make_args: list[str] = field(default_factory=list)
    device: str | None = None   # given to each workload as its only argument
    # The tree the Makefile reaches into (`$(PWD)/../include`): copied whole,
    # with make run in source_dir inside it. Defaults to source_dir itself.
    source_tree: Path | None = None

    @property
    def tree(self) -> Path:
        return self.source_tree or self.source_dir


@dataclass(frozen=True)
class DriverPlan:
    key: str                         # results name: the spec's name or the directory's
    device: str | None
    workloads: list[Workload]
    spec: DriverSpec | None = None   # set for the harness's own drivers (checks apply)
    external: ExternalDriver | None = None

    @property
    def has_module(self) -> bool:
        """False for a plan that only builds workloads (a test's own program)."""
        return self.spec is not None or self.external is not None

    @property
    def module_params(self) -> list[str]:
        return self.external.module_params if self.external else []


def template_plan(spec: DriverSpec, extra: list[Workload]) -> DriverPlan:
    own = [Workload(w, WORKLOADS_DIR / f"{w}.c") for w in spec.workloads]
    own += [Workload(f"{w}-m32", WORKLOADS_DIR / f"{w}.c", True) for w in spec.workloads_m32]
    return DriverPlan(spec.name, spec.device, own + extra, spec=spec)


def external_plan(ext: ExternalDriver, extra: list[Workload]) -> DriverPlan:
    return DriverPlan(ext.source_dir.name, ext.device, extra, external=ext)


def workloads_to_build(plans: list[DriverPlan]) -> list[Workload]:
    """Every workload the plans run, and the holder, each once, in name order."""
    wanted = {Workload(HOLDER, WORKLOADS_DIR / f"{HOLDER}.c")}
    wanted |= {w for p in plans for w in p.workloads}
    return sorted(wanted, key=lambda w: w.name)


def workload_includes(plans: list[DriverPlan]) -> list[Path]:
    """A workload sees the headers beside it, then its driver's (a test
    program includes the driver's ioctl header), then the harness's."""
    return [*(p.external.source_dir for p in plans if p.external), WORKLOADS_DIR, INCLUDE_DIR]


def extra_workloads(paths: list[Path]) -> list[Workload]:
    """`--workload FILE.c`: C files from anywhere, run after a driver's own."""
    found: dict[str, Workload] = {}
    for path in paths:
        if path.suffix != ".c" or not path.is_file():
            raise ConfigError(f"--workload {path}: not a C source file",
                              hint="give the path of an existing FILE.c")
        if not _STEM.match(path.stem):
            raise ConfigError(f"--workload {path}: the file name must be plain "
                              "(letters, digits, '_', '-', '.')")
        if path.stem in found:
            raise ConfigError(f"--workload {path}: two workloads are called {path.stem}")
        found[path.stem] = Workload(path.stem, path.resolve())
    return list(found.values())


def external_driver(source_dir: Path, module_params: list[str], make_args: list[str],
                    device: str | None, source_tree: Path | None = None) -> ExternalDriver:
    """Validate `--driver-dir` and its companions."""
    if not source_dir.is_dir():
        raise ConfigError(f"--driver-dir {source_dir}: no such directory",
                          hint="point at the directory holding the module's Makefile")
    if not any((source_dir / f).is_file() for f in ("Makefile", "makefile", "Kbuild")):
        raise ConfigError(f"--driver-dir {source_dir}: no Makefile or Kbuild",
                          hint="point at the directory holding the module's Makefile")
    if not _STEM.match(source_dir.resolve().name):
        raise ConfigError(f"--driver-dir {source_dir}: the directory name must be plain")
    for option, values in (("--module-param", module_params), ("--make-arg", make_args)):
        for value in values:
            if not _ASSIGNMENT.match(value):
                raise ConfigError(f"{option} {value!r}: expected KEY=VALUE",
                                  hint=f"write it as {option} NAME=VALUE")
    if device is not None and not _DEVICE.match(device):
        raise ConfigError(f"--device {device!r}: expected a path under /dev")
    tree = None
    if source_tree is not None:
        tree = source_tree.resolve()
        if not tree.is_dir() or not source_dir.resolve().is_relative_to(tree):
            raise ConfigError(f"--source-tree {source_tree}: not a directory that holds "
                              f"--driver-dir {source_dir}",
                              hint="give the top of the tree the module's Makefile reaches "
                                   "into, e.g. the parent of its directory")
        if not _STEM.match(tree.name):
            raise ConfigError(f"--source-tree {source_tree}: the directory name must be plain")
    return ExternalDriver(source_dir.resolve(), module_params, make_args, device, tree)


# --- Shards: a plan split into n deterministic, disjoint parts that cover it ---

_SHARD = re.compile(r"^([0-9]+)/([0-9]+)$")


@dataclass(frozen=True)
class Shard:
    """`--shard i/n`: part i (1-based) of n.

    The unit a shard owns is one (guest, driver): a driver's workloads and
    the harness's checks on it run in one guest with that driver loaded, so
    they cannot be split further. Units are sorted by (guest name, driver
    name) and dealt round-robin (the k-th unit goes to shard k mod n + 1):
    the split depends only on the names, never on argument order, dict order
    or PYTHONHASHSEED, and every unit lands in exactly one shard."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = _SHARD.match(text.strip())
        if m is None or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ConfigError(f"--shard {text!r}: expected i/n with 1 <= i <= n",
                              hint="write it as --shard 2/4 (the second of four parts)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, units: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (guest, driver) units of this shard."""
        ordered = sorted(set(units))
        return {u for k, u in enumerate(ordered) if k % self.count == self.index - 1}


def cases(guest_names: list[str], plans: list[DriverPlan],
          shard: Shard | None = None) -> list[tuple[str, str, str]]:
    """Every (guest, driver, workload) the plan runs, in run order; with a
    shard, only the cases whose (guest, driver) unit it owns."""
    chosen = ({g: plans for g in guest_names} if shard is None
              else shard_drivers(guest_names, plans, shard))
    return [(g, p.key, w.name) for g, ps in chosen.items() for p in ps for w in p.workloads]


def shard_drivers(guest_names: list[str], plans: list[DriverPlan],
                  shard: Shard) -> dict[str, list[DriverPlan]]:
    """Per guest, the drivers the shard runs there (in plan order); a guest
    with none is left out, so it is not booted."""
    owned = shard.owns([(g, p.key) for g in guest_names for p in plans])
    chosen = {g: [p for p in plans if (g, p.key) in owned] for g in guest_names}
    return {g: ps for g, ps in chosen.items() if ps}
