"""Compiling modules and workloads in the guest's build root, each in a sandbox.

The suite's own gcc and the kernel's own headers do the work, so a module is
built by the compiler that built the guest kernel. Every job runs in a
throwaway layer over the read-only root (harness.sandbox), as an unprivileged
user, with only its own directory writable: what a Makefile writes anywhere
else is discarded, and the cached root stays exactly as it was published.

Sources are copied into a host scratch directory (the user's tree is never
written); each job sees its copy at /build/<name>, where `make` runs with
PWD set, as it runs on the author's machine. Products are copied out at once.

Every job goes through the artifact cache (harness.artifacts): its key is
made from the copies it would compile (so exactly what the compiler would
see), its command and the root's identity; a job whose key is cached is not
run, its product is copied from the cache and its log says so.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .. import artifacts, sandbox
from ..results import WorkloadResult
from . import multicall, sparse
from ..errors import BuildError, Interrupted
from ..plan import ExternalDriver
from ..debug_kernel import KernelBuild
from ..rootfs import BuildRoot

BUILD_DIR = "/build"
INCLUDE_DIR = "/build/include"
BESIDE_DIR = "/build/beside"   # the headers beside a workload
CFLAGS = ["-O2", "-Wall", "-Werror"]   # every workload's, and the program's dispatcher's
# What a workload's `#include "x.h"` can name next to it: copied with the source.
HEADER_SUFFIXES = (".h", ".inc", ".def")
HEADER_DEPTH = 3   # levels of subdirectories below the workload searched for them
HEADER_FILES = 1000   # then no deeper: a workload in $HOME must not copy a kernel tree
# Build products of someone else's tree: never copied in, so make starts clean.
STALE_PRODUCTS = ("*.ko", "*.o", "*.mod", "*.mod.c", ".*.cmd", "modules.order",
                  "Module.symvers")


@dataclass(frozen=True)
class Compile:
    """One sandboxed job and its one product."""

    what: str                       # for people: "workload pattern"
    label: str                      # in its cache entry's name: "workload-pattern"
    argv: list[str]
    cwd: str                        # inside the sandbox
    binds: list[sandbox.Bind]       # writable ones: the job's own copies, written by it
    product: Callable[[], Path]     # the product in the job's directory, once built
    mode: int = 0o644               # of the product's copy in the run's build directory
    hint: str = ""
    # More of the key: what the job's directory gets only if it runs (a
    # program's objects, by their own keys), and what puts it there.
    inputs: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class _CJob:
    """What compiling one C source as a workload needs (Builder._c_job)."""

    work: Path                      # the job's directory, made by `prepare`
    binds: list[sandbox.Bind]       # the job's directory first
    paths: list[str]                # gcc's include options for the other binds
    inputs: dict[str, str]          # the job directory's digest, from the source as read
    prepare: Callable[[], None]     # writes the job's directory


class Builder:
    """`with Builder(root, cancel, timeout, store) as b:` builds against
    `root`, through the artifact cache `store`; its scratch goes at exit."""

    def __init__(self, root: BuildRoot, cancel: threading.Event | None,
                 timeout: float, store: artifacts.Store,
                 verify_root: Callable[[], None] = lambda: None,
                 kernel: KernelBuild | None = None) -> None:
        """`timeout`: seconds per job, already scaled (session.Timeouts.build);
        `verify_root` is called before the first compile; modules are built
        for `kernel` (a debug kernel, its tree bound where `uname -r` leads)
        or else for the root's own."""
        self.root = root
        self.verify_root = verify_root
        self.identity = artifacts.RootIdentity.of(root, kernel)
        self._kernel_binds = [] if kernel is None else [
            sandbox.Bind(str(kernel.headers), self.kdir)]
        # Kbuild runs sparse on every module source where the root has it.
        self._check_args = sparse.MAKE_ARGS if sparse.available(root.tree) else []
        self.static: dict[Path, WorkloadResult] = {}    # module product -> harness:sparse
        self.cancel = cancel
        self.timeout = timeout
        self.store = store
        self.reused = 0                 # jobs whose product came from the cache
        self.compiled = 0               # jobs that ran
        self.scratch: Path | None = None
        self._includes: dict[Path, sandbox.Bind] = {}   # host dir -> its read-only copy
        self._beside: dict[Path, sandbox.Bind] = {}     # a workload's dir -> its headers' copy
        self._digests: dict[str, str] = {}              # a read-only copy -> its tree_digest

    def __enter__(self) -> Builder:
        self.scratch = Path(tempfile.mkdtemp(prefix="mmap-harness-build-"))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def kdir(self) -> str:
        return f"/lib/modules/{self.identity.kernel_release}/build"

    def _workdir(self, name: str) -> Path:
        """A new scratch directory, handed to the build user when a job runs."""
        assert self.scratch is not None
        work = self.scratch / name
        work.mkdir()
        return work

    def _key(self, c: Compile) -> artifacts.Key:
        dirs = {b.inside: c.inputs.get(b.inside) or self._digest(b) for b in c.binds}
        return artifacts.make_key(self.identity, c.label, c.what, c.argv, c.cwd,
                                  {**dirs, **c.inputs})

    def _make(self, c: Compile, out_dir: Path, log: Path,
              key: artifacts.Key | None = None) -> Path:
        """The product of `c` in `out_dir`: from the cache, or built (and
        cached) now. `log` gets the compiler's output, or where it came from."""
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted(f"the build stopped before {c.what}")
        key = key or self._key(c)
        got = self.store.fetch(key, lambda: self._compile(c, log), out_dir, c.mode)
        if got.reused:
            self.reused += 1
            _write_log(log, f"reused from the cache, nothing compiled: {got.entry}\n"
                            f"(key {key.digest})\n"
                            f"--- the log of the build that made it ---\n{got.log}")
        return got.product

    def _digest(self, bind: sandbox.Bind) -> str:
        """A bind's contents; a read-only one is hashed once per Builder."""
        if bind.writable:
            return artifacts.tree_digest(Path(bind.host))
        if bind.host not in self._digests:
            self._digests[bind.host] = artifacts.tree_digest(Path(bind.host))
        return self._digests[bind.host]

    def _compile(self, c: Compile, log: Path) -> artifacts.Built:
        c.prepare()
        self.verify_root()
        self.compiled += 1
        for b in c.binds:
            if b.writable:
                sandbox.hand_over(b.host)
        job = sandbox.Job(str(self.root.tree), c.argv, c.cwd, [*c.binds, *self._kernel_binds],
                          kernel_release=self.identity.kernel_release,
                          linux32=self.root.arch == "i386")
        result = sandbox.run(job, self.timeout, self.cancel)
        text = f"$ cd {c.cwd} && {' '.join(c.argv)}\n{result.stdout}"
        _write_log(log, text)
        if result.returncode != 0:
            raise BuildError(c.what, result.stdout, str(log), c.hint)
        return artifacts.Built(c.product(), text)

    def module(self, src: Path, name: str, out_dir: Path, log: Path) -> Path:
        """Build the Kbuild tree `src` into `<out_dir>/<name>.ko`."""
        work = self._workdir(f"module-{name}")
        shutil.copytree(src, work, dirs_exist_ok=True)
        inside = f"{BUILD_DIR}/{name}"
        return self._checked(self._make(Compile(
            f"module {name}", f"module-{name}",
            ["make", "-C", self.kdir, f"M={inside}", *self._check_args, "modules"], inside,
            [sandbox.Bind(str(work), inside, writable=True)],
            lambda: work / f"{name}.ko"), out_dir, log), log, inside)

    def _checked(self, product: Path, log: Path, module_dir: str) -> Path:
        """Keep the static checks' verdict on `product`, read from its build log."""
        if self._check_args:
            self.static[product] = sparse.verdict(log.read_text(errors="replace"), module_dir)
        return product

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
        mount = f"{BUILD_DIR}/{tree.name}"
        inside = posixpath.join(mount, src.relative_to(tree).as_posix())
        here = work / src.relative_to(tree)
        if any((here / f).is_file() for f in ("Makefile", "makefile", "GNUmakefile")):
            argv = ["make", f"KERNEL_SRC={self.kdir}", f"KDIR={self.kdir}",
                    f"KERNELDIR={self.kdir}", *self._check_args, *driver.make_args]
        else:
            argv = ["make", "-C", self.kdir, f"M={inside}", *self._check_args, "modules",
                    *driver.make_args]
        hint = "" if driver.source_tree else (
            "only its own directory was copied: if its Makefile reaches outside it "
            "(e.g. $(PWD)/../include), give the tree with --source-tree DIR")
        what = f"the module in {src}"
        return self._checked(self._make(Compile(
            what, f"external-{src.name}", argv, inside,
            [sandbox.Bind(str(work), mount, writable=True)],
            lambda: _one_module(here, what, log), hint=hint), out_dir, log), log, mount)

    def _include(self, d: Path) -> sandbox.Bind:
        """A read-only copy of header directory `d`, made once per Builder."""
        if d not in self._includes:
            copy = self._workdir(f"include-{len(self._includes)}")
            shutil.copytree(d, copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.c", *STALE_PRODUCTS))
            inside = f"{INCLUDE_DIR}/{len(self._includes)}"
            self._includes[d] = sandbox.Bind(str(copy), inside)
        return self._includes[d]

    def _headers_beside(self, d: Path) -> sandbox.Bind:
        """A read-only copy of the headers in workload directory `d` (see
        _copy_headers), made once per Builder: 26 workloads of one directory
        share it rather than each copying and hashing the same headers."""
        if d not in self._beside:
            copy = self._workdir(f"beside-{len(self._beside)}")
            _copy_headers(d, copy)
            self._beside[d] = sandbox.Bind(str(copy), f"{BESIDE_DIR}/{len(self._beside)}")
        return self._beside[d]

    def workload(self, source: Path, out_dir: Path, log: Path, m32: bool = False,
                 include_dirs: list[Path] | None = None,
                 extra_flags: Sequence[str] = ()) -> Path:
        """Compile one C workload statically (with -m32 for compat processes).

        The headers of its own directory come first for a quoted include
        (-iquote, searched right after the source's own directory), so
        `#include "mydrv.h"` finds what its author put next to it; then
        `include_dirs` (a driver's directory, the harness's headers).
        `extra_flags` come after the harness's own (a later -O wins).
        """
        name = source.stem + ("-m32" if m32 else "")
        j = self._c_job(name, "workload", source, m32, include_dirs)
        return self._make(Compile(
            f"workload {name}", f"workload-{name}",
            ["gcc", *_arch(m32), "-static", *CFLAGS, *extra_flags, *j.paths, "-o", name,
             source.name],
            j.binds[0].inside, j.binds, lambda: j.work / name, mode=0o755,
            inputs=j.inputs, prepare=j.prepare), out_dir, log)

    def _c_job(self, name: str, kind: str, source: Path, m32: bool,
               include_dirs: list[Path] | None) -> _CJob:
        """A job compiling `source` as workload `name`: its directory (the
        first bind, then the headers), gcc's include options for them.

        The source is read once and keyed as read; its directory is written
        only if the job runs: a warm build looks up keys and compiles nothing."""
        assert self.scratch is not None
        data, work = source.read_bytes(), self.scratch / f"{kind}-{name}"
        beside = self._headers_beside(source.parent)
        includes = [self._include(d) for d in include_dirs or []]
        own = sandbox.Bind(str(work), f"{BUILD_DIR}/{name}", writable=True)

        def write_source() -> None:
            work.mkdir()
            (work / source.name).write_bytes(data)
        return _CJob(work, [own, beside, *includes],
                     [f"-iquote{beside.inside}", *(f"-I{b.inside}" for b in includes)],
                     {own.inside: artifacts.file_digest(source.name, data)}, write_source)

    def program(self, workloads: Sequence[tuple[str, Path]], out_dir: Path, logs: Path,
                m32: bool = False, include_dirs: list[Path] | None = None) -> Path:
        """The harness's own workloads ((name, source) pairs) as one static
        program in `out_dir` that runs the one named by argv[0] (see
        harness.linux.multicall), logged in `logs`/<program>.log.

        Each workload is an object of its own, logged in `logs`/<name>.log
        when it is compiled. The program's key holds the objects' keys (a key
        names one product for good), so a warm build finds the program
        without fetching a single object; only a new program fetches or
        compiles them, into its own directory, and links."""
        names = [name for name, _ in workloads]
        program = multicall.program_name(names)
        work = self._workdir(f"program-{program}")
        (work / "dispatch.c").write_text(multicall.dispatch_source(names))
        objects = [(self._object(name, source, m32, include_dirs), logs / f"{name}.log")
                   for name, source in workloads]
        keys = [self._key(c) for c, _ in objects]

        def fetch_objects() -> None:
            for (c, log), key in zip(objects, keys):
                self._make(c, work, log, key)
        inside = f"{BUILD_DIR}/{program}"
        return self._make(Compile(
            f"the program of workloads {', '.join(names)}", f"program-{program}",
            ["gcc", *_arch(m32), "-static", *CFLAGS, "-o", program, "dispatch.c",
             *(f"{name}.o" for name in names)],
            inside, [sandbox.Bind(str(work), inside, writable=True)],
            lambda: work / program, mode=0o755,
            inputs={"objects": " ".join(k.digest for k in keys)}, prepare=fetch_objects),
            out_dir, logs / f"{program}.log")

    def _object(self, name: str, source: Path, m32: bool,
                include_dirs: list[Path] | None) -> Compile:
        """The job that compiles workload `name` to `name`.o, its main()
        renamed to its entry symbol and every other global symbol made local."""
        j = self._c_job(name, "object", source, m32, include_dirs)
        obj, entry = f"{name}.o", multicall.entry_symbol(name)
        compile_ = ["gcc", *_arch(m32), *CFLAGS, *j.paths, "-c", "-o", obj, source.name]
        # Names with two underscores are the compiler's (i386's __x86.get_pc_thunk.*,
        # which the C library's objects share): they stay global.
        rename = ["objcopy", f"--redefine-sym=main={entry}", "--wildcard",
                  f"--keep-global-symbol={entry}", "--keep-global-symbol=__*", obj]
        return Compile(f"workload {name}", f"object-{name}",
                       ["sh", "-c", f"{shlex.join(compile_)} && {shlex.join(rename)}"],
                       j.binds[0].inside, j.binds, lambda: j.work / obj,
                       inputs=j.inputs, prepare=j.prepare)


def _arch(m32: bool) -> list[str]:
    return ["-m32"] if m32 else []


def _copy_headers(src: Path, dst: Path) -> None:
    """The headers under `src`, to HEADER_DEPTH levels of subdirectories
    (`#include "sub/x.h"`), to the same places under `dst`; once HEADER_FILES
    are found no further directory is entered. Hidden directories (.git) are
    skipped, and so is what vanishes meanwhile: a workload may sit in a busy
    directory such as /tmp."""
    found = 0
    for top, dirs, files in os.walk(src):
        if found >= HEADER_FILES:
            break
        here = Path(top)
        depth = len(here.relative_to(src).parts)
        headers = [f for f in files if Path(f).suffix in HEADER_SUFFIXES]
        found += len(headers)
        dirs[:] = [] if depth >= HEADER_DEPTH else sorted(
            d for d in dirs if not d.startswith("."))
        for f in headers:
            target = dst / (here / f).relative_to(src)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(here / f, target)
            except OSError:
                continue


def _one_module(here: Path, what: str, log: Path) -> Path:
    """The one .ko a module build made under `here`."""
    built = sorted(here.rglob("*.ko"))
    if len(built) != 1:
        names = ", ".join(p.name for p in built) or "none"
        raise BuildError(what, f"expected the build to produce one .ko, found: {names}",
                         str(log))
    return built[0]


def _write_log(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
