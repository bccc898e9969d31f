"""What the check takes from a gate, derived once per gate commit and cached.

`<cache>/illumos-gate/<commit12>-<hash>` holds:

    gate/          the headers of the include path (uts/intel, uts/common), of
                   the assembly sources' (uts/i86pc, usr/src/common, ...) and of
                   userland (usr/src/head), for the workloads
    cstyle.pl      the gate's usr/src/tools/scripts/cstyle.pl
    flags.json     the compile options of the DEBUG and non-DEBUG builds, for
                   modules of uts/intel and of uts/i86pc (flags.PLATFORMS)
    symbols.txt    what unix and genunix define, one a line
    derived.json   how: counts, objects without source, missing blobs, seconds

The hash covers the commit, the host's gcc (`gcc --version`) and the harness's
own deriving code, so a change to any of them derives again. The entry is built
in a temporary directory and renamed into place (harness.cache.get_or_build).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import Cache
from ..errors import ConfigError
from . import cw, csyms, flags, kernel_symbols, makevars
from .flags import BUILDS, PLATFORMS, CompileFlags
from .gate import Gate, extract_headers, text_loader

KIND = "illumos-gate"
CSTYLE = "usr/src/tools/scripts/cstyle.pl"
USERLAND_HEADERS = "usr/src/head"   # libc's headers: <stdio.h>, <unistd.h>, ...
_DERIVING = [makevars, cw, flags, csyms, kernel_symbols]


@dataclass(frozen=True)
class Derived:
    dir: Path
    commit: str
    flags: dict[str, dict[str, CompileFlags]]   # platform -> build -> options
    symbols: frozenset[str]
    built_s: float          # 0.0 when the entry was already cached

    @property
    def headers(self) -> Path:
        return self.dir / "gate"

    @property
    def cstyle(self) -> Path:
        return self.dir / "cstyle.pl"


def key(gate: Gate, gcc: str = "gcc") -> str:
    h = hashlib.sha256(gate.commit.encode())
    h.update(flags.gcc_version(gcc).encode())
    for source in (*(str(m.__file__) for m in _DERIVING), __file__):
        h.update(Path(source).read_bytes())
    return f"{gate.commit[:12]}-{h.hexdigest()[:16]}"


def derive(gate: Gate, cache: Cache, gcc: str = "gcc") -> Derived:
    """The cached entry for `gate`, derived first when absent."""
    start = time.monotonic()
    built = [False]

    def build(tmp: Path) -> None:
        built[0] = True
        _build(gate, tmp, gcc)
    entry = cache.get_or_build(KIND, key(gate, gcc), build, needs_bytes=200 * 2**20)
    return load(entry, gate.commit, time.monotonic() - start if built[0] else 0.0)


def load(entry: Path, commit: str, built_s: float = 0.0) -> Derived:
    data = json.loads((entry / "flags.json").read_text())
    compile_flags = {p: {b: CompileFlags(**data[p][b]) for b in BUILDS} for p in PLATFORMS}
    symbols = frozenset((entry / "symbols.txt").read_text().split())
    return Derived(dir=entry, commit=commit, flags=compile_flags, symbols=symbols,
                   built_s=built_s)


def _build(gate: Gate, out: Path, gcc: str) -> None:
    start = time.monotonic()
    load_file = text_loader(gate)
    compile_flags = {p: {b: flags.derive(load_file, b, gcc, p) for b in BUILDS}
                     for p in PLATFORMS}
    listing = gate.tree(["usr/src/uts", "usr/src/common", USERLAND_HEADERS, CSTYLE])
    include_dirs = sorted({d for by_build in compile_flags.values()
                           for f in by_build.values() for d in f.include_dirs()})
    include_dirs.append(USERLAND_HEADERS)
    missing = extract_headers(gate, listing, include_dirs, out / "gate")
    cstyle = gate.read({CSTYLE: listing[CSTYLE]} if CSTYLE in listing else {})
    if CSTYLE not in cstyle:
        raise ConfigError(f"the gate has no {CSTYLE} (or its blob is missing)",
                          hint="use a complete illumos-gate tree for --gate")
    (out / "cstyle.pl").write_bytes(cstyle[CSTYLE])
    with tempfile.TemporaryDirectory(prefix="kernel-symbols-", dir=out) as scratch:
        syms = kernel_symbols.derive(gate, load_file, listing, out / "gate", Path(scratch),
                                     gcc)
    (out / "flags.json").write_text(json.dumps(
        {p: {b: dataclasses.asdict(f) for b, f in by_build.items()}
         for p, by_build in compile_flags.items()}, indent=1))
    (out / "symbols.txt").write_text("".join(f"{s}\n" for s in sorted(syms.symbols)))
    (out / "derived.json").write_text(json.dumps({
        "commit": gate.commit, "gate": str(gate.path), "gcc": flags.gcc_version(gcc),
        "symbols": len(syms.symbols), "sources_read": syms.sources,
        "objects_without_source": syms.unresolved, "sources_unread": syms.unread,
        "missing_header_blobs": missing, "seconds": round(time.monotonic() - start, 2),
    }, indent=1))
