"""Compiling modules and workloads in the guest's build root, each in a sandbox.

The suite's own gcc and the kernel's own headers do the work, so a module is
built by the compiler that built the guest kernel. Every job runs in a
throwaway layer over the read-only root (harness.sandbox), as an unprivileged
user, with only its own directory writable: what a Makefile writes anywhere
else is discarded, and the cached root stays exactly as it was published.

Sources are copied into a host scratch directory (the user's tree is never
written); each job sees its copy at /build/<name>, where `make` runs with
PWD set, as it runs on the author's machine. Products are copied out at once.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .. import sandbox
from ..errors import BuildError
from ..plan import ExternalDriver
from ..rootfs import BuildRoot

BUILD_DIR = "/build"
INCLUDE_DIR = "/build/include"
# What a workload's `#include "x.h"` can name next to it: copied with the source.
HEADER_SUFFIXES = (".h", ".inc", ".def")
# Build products of someone else's tree: never copied in, so make starts clean.
STALE_PRODUCTS = ("*.ko", "*.o", "*.mod", "*.mod.c", ".*.cmd", "modules.order",
                  "Module.symvers")


class Builder:
    """`with Builder(root, cancel, timeout) as b:` builds against `root`; its
    scratch goes at exit."""

    def __init__(self, root: BuildRoot, cancel: threading.Event | None,
                 timeout: float) -> None:
        """`timeout`: seconds per job, already scaled (session.Timeouts.build)."""
        self.root = root
        self.cancel = cancel
        self.timeout = timeout
        self.scratch: Path | None = None
        self._includes: dict[Path, sandbox.Bind] = {}   # host dir -> its read-only copy

    def __enter__(self) -> Builder:
        self.scratch = Path(tempfile.mkdtemp(prefix="mmap-harness-build-"))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def kdir(self) -> str:
        return f"/lib/modules/{self.root.kernel_release}/build"

    def _workdir(self, name: str) -> Path:
        """A new scratch directory the build user may write."""
        assert self.scratch is not None
        work = self.scratch / name
        work.mkdir()
        return work

    def _run(self, what: str, argv: list[str], cwd: str, binds: list[sandbox.Bind],
             log: Path, hint: str = "") -> None:
        job = sandbox.Job(str(self.root.tree), argv, cwd, binds,
                          kernel_release=self.root.kernel_release)
        result = sandbox.run(job, self.timeout, self.cancel)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ cd {cwd} && {' '.join(argv)}\n{result.stdout}")
        if result.returncode != 0:
            raise BuildError(what, result.stdout, str(log), hint)

    def _copy_out(self, built: Path, out_dir: Path, mode: int = 0o644) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / built.name
        shutil.copyfile(built, target)
        target.chmod(mode)
        return target

    def module(self, src: Path, name: str, out_dir: Path, log: Path) -> Path:
        """Build the Kbuild tree `src` into `<out_dir>/<name>.ko`."""
        work = self._workdir(f"module-{name}")
        shutil.copytree(src, work, dirs_exist_ok=True)
        sandbox.hand_over(work)
        inside = f"{BUILD_DIR}/{name}"
        self._run(f"module {name}", ["make", "-C", self.kdir, f"M={inside}", "modules"],
                  inside, [sandbox.Bind(str(work), inside, writable=True)], log)
        return self._copy_out(work / f"{name}.ko", out_dir)

    def external_module(self, driver: ExternalDriver, out_dir: Path, log: Path) -> Path:
        """Build someone else's module with its own Makefile (or plain Kbuild).

        `make` runs in the module's directory with PWD set to it and `uname -r`
        answering the guest's release, so `M=$(PWD)`, `$(shell pwd)` and
        `KDIR ?= /lib/modules/$(shell uname -r)/build` all mean what their
        author meant; the kernel directory is also passed the usual ways.
        The driver's source tree comes along whole, for `$(PWD)/../include`.
        """
        src, tree = driver.source_dir, driver.tree
        work = self._workdir(f"external-{tree.name}")
        shutil.copytree(tree, work, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*STALE_PRODUCTS))
        sandbox.hand_over(work)
        mount = f"{BUILD_DIR}/{tree.name}"
        inside = posixpath.join(mount, src.relative_to(tree).as_posix())
        here = work / src.relative_to(tree)
        if any((here / f).is_file() for f in ("Makefile", "makefile", "GNUmakefile")):
            argv = ["make", f"KERNEL_SRC={self.kdir}", f"KDIR={self.kdir}",
                    f"KERNELDIR={self.kdir}", *driver.make_args]
        else:
            argv = ["make", "-C", self.kdir, f"M={inside}", "modules", *driver.make_args]
        hint = "" if driver.source_tree else (
            "only its own directory was copied: if its Makefile reaches outside it "
            "(e.g. $(PWD)/../include), give the tree with --source-tree DIR")
        self._run(f"the module in {src}", argv, inside,
                  [sandbox.Bind(str(work), mount, writable=True)], log, hint)
        built = sorted(here.rglob("*.ko"))
        if len(built) != 1:
            names = ", ".join(p.name for p in built) or "none"
            raise BuildError(f"the module in {src}",
                             f"expected the build to produce one .ko, found: {names}", str(log))
        return self._copy_out(built[0], out_dir)

    def _include(self, d: Path) -> sandbox.Bind:
        """A read-only copy of header directory `d`, made once per Builder."""
        if d not in self._includes:
            copy = self._workdir(f"include-{len(self._includes)}")
            shutil.copytree(d, copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.c", *STALE_PRODUCTS))
            inside = f"{INCLUDE_DIR}/{len(self._includes)}"
            self._includes[d] = sandbox.Bind(str(copy), inside)
        return self._includes[d]

    def workload(self, source: Path, out_dir: Path, log: Path, m32: bool = False,
                 include_dirs: list[Path] | None = None,
                 extra_flags: Sequence[str] = ()) -> Path:
        """Compile one C workload statically (with -m32 for compat processes).

        It is compiled beside the headers of its own directory, so
        `#include "mydrv.h"` finds what its author put next to it; then
        `include_dirs` (a driver's directory, the harness's headers).
        `extra_flags` come after the harness's own (a later -O wins).
        """
        name = source.stem + ("-m32" if m32 else "")
        work = self._workdir(f"workload-{name}")
        for f in source.parent.iterdir():
            if f.is_file() and (f.suffix in HEADER_SUFFIXES or f == source):
                shutil.copyfile(f, work / f.name)
        sandbox.hand_over(work)
        includes = [self._include(d) for d in include_dirs or []]
        inside = f"{BUILD_DIR}/{name}"
        flags = ["-m32"] if m32 else []
        self._run(f"workload {name}",
                  ["gcc", *flags, "-static", "-O2", "-Wall", "-Werror", *extra_flags,
                   *(f"-I{b.inside}" for b in includes), "-o", name, source.name],
                  inside, [sandbox.Bind(str(work), inside, writable=True), *includes], log)
        return self._copy_out(work / name, out_dir, 0o755)
