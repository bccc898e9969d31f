"""The Linux kernel family: Kbuild in a Debian build root, insmod/rmmod,
sysfs counters, dmesg, and Linux's console reports (harness/linux/patterns.py).

Modules and workloads are compiled in the guest's build root on the build
thread while the guest boots (each job in a sandbox), so they are ready when
SSH is.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import accel, artifacts, images, results
from .. import checks as verdicts
from ..cache import Cache
from ..drivers import WORKLOADS_DIR, DriverSpec
from ..family import Artifacts, BuildJob
from ..guests import Flavour, GuestDefinition
from ..plan import Workload, workload_includes, workloads_to_build
from ..progress import Progress
from ..render import TEMPLATES, render
from ..results import WorkloadResult
from ..ssh import GuestSSH
from . import boot_args, checks, kmemleak, load
from .build import Builder
from .patterns import LINUX as LINUX_PATTERNS

if TYPE_CHECKING:
    from ..guest import Guest


RMMOD_S = 30.0   # base seconds for the rmmod that must be refused
RUN_INIT = re.compile(r"^\[\s*(\d+\.\d+)\] Run \S+ as init process", re.M)


class LinuxOps:
    """The kernel of one booted Linux guest, over its SSH."""

    def __init__(self, ssh: GuestSSH, kmemleak: bool = False) -> None:
        self.ssh = ssh
        self.kmemleak = kmemleak   # the kernel has kmemleak: leaks are looked for

    def mark(self, text: str) -> None:
        load.mark(self.ssh, text)

    def free_kib(self) -> int:
        return checks.free_kib(self.ssh)

    def load(self, path: str, params: list[str], timeout: float) -> str:
        return load.insmod(self.ssh, path, params, timeout)

    def has_device(self, path: str) -> bool:
        return load.has_char_device(self.ssh, path)

    def unload(self, module: str, timeout: float) -> str:
        return load.rmmod(self.ssh, module, timeout)

    def taint(self) -> int:
        return load.taint(self.ssh)

    def kernel_log(self) -> str:
        return load.dmesg(self.ssh)

    def counters_settled(self, module: str) -> WorkloadResult:
        return checks.counters_settled(self.ssh, module)

    def unload_refused_while_mapped(self, holder: str, device: str,
                                    module: str) -> WorkloadResult:
        return verdicts.unload_refused_while_mapped(
            self.ssh, holder, device, lambda: load.rmmod(self.ssh, module, RMMOD_S), "rmmod")

    def log_clean(self, log: str, since: str) -> WorkloadResult:
        return checks.kernel_log_clean(log, since)

    def unload_report(self, log: str, module: str) -> WorkloadResult:
        return verdicts.unload_report(log, module)

    def leak_scope(self, module: str) -> kmemleak.Scope | None:
        return kmemleak.scope(self.ssh, module) if self.kmemleak else None

    def leaks(self, scope: object) -> tuple[WorkloadResult, list[str]]:
        assert isinstance(scope, kmemleak.Scope)
        return kmemleak.check(self.ssh, scope)


class LinuxFamily:
    name = "linux"
    patterns = tuple(LINUX_PATTERNS)

    def use_image(self, definition: GuestDefinition, flavour: Flavour, cache: Cache,
                  progress: Progress, kernel: str = images.STOCK, timeout_scale: float = 1.0
                  ) -> contextlib.AbstractContextManager[images.GuestImage]:
        """The debootstrap build root and the flavour's image cut from it
        (booting the `kernel` variant), leased."""
        return images.use(definition, flavour, cache, progress, kernel, timeout_scale)

    def choose_accel(self, requested: str, image: images.GuestImage,
                     cache_dir: Path) -> accel.AccelChoice:
        """KVM only if a probe boot of this very kernel reaches /init in time."""
        return accel.choose(requested, image.kernel, image.initrd, cache_dir)

    def guest(self, image: images.GuestImage, accel_name: str, workdir: Path,
              console_log: Path, kernel_args: list[str], timeout_scale: float,
              snapshots: Cache | None = None,
              say: Callable[[str], None] = lambda _text: None) -> Guest:
        """A tiny guest starts from its snapshot when `snapshots` has one.
        Boot options the kernel was built without are left out (boot_args)."""
        from ..guest import Guest  # the Linux guest is harness.guest's own; it imports us
        kept, dropped = boot_args.usable(kernel_args, image.kernel_config)
        if dropped:
            say(f"not passing what {image.kernel_release} would ignore: "
                f"{boot_args.why_dropped(dropped)}")
        return Guest(image, accel_name, workdir, console_log, kept, timeout_scale,
                     snapshots, say)

    def render(self, spec: DriverSpec, out_dir: Path, cache: Cache | None = None) -> Path:
        return render(spec, out_dir, self.name, cache.kind_dir(TEMPLATES) if cache else None)

    def build(self, job: BuildJob, ssh: Callable[[], GuestSSH]) -> Artifacts:
        """Everything, in the build root, without waiting for the guest."""
        start = time.monotonic()
        art = Artifacts()
        logs = job.out / "logs"
        includes = workload_includes(job.plans)
        root = job.image.root  # type: ignore[attr-defined]
        store = artifacts.Store(job.cache, lambda text: job.say("build", text))
        with Builder(root, job.cancel, job.timeout, store,
                     job.image.verify_root,  # type: ignore[attr-defined]
                     job.image.kernel_build) as b:  # type: ignore[attr-defined]
            for p in (p for p in job.plans if p.has_module):
                log = logs / f"{p.key}.log"
                art.modules[p.key] = (
                    b.module(job.sources[p.key], p.key, job.out, log) if p.external is None
                    else b.external_module(p.external, job.out / "external", log))
            art.static = {key: b.static[ko] for key, ko in art.modules.items()
                          if ko in b.static}
            own, others = _programs(workloads_to_build(job.plans))
            for m32, group in own.items():
                program = b.program([(w.name, w.source) for w in group], job.out, logs,
                                    m32, includes)
                art.workloads.update((w.name, program) for w in group)
            for w in others:
                art.workloads[w.name] = b.workload(w.source, job.out, logs / f"{w.name}.log",
                                                   w.m32, includes)
            art.built, art.reused = b.compiled, b.reused
        return job.done(art, start, f"with {b.identity.compiler}")

    def ops(self, ssh: GuestSSH, kernel_config: str = "") -> LinuxOps:
        return LinuxOps(ssh, "CONFIG_DEBUG_KMEMLEAK=y" in kernel_config)

    def module_name(self, module_file: Path) -> str:
        return module_file.stem.replace("-", "_")

    def taint_flags(self, taint: int) -> list[str]:
        return results.taint_flags(taint)

    def init_reached_s(self, console: str) -> float:
        """printk's timestamp of "Run /init as init process" (or /sbin/init)."""
        m = RUN_INIT.search(console)
        return float(m.group(1)) if m else 0.0


def _programs(workloads: list[Workload]) -> tuple[dict[bool, list[Workload]], list[Workload]]:
    """The harness's own workloads by data model (-m32 or not), each set of
    more than one linked as one program (harness.linux.multicall); and the
    rest, each a program of its own."""
    own: dict[bool, list[Workload]] = {}
    for w in workloads:
        if w.source.parent == WORKLOADS_DIR:
            own.setdefault(w.m32, []).append(w)
    grouped = {m32: group for m32, group in own.items() if len(group) > 1}
    return grouped, [w for w in workloads if w not in grouped.get(w.m32, [])]


LINUX = LinuxFamily()
__all__ = ["LINUX", "LinuxFamily", "LinuxOps"]
