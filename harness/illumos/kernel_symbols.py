"""The symbols the illumos kernel proper (unix and genunix) defines, derived from the gate.

A driver module is linked by the kernel's run-time linker against unix and
genunix (and the modules it names as dependencies; the harness's drivers name
none). Which objects make each is in its own Makefile, evaluated as the gate's
make would (harness.illumos.makevars): unix is uts/i86pc/unix/Makefile's
OBJECTS (SPECIAL_OBJS, CORE_OBJS, KRTLD_OBJS, MACH_NOT_YET_KMODS of the
Makefile.files), genunix is uts/intel/genunix/Makefile's (GENUNIX_OBJS,
NOT_YET_KMODS). Each object's source is found by the pattern rules
(`$(OBJS_DIR)/%.o: DIR/%.c` or `.S`) in the order the Makefiles give them, as
make finds it. C sources are read by harness.illumos.csyms; assembly sources
go through the host's C preprocessor with the module's AS_CPPFLAGS (headers
the build generates, such as assym.h, are empty stand-ins: only the
ENTRY()/ALTENTRY()/DGDEF() lines matter) and their `.globl` names are taken.
Objects the build generates (vers.o, ...) have no source in the gate and are
listed in `unresolved`.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .csyms import asm_globals, c_globals
from .flags import GATE, module_vars
from .gate import Gate, extract_headers

MODULES = {"unix": "usr/src/uts/i86pc/unix/Makefile",
           "genunix": "usr/src/uts/intel/genunix/Makefile"}
_INCLUDE = re.compile(rb'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


@dataclass
class KernelSymbols:
    symbols: set[str] = field(default_factory=set)
    sources: dict[str, int] = field(default_factory=dict)        # module -> files read
    unresolved: dict[str, list[str]] = field(default_factory=dict)  # objects without source
    unread: list[str] = field(default_factory=list)             # sources that failed cpp


def derive(gate: Gate, load: Callable[[str], str | None], listing: dict[str, str],
           headers: Path, scratch: Path, gcc: str = "gcc") -> KernelSymbols:
    """Read the gate (`listing`: its files under usr/src/uts and usr/src/common).
    The headers the assembly sources include are extracted under `headers`
    (kept: the compile uses the same tree); `scratch` is an empty directory the
    caller removes."""
    result = KernelSymbols()
    for module, makefile in MODULES.items():
        mv = module_vars(load, "debug", makefile)
        rules = [(prefix, posixpath.normpath(d.replace(GATE + "/", "", 1)), ext)
                 for prefix, d, ext in mv.pattern_rules]
        sources, missing = _sources(mv.words("OBJECTS"), rules, listing)
        result.unresolved[module] = missing
        result.sources[module] = len(sources)
        texts = gate.read({p: listing[p] for p in sources})
        result.unread += sorted(set(sources) - set(texts))
        for path, data in texts.items():
            if path.endswith(".c"):
                result.symbols |= c_globals(data.decode(errors="replace"))
        asm = {p: d for p, d in texts.items() if not p.endswith(".c")}
        cppflags = [a for a in mv.get("AS_CPPFLAGS").split() if a[:2] in ("-D", "-U", "-I")]
        names, failed = _asm_symbols(gate, listing, asm, cppflags, headers,
                                     scratch / module, gcc)
        result.symbols |= names
        result.unread += failed
    return result


def _sources(objects: list[str], rules: list[tuple[str, str, str]],
             listing: dict[str, str]) -> tuple[list[str], list[str]]:
    """Each object's source by the first pattern rule whose file exists."""
    found: list[str] = []
    missing: list[str] = []
    for obj in dict.fromkeys(os.path.basename(o) for o in objects):
        stem = obj[:-2] if obj.endswith(".o") else obj
        for prefix, directory, ext in rules:
            path = f"{directory}/{stem[len(prefix):]}.{ext}"
            if stem.startswith(prefix) and path in listing:
                found.append(path)
                break
        else:
            missing.append(obj)
    return found, missing


def _asm_symbols(gate: Gate, listing: dict[str, str], asm: dict[str, bytes],
                 cppflags: list[str], headers: Path, work: Path,
                 gcc: str) -> tuple[set[str], list[str]]:
    include_dirs = [posixpath.normpath(a[len("-I" + GATE) + 1:])
                    for a in cppflags if a.startswith("-I" + GATE)]
    extract_headers(gate, listing, include_dirs, headers)
    stubs = work / "generated"
    for path, data in asm.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
        for name in _INCLUDE.findall(data):
            name = name.decode()
            where = [*include_dirs, posixpath.dirname(path)]
            if not any(f"{d}/{name}" in listing for d in where):
                (stubs / name).parent.mkdir(parents=True, exist_ok=True)
                (stubs / name).touch()
    flags = [a.replace(GATE, str(headers)) for a in cppflags] + [f"-I{stubs}"]
    names: set[str] = set()
    failed: list[str] = []
    for path in sorted(asm):
        own = f"-iquote{headers / posixpath.dirname(path)}"
        proc = subprocess.run([gcc, "-E", "-P", "-nostdinc", "-x", "assembler-with-cpp",
                               own, *flags, str(work / path)], capture_output=True,
                              text=True, errors="replace", stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            failed.append(path)
        names |= asm_globals(proc.stdout)
    return names, failed
