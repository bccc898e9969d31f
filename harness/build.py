"""Compiling modules and workloads inside the guest's build root (chroot).

The suite's own gcc and the kernel's own headers do the work, so a module is
built by the compiler that built the guest kernel. Sources are copied into a
scratch directory of the build root and the results copied out; the scratch
directory is removed whatever happens.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from .errors import BuildError
from .procs import run_captured
from .rootfs import CHROOT_ENV, BuildRoot

BUILD_TIMEOUT = 600.0


class Builder:
    """`with Builder(root) as b:` gives a scratch directory inside the build root."""

    def __init__(self, root: BuildRoot, cancel: threading.Event | None = None) -> None:
        self.root = root
        self.cancel = cancel
        self.scratch: Path | None = None
        self._includes: dict[Path, str] = {}   # host dir -> -I flag inside the root

    def __enter__(self) -> Builder:
        tmp = self.root.tree / "tmp"
        self.scratch = Path(tempfile.mkdtemp(prefix="mmap-harness-build-", dir=tmp))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _inside(self, path: Path) -> str:
        assert self.scratch is not None
        return "/" + str(path.relative_to(self.root.tree))

    def _run(self, what: str, cmd: list[str], log: Path) -> None:
        result = run_captured(["chroot", str(self.root.tree), *cmd], env=CHROOT_ENV,
                              timeout=BUILD_TIMEOUT, cancel=self.cancel)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{result.stdout}")
        if result.returncode != 0:
            raise BuildError(what, result.stdout, str(log))

    def module(self, src: Path, name: str, out_dir: Path, log: Path) -> Path:
        """Build the Kbuild tree `src` into `<out_dir>/<name>.ko`."""
        assert self.scratch is not None
        work = self.scratch / src.name
        shutil.copytree(src, work)
        kdir = f"/lib/modules/{self.root.kernel_release}/build"
        self._run(f"module {name}", ["make", "-C", kdir, f"M={self._inside(work)}", "modules"],
                  log)
        out_dir.mkdir(parents=True, exist_ok=True)
        ko = out_dir / f"{name}.ko"
        shutil.copyfile(work / f"{name}.ko", ko)
        return ko

    def external_module(self, src: Path, make_args: list[str], out_dir: Path,
                        log: Path) -> Path:
        """Build someone else's module with its own Makefile (or plain Kbuild).

        The kernel build directory is passed the usual ways; a Makefile that
        says `KDIR ?= /lib/modules/$(shell uname -r)/build` would otherwise
        find the host's kernel, not the guest's.
        """
        assert self.scratch is not None
        work = self.scratch / src.name
        shutil.copytree(src, work, symlinks=True,
                        ignore=shutil.ignore_patterns("*.ko", "*.o", ".*.cmd"))
        kdir = f"/lib/modules/{self.root.kernel_release}/build"
        inside = self._inside(work)
        if any((work / f).is_file() for f in ("Makefile", "makefile")):
            cmd = ["make", "-C", inside, f"KERNEL_SRC={kdir}", f"KDIR={kdir}",
                   f"KERNELDIR={kdir}", *make_args]
        else:
            cmd = ["make", "-C", kdir, f"M={inside}", "modules", *make_args]
        self._run(f"the module in {src}", cmd, log)
        built = sorted(work.rglob("*.ko"))
        if len(built) != 1:
            names = ", ".join(p.name for p in built) or "none"
            raise BuildError(f"the module in {src}",
                             f"expected the build to produce one .ko, found: {names}", str(log))
        out_dir.mkdir(parents=True, exist_ok=True)
        ko = out_dir / built[0].name
        shutil.copyfile(built[0], ko)
        return ko

    def _include(self, d: Path) -> str:
        """-I for header directory `d`, copied into the build root once per Builder."""
        assert self.scratch is not None
        if d not in self._includes:
            inside = self.scratch / f"include-{len(self._includes)}"
            shutil.copytree(d, inside, ignore=shutil.ignore_patterns("*.c"))
            self._includes[d] = f"-I{self._inside(inside)}"
        return self._includes[d]

    def workload(self, source: Path, out_dir: Path, log: Path, m32: bool = False,
                 include_dirs: list[Path] | None = None) -> Path:
        """Compile one C workload statically (with -m32 for compat processes)."""
        assert self.scratch is not None
        name = source.stem + ("-m32" if m32 else "")
        work = self.scratch / f"{name}.c"
        shutil.copyfile(source, work)
        includes = [self._include(d) for d in include_dirs or []]
        exe = self.scratch / name
        flags = ["-m32"] if m32 else []
        self._run(f"workload {name}",
                  ["gcc", *flags, "-static", "-O2", "-Wall", "-Werror", *includes, "-o",
                   self._inside(exe), self._inside(work)], log)
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exe, out_dir / name)
        (out_dir / name).chmod(0o755)
        return out_dir / name
