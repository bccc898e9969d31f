"""Checking one illumos driver module against a gate, on this (Linux) host.

For each of the gate's two builds (DEBUG and non-DEBUG, harness.illumos.flags)
every .c of the module is compiled with the gate's options, then the objects are
joined with `ld -r` as the gate links a module. Then, on each build's object:

- every undefined symbol must be one unix or genunix defines (the kernel's
  run-time linker resolves nothing else for a module that names no dependency);
- `_init`, `_info` and `_fini` must be defined and global (modload calls them);

and the sources must be clean under the gate's cstyle. Each step's failure keeps
its evidence (compiler output, the symbols, cstyle's lines) for the report.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HostError
from ..procs import run_captured
from .derived import Derived
from .flags import BUILDS

ENTRY_POINTS = ("_init", "_info", "_fini")
# git-pbchk's flags (usr/src/tools/scripts/git-pbchk.py: picky, POSIX types,
# continuation lines), the check every change to the gate passes.
CSTYLE_FLAGS = ["-p", "-P", "-c"]
MAX_DETAIL_LINES = 40
COMMAND_TIMEOUT_S = 300.0


@dataclass
class Step:
    name: str           # compile, link, symbols, entry points, cstyle
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass
class DriverResult:
    name: str
    sources: list[Path]
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def report(self) -> str:
        """One line, then the evidence of each failed step indented below it."""
        status = "PASS" if self.ok else "FAIL"
        lines = [f"{status} {self.name}: " + "; ".join(
            f"{s.name} {'ok' if s.ok else 'FAILED'} ({s.summary})" for s in self.steps)]
        for s in self.steps:
            if not s.ok:
                lines.append(f"    {s.name}: {s.summary}")
                shown = s.details[:MAX_DETAIL_LINES]
                lines += [f"      {d}" for d in shown]
                if len(s.details) > len(shown):
                    lines.append(f"      ... {len(s.details) - len(shown)} more lines")
        return "\n".join(lines)


@dataclass(frozen=True)
class Module:
    """A driver module to check: its sources (one module), where its own headers
    are, which files cstyle reads, and options its Makefile would add."""
    name: str
    sources: list[Path]
    include_dirs: list[Path]
    style_files: list[Path]


def check(module: Module, derived: Derived, work: Path, cflags: list[str],
          picky: bool = True) -> DriverResult:
    result = DriverResult(module.name, module.sources)
    failures: list[str] = []
    objects = {b: _compile(module, derived, b, work / b, cflags, failures) for b in BUILDS}
    result.steps.append(Step("compile", not failures,
                             f"{len(module.sources)} file(s), {' and '.join(BUILDS)} builds"
                             if not failures else "errors below", failures))
    if not failures:
        linked: dict[str, Path] = {}
        errors: list[str] = []
        for build, objs in objects.items():
            target = work / build / f"{module.name}.module.o"
            proc = _run(["ld", "-r", "-o", str(target), *map(str, objs)])
            if proc.returncode == 0:
                linked[build] = target
            else:
                errors += [f"[{build} build] {line}" for line in proc.stdout.splitlines()]
        result.steps.append(Step("link", not errors, "ld -r" if not errors
                                 else "ld -r failed", errors))
        if not errors:
            _symbols(linked, derived, result)
    result.steps.append(_cstyle(module.style_files, derived, picky))
    return result


def _compile(module: Module, derived: Derived, build: str, out: Path, cflags: list[str],
             failures: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    base = derived.flags[build].argv(derived.headers)
    includes = [f"-I{d}" for d in module.include_dirs]
    objs: list[Path] = []
    for src in module.sources:
        obj = out / f"{src.stem}.o"
        proc = _run(["gcc", *base, *cflags, *includes, "-c", str(src), "-o", str(obj)])
        if proc.returncode != 0:
            output = [f"  {line}" for line in proc.stdout.splitlines() if line.strip()]
            if output and _contains(failures, output):
                failures.append(f"[{build} build] gcc {src.name}: the same errors")
            else:
                failures += [f"[{build} build] gcc {src.name}:", *output]
        objs.append(obj)
    return objs


def _contains(lines: list[str], part: list[str]) -> bool:
    return any(lines[i:i + len(part)] == part for i in range(len(lines) - len(part) + 1))


def _symbols(linked: dict[str, Path], derived: Derived, result: DriverResult) -> None:
    foreign: dict[str, list[str]] = {}
    undefined: set[str] = set()
    missing_entries: dict[str, list[str]] = {}
    for build, obj in linked.items():
        defined, needed = symbol_table(obj)
        undefined |= needed
        for sym in sorted(needed - derived.symbols):
            foreign.setdefault(sym, []).append(build)
        absent = [e for e in ENTRY_POINTS if defined.get(e) != "T"]
        if absent:
            missing_entries[build] = absent
    if foreign:
        details = [f"{s}  ({' and '.join(b)} build{'s' if len(b) > 1 else ''})"
                   for s, b in foreign.items()]
        result.steps.append(Step("symbols", False,
                                 f"{len(foreign)} undefined symbol(s) that neither unix nor "
                                 "genunix defines", details))
    else:
        result.steps.append(Step("symbols", True,
                                 f"{len(undefined)} undefined, all defined by unix/genunix"))
    if missing_entries:
        names = sorted({e for v in missing_entries.values() for e in v})
        result.steps.append(Step("entry points", False,
                                 f"{', '.join(names)} not defined as a global function",
                                 [f"{b} build: missing {', '.join(v)}"
                                  for b, v in missing_entries.items()]))
    else:
        result.steps.append(Step("entry points", True, " ".join(ENTRY_POINTS)))


def symbol_table(obj: Path) -> tuple[dict[str, str], set[str]]:
    """(global symbols defined with their nm type, symbols undefined), by `nm -P`."""
    proc = _run(["nm", "-P", str(obj)])
    if proc.returncode != 0:
        raise HostError(f"nm could not read {obj}: {proc.stdout.strip()}",
                        hint="install binutils (ci/bootstrap.sh does)")
    return parse_nm(proc.stdout)


def parse_nm(text: str) -> tuple[dict[str, str], set[str]]:
    defined: dict[str, str] = {}
    undefined: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind in ("U", "w", "v"):
            undefined.add(name)
        elif kind.isupper():
            defined[name] = kind
    return defined, undefined


def _cstyle(files: list[Path], derived: Derived, picky: bool) -> Step:
    opts = CSTYLE_FLAGS if picky else [f for f in CSTYLE_FLAGS if f != "-p"]
    proc = _run(["perl", str(derived.cstyle), *opts, *map(str, files)])
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    how = f"cstyle {' '.join(opts)}"
    if proc.returncode == 0 and not lines:
        return Step("cstyle", True, how)
    return Step("cstyle", False, f"{how}: {len(lines)} complaint(s)", lines)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return run_captured(cmd, timeout=COMMAND_TIMEOUT_S, reap=False)
    except FileNotFoundError:
        raise HostError(f"{cmd[0]} is not installed (the illumos check runs it)",
                        hint="install gcc, binutils and perl (ci/bootstrap.sh does)") \
            from None
