"""Checking one illumos driver module against a gate, on this (Linux) host.

For each of the gate's two builds (DEBUG and non-DEBUG, harness.illumos.flags)
every .c of the module is compiled with the gate's options, then the objects are
joined with `ld -r` as the gate links a module. Then, on each build's object:

- every undefined symbol must be one unix or genunix defines (the kernel's
  run-time linker resolves nothing else for a module that names no dependency);
- `_init`, `_info` and `_fini` must be defined and global (modload calls them);

and the sources must be clean under the gate's cstyle. Each step's failure keeps
its evidence (compiler output, the symbols, cstyle's lines) for the report.

Like every build of the harness, each command runs in a sandbox
(harness.sandbox) as the unprivileged build user: its lower layer is this
host's own root, read-only, so the host's gcc, ld and perl do the work; the
module's sources are staged into a scratch directory seen at /check (the only
writable place) and the gate's headers are seen at /gate. The gate's
cstyle.pl is someone else's code: it too writes nothing outside /check.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .. import sandbox
from ..errors import HostError
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
    are, which files cstyle reads, and the uts directory it builds in
    (flags.PLATFORMS: intel, or i86pc for a PC platform driver)."""
    name: str
    sources: list[Path]
    include_dirs: list[Path]
    style_files: list[Path]
    platform: str = "intel"


INSIDE_WORK = "/check"   # the scratch directory, seen in the sandbox
INSIDE_GATE = "/gate"    # the gate's extracted headers, read-only


@dataclass(frozen=True)
class Box:
    """Where a check's commands run: the sandbox over this host's root."""

    work: Path           # host scratch directory, the build user's
    headers: Path        # the gate's extracted headers on the host
    timeout_scale: float = 1.0   # times COMMAND_TIMEOUT_S, per command

    def inside(self, path: Path) -> str:
        return f"{INSIDE_WORK}/{path.relative_to(self.work)}"

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if shutil.which(argv[0]) is None:
            raise HostError(f"{argv[0]} is not installed (the illumos check runs it)",
                            hint="install gcc, binutils and perl (ci/bootstrap.sh does)")
        job = sandbox.Job("/", argv, INSIDE_WORK,
                          [sandbox.Bind(str(self.work), INSIDE_WORK, writable=True),
                           sandbox.Bind(str(self.headers), INSIDE_GATE)])
        return sandbox.run(job, COMMAND_TIMEOUT_S * self.timeout_scale)


def stage(work: Path, headers: Path, files: dict[str, Path],
          timeout_scale: float = 1.0) -> Box:
    """Copy `files` (name under `work` -> host file) into `work` and give it
    to the build user; the Box to run the check's commands in."""
    for name, source in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, work / name)
    sandbox.hand_over(work)
    return Box(work, headers, timeout_scale)


def _as_known(line: str) -> str:
    """A tool's line names the staged copy: name the file as the user knows it."""
    return line.replace(f"{INSIDE_WORK}/src/", "")


def _staged(module: Module, derived: Derived, work: Path,
            timeout_scale: float) -> tuple[Module, Box]:
    """The module's sources, its headers and the gate's cstyle.pl in `work`."""
    files = {f"src/{s.name}": s for s in module.sources}
    files |= {f"src/{s.name}": s for s in module.style_files}
    for n, d in enumerate(module.include_dirs):
        files |= {f"include/{n}/{h.name}": h for h in sorted(d.glob("*.h"))}
    files["cstyle.pl"] = derived.cstyle
    box = stage(work, derived.headers, files, timeout_scale)
    staged = Module(module.name, [work / "src" / s.name for s in module.sources],
                    [work / "include" / str(n) for n in range(len(module.include_dirs))],
                    [work / "src" / s.name for s in module.style_files], module.platform)
    return staged, box


def check(module: Module, derived: Derived, work: Path, cflags: list[str],
          picky: bool = True, timeout_scale: float = 1.0) -> DriverResult:
    result = DriverResult(module.name, module.sources)
    module, box = _staged(module, derived, work, timeout_scale)
    failures: list[str] = []
    objects = {b: _compile(module, derived, box, b, work / b, cflags, failures)
               for b in BUILDS}
    result.steps.append(Step("compile", not failures,
                             f"{len(module.sources)} file(s), {' and '.join(BUILDS)} builds"
                             if not failures else "errors below", failures))
    if not failures:
        linked: dict[str, Path] = {}
        errors: list[str] = []
        for build, objs in objects.items():
            target = work / build / f"{module.name}.module.o"
            proc = box.run(["ld", "-r", "-o", box.inside(target), *map(box.inside, objs)])
            if proc.returncode == 0:
                linked[build] = target
            else:
                errors += [f"[{build} build] {line}" for line in proc.stdout.splitlines()]
        result.steps.append(Step("link", not errors, "ld -r" if not errors
                                 else "ld -r failed", errors))
        if not errors:
            _symbols(linked, derived, box, result)
    result.steps.append(_cstyle(module.style_files, box, picky))
    return result


def _compile(module: Module, derived: Derived, box: Box, build: str, out: Path,
             cflags: list[str], failures: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    sandbox.hand_over(out)
    base = derived.flags[module.platform][build].argv(Path(INSIDE_GATE))
    includes = [f"-I{box.inside(d)}" for d in module.include_dirs]
    objs: list[Path] = []
    for src in module.sources:
        obj = out / f"{src.stem}.o"
        proc = box.run(["gcc", *base, *cflags, *includes, "-c", box.inside(src), "-o",
                        box.inside(obj)])
        if proc.returncode != 0:
            output = [f"  {_as_known(line)}" for line in proc.stdout.splitlines()
                      if line.strip()]
            if output and _contains(failures, output):
                failures.append(f"[{build} build] gcc {src.name}: the same errors")
            else:
                failures += [f"[{build} build] gcc {src.name}:", *output]
        objs.append(obj)
    return objs


def _contains(lines: list[str], part: list[str]) -> bool:
    return any(lines[i:i + len(part)] == part for i in range(len(lines) - len(part) + 1))


def _symbols(linked: dict[str, Path], derived: Derived, box: Box,
             result: DriverResult) -> None:
    foreign: dict[str, list[str]] = {}
    undefined: set[str] = set()
    missing_entries: dict[str, list[str]] = {}
    for build, obj in linked.items():
        defined, needed = symbol_table(obj, box)
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


def symbol_table(obj: Path, box: Box) -> tuple[dict[str, str], set[str]]:
    """(global symbols defined with their nm type, symbols undefined), by `nm -P`."""
    proc = box.run(["nm", "-P", box.inside(obj)])
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


def _cstyle(files: list[Path], box: Box, picky: bool) -> Step:
    opts = CSTYLE_FLAGS if picky else [f for f in CSTYLE_FLAGS if f != "-p"]
    proc = box.run(["perl", box.inside(box.work / "cstyle.pl"), *opts,
                    *map(box.inside, files)])
    lines = [_as_known(line) for line in proc.stdout.splitlines() if line.strip()]
    how = f"cstyle {' '.join(opts)}"
    if proc.returncode == 0 and not lines:
        return Step("cstyle", True, how)
    return Step("cstyle", False, f"{how}: {len(lines)} complaint(s)", lines)
