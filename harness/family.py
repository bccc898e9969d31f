"""Kernel families behind one small interface, so the pipeline never asks which.

    family = family_of(definition)            # a table from name to implementation
    image = family.use_image(...)             # Linux: debootstrap root and image; illumos:
                                              # the user's disk image and a NoCloud seed
    family.choose_accel(...), family.guest(...)   # how it boots, what its console says
    src = family.render(spec, out_dir)        # the family's templates
    art = family.build(job, ssh)              # Linux: in the build root, while the guest
                                              # boots; illumos: in the guest, once SSH is up
    ops = family.ops(ssh)                     # load, unload, kernel log, counters, checks
    family.patterns                           # what a crash looks like on its console

Each family lives in its own package (harness/linux, harness/illumos) with
its own patterns and nothing of the other's; session.py and driver_run.py
see only this interface. Like syzkaller's per-OS reporters, an unknown
name is an error at lookup, not a crash later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .accel import AccelChoice
    from .cache import Cache
    from .drivers import DriverSpec
    from .guest import Guest
    from .guests import Flavour, GuestDefinition
    from .progress import Progress
    from .plan import DriverPlan
    from .results import WorkloadResult
    from .ssh import GuestSSH
    from .watcher import ReportPattern


@dataclass
class Artifacts:
    """What the build stage made for one guest: host files to upload."""

    modules: dict[str, Path] = field(default_factory=dict)   # plan key -> module file
    # plan key -> the module's static checks (harness:sparse), where they ran
    static: dict[str, WorkloadResult] = field(default_factory=dict)
    workloads: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    in_guest: bool = False      # already in the guest's REMOTE_DIR (built there)
    built: int = 0              # build jobs this stage ran (compiled)
    reused: int = 0             # build jobs whose product came from the artifact cache

    def install(self, ssh: GuestSSH, remote: str) -> None:
        """Upload what was built on the host into the guest's `remote` dir."""
        if self.in_guest:
            return
        files = list(dict.fromkeys([*self.modules.values(), *self.workloads.values()]))
        # A workload inside a program of several (harness.linux.multicall) is a link to it.
        links = {name: f.name for name, f in self.workloads.items() if f.name != name}
        ssh.put_all(files, remote, 0o755, links)


@dataclass(frozen=True)
class BuildJob:
    """Everything a family needs to build one guest's drivers and workloads."""

    image: object                       # the family's image (images.GuestImage for Linux)
    plans: list[DriverPlan]
    sources: dict[str, Path]            # plan key -> rendered source dir
    out: Path                           # <guest dir>/build
    cancel: threading.Event
    timeout: float                      # per build job, already scaled
    say: Callable[[str, str], None]
    cache: Cache                        # where built artifacts are kept (harness.artifacts)

    def done(self, art: Artifacts, start: float, how: str) -> Artifacts:
        """Time `art` from `start` and say what was built, and `how`."""
        art.seconds = time.monotonic() - start
        reused = (f" ({art.reused} of {art.reused + art.built} build jobs reused from the "
                  "cache)" if art.reused else "")
        self.say("build", f"{len(art.modules)} module(s), {len(art.workloads)} workload(s) "
                 f"in {art.seconds:.1f}s{reused} {how}")
        return art


class KernelOps(Protocol):
    """What the pipeline does to a booted guest's kernel, over its SSH."""

    def mark(self, text: str) -> None: ...
    def free_kib(self) -> int: ...
    def load(self, path: str, params: list[str], timeout: float) -> str: ...
    def has_device(self, path: str) -> bool: ...
    def unload(self, module: str, timeout: float) -> str: ...
    def taint(self) -> int: ...
    def kernel_log(self) -> str: ...
    def counters_settled(self, module: str) -> WorkloadResult: ...
    def unload_refused_while_mapped(self, holder: str, device: str,
                                    module: str) -> WorkloadResult: ...
    def leak_scope(self, module: str) -> object | None:
        """Before unload: what `leaks` needs to tell the module's leaks from
        others' (None: this kernel cannot find leaks)."""
        ...
    def leaks(self, scope: object) -> tuple[WorkloadResult, list[str]]:
        """After unload: the `harness:kmemleak` row and each leaked object's report."""
        ...
    def log_clean(self, log: str, since: str) -> WorkloadResult: ...
    def unload_report(self, log: str, module: str) -> WorkloadResult: ...


class KernelFamily(Protocol):
    name: str
    patterns: tuple[ReportPattern, ...]

    def use_image(self, definition: GuestDefinition, flavour: Flavour, cache: Cache,
                  progress: Progress, kernel: str = "stock",
                  timeout_scale: float = 1.0) -> AbstractContextManager[Any]:
        """`kernel`: "stock" (the guest's own) or "debug" (see harness.debug_kernel);
        what is built first gets its base timeouts times `timeout_scale`."""
        ...
    def choose_accel(self, requested: str, image: Any, cache_dir: Path) -> AccelChoice: ...
    def guest(self, image: Any, accel: str, workdir: Path, console_log: Path,
              kernel_args: list[str], timeout_scale: float, snapshots: Cache | None = None,
              say: Callable[[str], None] = lambda _text: None) -> Guest:
        """`snapshots`: the cache a guest may start from a snapshot of (None: cold boot)."""
        ...

    def render(self, spec: DriverSpec, out_dir: Path, cache: Cache | None = None) -> Path:
        """`cache`: where compiled templates are kept between runs."""
        ...
    def build(self, job: BuildJob, ssh: Callable[[], GuestSSH]) -> Artifacts: ...
    def ops(self, ssh: GuestSSH, kernel_config: str = "") -> KernelOps:
        """`kernel_config`: the booted kernel's config, where the family has one."""
        ...
    def module_name(self, module_file: Path) -> str: ...
    def taint_flags(self, taint: int) -> list[str]: ...
    def init_reached_s(self, console: str) -> float:
        """The kernel's own start-to-init seconds, from its console timestamps (0: unseen)."""
        ...


def family_of(name: str) -> KernelFamily:
    """The implementation of family `name` (imported on first use)."""
    if name == "linux":
        from .linux import LINUX
        return LINUX
    if name == "illumos":
        from .illumos.family import ILLUMOS
        return ILLUMOS
    raise ConfigError(f"unknown kernel family {name!r}", hint="families are: linux, illumos")
