"""How the gate compiles a kernel module for x86, read from its own Makefiles.

A module's Makefile in usr/src/uts/intel/<module>/ sets UTSBASE and includes
uts/intel/Makefile.intel, which pulls in Makefile.files, Makefile.uts and
Makefile.master; its objects are compiled by `$(COMPILE.c)`, i.e.
`$(CC) $(CFLAGS) $(CPPFLAGS) -c`, through the compiler wrapper cw. Here that
chain is evaluated (harness.illumos.makevars) for the two builds nightly makes,
translated by cw's table (harness.illumos.cw), and checked against the host's
gcc: options it does not know (illumos's gcc has a few of its own) are dropped
and listed. Then the few options this host's gcc needs to generate code the way
illumos's gcc does (HOST_FLAGS) are added, each with its reason.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, HostError
from .cw import CwError, translate
from .makevars import MakeVars

GATE = "@GATE@"     # the gate's top in flags that are kept; argv() puts the real one
MODULE_MAKEFILE = "usr/src/uts/intel/Makefile.intel"
# What a module's Makefile includes, by where the module lives: uts/intel for
# ISA-wide drivers (pseudo devices, most of them), uts/i86pc for drivers of the
# PC platform (xsvc, ...), whose include path adds uts/i86pc (Makefile.files).
PLATFORMS: dict[str, str] = {
    "intel": MODULE_MAKEFILE,
    "i86pc": "usr/src/uts/i86pc/Makefile.i86pc",
}

# The two builds of nightly (usr/src/tools/scripts/nightly): DEBUG (BUILD_TYPE
# DBG64, RELEASE_BUILD left to Makefile.master's '#': the $(RELEASE_BUILD) lines
# are off) and non-DEBUG (set_non_debug_build_flags: RELEASE_BUILD= turns on
# Makefile.uts's `$(RELEASE_BUILD)CERRWARN += -_gcc=-Wno-unused` and
# `-Wno-empty-body`). Distributions ship the non-DEBUG one, developers run the
# DEBUG one (-DDEBUG: ASSERT is code); a driver must compile in both.
BUILDS: dict[str, dict[str, str]] = {
    "debug": {"BUILD_TYPE": "DBG64"},
    "non-debug": {"BUILD_TYPE": "OBJ64", "RELEASE_BUILD": ""},
}

# Where this host's gcc (Debian's, built for Linux) differs from the gcc the
# gate is built with (x86_64-pc-solaris2), what is added and why.
HOST_FLAGS: list[tuple[str, str]] = [
    ("-fno-pic", "Debian's gcc makes position-independent code by default; "
                 "-mcmodel=kernel refuses PIC, and illumos's gcc does not default to it"),
    ("-fno-pie", "the same, for executables' PIE default"),
    ("-mstack-protector-guard=global",
     "-fstack-protector-strong: the illumos kernel's guard is the global "
     "__stack_chk_guard (uts/i86pc/os/ssp.c), not a %fs-relative TLS slot"),
    ("-Wno-format", "sys/ccompile.h declares cmn_err() and friends "
                    "__format__(cmn_err, ...), a format only illumos's gcc knows"),
]


@dataclass(frozen=True)
class CompileFlags:
    build: str
    compiler: str                   # cw's name for the host gcc (-_<name>= options)
    gate_args: list[str]            # gcc options from the gate, @GATE@ for its top
    dropped: list[str] = field(default_factory=list)   # the host gcc does not know them
    host_args: list[str] = field(default_factory=list)

    def argv(self, gate_root: Path) -> list[str]:
        """The options, before the user's own and the source file."""
        return [a.replace(GATE, str(gate_root)) for a in self.gate_args] + self.host_args

    def include_dirs(self) -> list[str]:
        """The gate directories on the include path, relative to its top."""
        return [a[len("-I" + GATE) + 1:] for a in self.gate_args if a.startswith("-I" + GATE)]


def module_vars(load: Callable[[str], str | None], build: str,
                makefile: str = MODULE_MAKEFILE) -> MakeVars:
    """The variables of a module's Makefile in the gate (by default what every
    uts/intel/<module>/Makefile includes); `load` gives a gate file by its path
    relative to the gate's top. UTSBASE and SRC are the gate's (`make -e`)."""
    overrides = {"POUND_SIGN": "#", "MACH": "i386", "CC": "", "SRC": f"{GATE}/usr/src",
                 "UTSBASE": f"{GATE}/usr/src/uts", **BUILDS[build]}
    prefix = GATE + "/"
    mv = MakeVars(overrides, lambda p: load(p[len(prefix):]) if p.startswith(prefix) else None)
    mv.read(f"include {GATE}/{makefile}")
    return mv


def module_cerrwarn(load: Callable[[str], str | None], makefile: str) -> list[str]:
    """The gcc options a module's own Makefile (uts/intel/<module>/Makefile) adds
    to CERRWARN beyond what every module gets: what --cflag takes for it."""
    base = module_vars(load, "debug").words("CERRWARN")
    own = module_vars(load, "debug", makefile).words("CERRWARN")
    extra = own[len(base):] if own[:len(base)] == base else [w for w in own if w not in base]
    return [w.split("=", 1)[1] for w in extra if w.startswith("-_gcc=")]


def derive(load: Callable[[str], str | None], build: str, gcc: str = "gcc",
           platform: str = "intel") -> CompileFlags:
    """The compile options of `build` ('debug' or 'non-debug') of a module of
    `platform` (see PLATFORMS) for the host's gcc."""
    makefile = PLATFORMS[platform]
    mv = module_vars(load, build, makefile)
    line = mv.get("COMPILE.c").split()
    if "-c" not in line or not mv.get("CPPFLAGS"):
        raise ConfigError(f"the gate's {makefile} gives no compile line "
                          f"(COMPILE.c: {' '.join(line)!r})",
                          hint="check that --gate is an illumos-gate with usr/src/uts")
    line.remove("-c")
    compiler = f"gcc{gcc_major(gcc)}"
    try:
        args = translate(line, compiler)
    except CwError as e:
        raise ConfigError(f"the gate's compile line has an option this harness's cw "
                          f"table does not know: {e}",
                          hint="report it with the gate's commit; harness/illumos/cw.py "
                               "follows usr/src/tools/cw/cw.c") from None
    kept = [a for a in args if a[:2] in ("-D", "-U", "-I") or host_accepts(gcc, a)]
    dropped = list(dict.fromkeys(a for a in args if a not in kept))
    return CompileFlags(build=build, compiler=compiler, gate_args=kept, dropped=dropped,
                        host_args=[f for f, _why in HOST_FLAGS])


def gcc_major(gcc: str) -> str:
    return _gcc(gcc, "-dumpversion").split(".")[0]


def gcc_version(gcc: str) -> str:
    """The first line of `gcc --version`."""
    return (_gcc(gcc, "--version").splitlines() or [""])[0]


def _gcc(gcc: str, option: str) -> str:
    try:
        out = subprocess.run([gcc, option], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HostError(f"{gcc} is not installed (it compiles the drivers)",
                        hint="install it: apt-get install gcc binutils "
                             "(ci/bootstrap.sh does)") from None
    return out.stdout.strip()


@functools.lru_cache(maxsize=None)
def host_accepts(gcc: str, option: str) -> bool:
    """Whether the host's gcc takes `option` (with what HOST_FLAGS adds)."""
    probe = [gcc, *(f for f, _ in HOST_FLAGS), option, "-x", "c", "-c", "/dev/null",
             "-o", "/dev/null"]
    return subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL).returncode == 0
