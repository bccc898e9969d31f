"""`mmap-harness illumos check`: every asked-for driver checked against one gate."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cache import Cache
from ..drivers import DriverSpec
from ..errors import ConfigError
from ..plan import template_plan, workloads_to_build
from . import derived, sources
from .check import DriverResult, Module, check
from .gate import open_gate
from .userland import check_workloads

GATE_ENV = "ILLUMOS_GATE"


@dataclass(frozen=True)
class Request:
    gate: Path | None           # None: $ILLUMOS_GATE
    drivers: list[str] | None   # spec names; None: all with an illumos template
    driver_dirs: list[Path]
    cflags: list[str]
    picky: bool
    cache_dir: Path
    timeout_scale: float = 1.0  # times each compiler or cstyle run's base seconds
    platform: str = "intel"     # of the driver_dirs: uts/intel or uts/i86pc


def run(req: Request, say: Callable[[str], None]) -> list[DriverResult]:
    """Check every module, saying each one's report as it is done."""
    gate_path = req.gate or (Path(os.environ[GATE_ENV]) if os.environ.get(GATE_ENV) else None)
    if gate_path is None:
        raise ConfigError("no illumos-gate to check against",
                          hint=f"give --gate PATH (a git checkout or bare repository of "
                               f"illumos-gate), or set {GATE_ENV}")
    cflags = [gcc_flag(f) for f in req.cflags]
    own = [sources.from_dir(d, req.platform) for d in req.driver_dirs]
    with tempfile.TemporaryDirectory(prefix="mmap-harness-illumos-") as tmp:
        specs = sources.specs(req.drivers) if req.drivers or not own else []
        modules = _modules(specs, own, Path(tmp) / "src")
        gate = open_gate(gate_path)
        cache = Cache(req.cache_dir)
        start = time.monotonic()
        with cache.lease(derived.KIND, derived.key(gate)):
            data = derived.derive(gate, cache)
            how = (f"derived in {data.built_s:.1f} s" if data.built_s
                   else f"cached, read in {time.monotonic() - start:.2f} s")
            say(f"illumos-gate {gate.commit[:12]} ({gate.path}): {len(data.symbols)} "
                f"symbols of unix/genunix, flags and headers {how} ({data.dir})")
            results: list[DriverResult] = []
            for n, module in enumerate(modules):
                result = check(module, data, Path(tmp) / f"{n}-{module.name}", cflags,
                               req.picky, req.timeout_scale)
                say(result.report())
                results.append(result)
            # The specs' workloads, as their drivers' users run them on illumos.
            workloads = workloads_to_build([template_plan(s, []) for s in specs])
            for result in check_workloads(workloads if specs else [], data,
                                          Path(tmp) / "workloads", req.timeout_scale):
                say(result.report())
                results.append(result)
    return results


def _modules(specs: list[DriverSpec], own: list[Module], out: Path) -> list[Module]:
    if not specs and not own:
        raise ConfigError("no driver spec has an illumos template yet "
                          "(drivers/illumos/templates/)",
                          hint="check your own driver with --driver-dir DIR")
    return [*sources.rendered(specs, out), *own]


def gcc_flag(flag: str) -> str:
    """A --cflag as gcc takes it; a Makefile's `-_gcc=FLAG` is taken as FLAG."""
    flag = flag.removeprefix("-_gcc=")
    if not flag.startswith("-") or flag.startswith("-_"):
        raise ConfigError(f"--cflag {flag!r} is not a gcc option",
                          hint="give one option per --cflag, e.g. --cflag=-Wno-parentheses")
    return flag
