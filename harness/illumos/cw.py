"""The gate's compiler wrapper, cw (usr/src/tools/cw/cw.c, do_gcc), for the
arguments the uts Makefiles give it: Sun Studio style options in, gcc's out.

The gate never calls gcc directly: every compile line goes through cw, which
starts with a few options of its own and translates each argument. This is the
part of its table that kernel modules meet; anything else is refused as cw
refuses it ("mapping failed"), so a gate whose Makefiles grew an option this
table lacks says so instead of compiling with something made up.
"""

from __future__ import annotations

# What do_gcc puts before every translated argument list.
PROLOGUE = ["-fident", "-finline", "-fno-inline-functions", "-fno-builtin", "-fno-asm",
            "-fdiagnostics-show-option", "-nodefaultlibs", "-D__sun"]

_FIXED = {
    "-v": ["-Wall", "-Wextra"],             # warnings(): -Wall -Wextra, once
    "-errtags=yes": ["-Wall", "-Wextra"],
    "-errwarn=%all": ["-Werror"],
    "-m64": ["-m64", "-mtune=opteron"],
    "-m32": ["-m32"],
    "-xc99=%all": ["-std=gnu99"],
    "-xc99=%none": ["-std=gnu89"],
    "-xmodel=kernel": ["-ffreestanding", "-mno-red-zone"],  # + -mcmodel=kernel at the end
    "-Wu,-save_args": ["-msave-args"],
    "-c": ["-c"], "-g": ["-g"], "-O": ["-O"],
}


class CwError(ValueError):
    """An argument cw would refuse."""


def translate(args: list[str], compiler: str) -> list[str]:
    """gcc's arguments for cw's `args`, cw's compiler being named `compiler`
    (its `-_<compiler>=` options apply, as do `-_gcc=` and `-_gnu=` ones)."""
    out = list(PROLOGUE)
    warned = False
    model: str | None = None
    it = iter(args)
    for arg in it:
        if arg.startswith("-_"):
            name, _, value = arg[2:].partition("=")
            if name in (compiler, "gcc", "gnu") and value:
                out.append(value)
            continue                    # another compiler's option (smatch, gcc10, ...)
        if arg in ("-v", "-errtags=yes"):
            if not warned:
                out += _FIXED[arg]
            warned = True
            continue
        if arg in _FIXED:
            out += _FIXED[arg]
            if arg == "-xmodel=kernel":
                model = "-mcmodel=kernel"
            continue
        if arg[:2] in ("-D", "-U", "-I") and len(arg) > 2:
            out.append(arg)
            if arg in ("-D_KERNEL", "-D_BOOT"):
                out.append("-ffreestanding")
            continue
        if arg.startswith(("-Wa,", "-Wp,", "-Wl,")):
            out.append(arg)
            continue
        if arg.startswith("-xO") and len(arg) == 4 and arg[3].isdigit():
            level = int(arg[3])
            if level >= 2:      # optim_disable(), and -xO3 and up become -O2
                out += ["-fno-strict-aliasing", "-fno-unit-at-a-time",
                        "-fno-optimize-sibling-calls"]
            out.append(f"-O{min(level, 2)}")
            continue
        if arg.startswith("-Y"):
            where = next(it, "") if arg == "-Y" else arg[2:]
            if not where.startswith("I,"):
                raise CwError(f"cw: mapping failed at or near arg '{arg}'")
            out += ["-nostdinc", f"-I{where[2:]}"]
            continue
        raise CwError(f"cw: mapping failed at or near arg '{arg}'")
    if model:
        out.append(model)
    return out
