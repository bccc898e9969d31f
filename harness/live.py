"""A guest kept running while someone works with it: the pytest plugin's
`guest` fixture, `mmap-harness shell` and `mmap-harness exec`.

    with LiveGuest(definition, LiveOptions(cache_dir), workdir, Progress()) as live:
        mod = live.load_module("mmap_remap")            # build, upload, insmod
        run = live.run_c(Path("check.c"), mod.device)   # build, upload, run
        assert run.exit_status == 0 and run.json["bad"] == 0
        verdicts = mod.unload()                         # rmmod, then the harness's checks
        live.reboot()                                   # after a kernel crash

The same stages as `run` (session.py), one call each and in the same
places: the image stays leased while the guest lives, modules and programs
are built by the family (Linux: sandboxed in the build root), and what was
built is reused until the guest reboots and must be installed again.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from . import checks, drivers, plan, workloads
from .cache import Cache
from .errors import BootError, ConfigError, DriverError, GuestDied
from .family import Artifacts, BuildJob, KernelFamily, KernelOps, family_of
from .guest import Guest
from .guests import Flavour, GuestDefinition
from .results import WorkloadResult
from .progress import Progress
from .session import BOOT_ATTEMPTS, DEBUG_KERNEL_ARGS, Timeouts
from .ssh import GuestSSH

REMOTE_DIR = workloads.REMOTE_DIR


@dataclass(frozen=True)
class LiveOptions:
    cache_dir: Path
    flavour: Flavour = Flavour.TINY
    accel: str = "auto"
    # As `run` boots by default: misuse of memory panics instead of passing by luck.
    kernel_args: tuple[str, ...] = tuple(DEBUG_KERNEL_ARGS)
    timeouts: Timeouts = field(default_factory=Timeouts)
    cold_boot: bool = False     # never start from a snapshot, nor save one
    kernel: str = "stock"       # or "debug" (harness.debug_kernel)


@dataclass(frozen=True)
class ProgramRun:
    """What a program run in the guest did: its status, output and the last
    JSON object it printed on a line of its own (None if it printed none)."""

    argv: list[str]
    exit_status: int      # -1: killed by a signal
    stdout: str
    stderr: str
    json: dict | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Module:
    """A module loaded in a LiveGuest; `unload()` gives the harness's verdicts."""

    def __init__(self, live: LiveGuest, plan_: plan.DriverPlan, name: str, params: list[str],
                 source: Path, free_before_kib: int, mark: str) -> None:
        self.live, self.plan = live, plan_
        self.name = name                  # the kernel's name for it (lsmod, /sys/module)
        self.params = params
        self.source = source              # rendered source dir, or the driver's own dir
        self.device = plan_.device
        self.loaded = True
        self.boot = live.boots
        self._free_before = free_before_kib
        self._harness_before = live.harness_kib()
        self._mark = mark

    def __repr__(self) -> str:
        return f"<Module {self.name} {'loaded' if self.loaded else 'unloaded'} ({self.source})>"

    def counters(self) -> WorkloadResult:
        """No page held beyond the driver's own, no mapping left (`harness:counters`)."""
        return self.live.ops().counters_settled(self.name)

    def busy_unload_refused(self) -> WorkloadResult:
        """Unloading fails while a process maps the device (`harness:rmmod-busy`)."""
        if self.device is None:
            raise ConfigError(f"{self.name}: the busy-unload check needs its device",
                              hint="load it with device='/dev/NAME'")
        return self.live.ops().unload_refused_while_mapped(
            f"{REMOTE_DIR}/{plan.HOLDER}", self.device, self.name)

    def unload(self) -> list[WorkloadResult]:
        """Unload, then the checks `run` makes: the kernel log clean since the
        load, the driver's unload line (template drivers) and free memory back.
        DriverError if it will not unload."""
        if not self.loaded:
            raise DriverError(f"{self.name} is not loaded")
        self.loaded = False
        if self.live.boots != self.boot:   # the guest rebooted under it: nothing to unload
            return []
        ops = self.live.ops()
        scope = ops.leak_scope(self.name)
        error = ops.unload(self.name, self.live.options.timeouts.command_s)
        if error:
            raise DriverError(f"{self.name} would not unload: {error}")
        taken = self.live.harness_kib() - self._harness_before   # run_c's uploads
        # kmemleak's objects are quoted in its row's message: that is the verdict here
        return [row for row, _leaked in checks.after_unload(
            ops, self.name, self._mark, self.plan.spec is not None,
            self._free_before - taken, scope)]


class LiveGuest:
    """One guest of `definition`, booted on enter and reaped on exit;
    `reboot()` replaces a crashed one. Its files go under `workdir`."""

    def __init__(self, definition: GuestDefinition, options: LiveOptions, workdir: Path,
                 progress: Progress) -> None:
        self.definition = definition
        self.options = options
        self.dir = workdir
        self.progress = progress
        self.say = progress.say
        self.family: KernelFamily = family_of(definition.family)
        self.image: Any = None
        self.guest: Guest | None = None
        self.ssh: GuestSSH | None = None
        self.accel = ""
        self.accel_reason = ""
        self.boots = 0
        self._held = ExitStack()
        self._machine_dir: Path | None = None
        self._built: dict[str, tuple[Artifacts, int]] = {}   # key -> (artifacts, boot installed)
        self._modules: list[Module] = []
        self._harness_kib = (0, 0)      # (boot, KiB): see _metered

    # --- the guest ---

    def __enter__(self) -> LiveGuest:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.image = self._held.enter_context(self.family.use_image(
                self.definition, self.options.flavour, Cache(self.options.cache_dir),
                self.progress, self.options.kernel, self.options.timeouts.scale))
            choice = self.family.choose_accel(self.options.accel, self.image,
                                              self.options.cache_dir)
            self.accel, self.accel_reason = choice.accel, choice.reason
            self._boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Quit QEMU (always reaped) and give the image's leases back."""
        try:
            self._stop()
        finally:
            self._held.close()

    def _stop(self) -> None:
        self.ssh = None
        try:
            if self.guest is not None:
                guest, self.guest = self.guest, None
                guest.stop()
        finally:
            if self._machine_dir is not None:
                shutil.rmtree(self._machine_dir, ignore_errors=True)
                self._machine_dir = None

    def _boot(self) -> None:
        """Boot, with one more try when the console falls silent (as `run`)."""
        t, name = self.options.timeouts, self.definition.name
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            self.boots += 1
            boot_dir = self.dir / f"boot{self.boots}"
            boot_dir.mkdir(parents=True, exist_ok=True)
            # QMP's socket path must stay short: not under a deep test directory.
            self._machine_dir = Path(tempfile.mkdtemp(prefix="mmap-harness-qemu-"))
            self.say("boot", f"{self.definition.name}: {self.options.flavour.value} guest "
                     f"under {self.accel} ({self.accel_reason})")
            snapshots = None if self.options.cold_boot else Cache(self.options.cache_dir)
            self.guest = self.family.guest(self.image, self.accel, self._machine_dir,
                                           boot_dir / "console.log",
                                           list(self.options.kernel_args), t.scale, snapshots,
                                           lambda text: self.say("boot", f"{name}: {text}"))
            try:
                self.guest.__enter__()
                self.ssh = self.guest.wait_ssh(t.boot, t.silence)
            except BootError as e:
                self._stop()
                if e.hung and attempt < BOOT_ATTEMPTS:
                    self.say("boot", f"{self.definition.name}: hung while booting; "
                             "booting once more")
                    continue
                raise
            except BaseException:
                self._stop()
                raise
            self.say("ssh", f"{name}: up after {self.guest.boot_to_ssh_s:.1f}s, "
                     f"{self.guest.start.describe()}")
            return

    def reboot(self) -> None:
        """A fresh boot of the same image (after a crash, or to start clean)."""
        self._stop()
        self._boot()

    def dead_reason(self) -> str | None:
        """Why the guest can no longer be used (a kernel crash, QEMU gone), or None."""
        return self.guest.dead_reason() if self.guest is not None else "the guest is not running"

    def crash_report(self) -> str:
        """The first fatal kernel report on the console, whole, or ''."""
        return self.guest.crash_report() if self.guest is not None else ""

    def console_position(self) -> int:
        return self.guest.machine.console.position() \
            if self.guest is not None and self.guest.machine.console is not None else 0

    def console_since(self, position: int, lines: int = 60) -> str:
        """The last `lines` lines the console printed after `position`."""
        if self.guest is None or self.guest.machine.console is None:
            return ""
        text = self.guest.machine.console.text()[position:]
        return "\n".join(text.splitlines()[-lines:])

    def ops(self) -> KernelOps:
        reason = self.dead_reason()
        if reason or self.ssh is None:
            raise GuestDied(reason or "the guest has no SSH connection")
        return self.family.ops(self.ssh, getattr(self.image, "kernel_config", ""))

    def mark(self, text: str) -> str:
        """Write `text` into the kernel log; returns the line to look for."""
        self.ops().mark(text)
        return f"mmap-harness: {text}"

    def kernel_log_since(self, marker: str) -> str:
        log = self.ops().kernel_log()
        at = log.rfind(marker)
        return log[log.rfind("\n", 0, at) + 1:] if at >= 0 else log

    def run(self, argv: Sequence[str], timeout: float | None = None) -> ProgramRun:
        """Run `argv` in the guest (base seconds, scaled; default: a workload's)."""
        if self.ssh is None:
            raise GuestDied(self.dead_reason() or "the guest is not running")
        r = self.ssh.run(list(argv), timeout=timeout or self.options.timeouts.workload_s)
        return ProgramRun(list(argv), r.exit_status, r.stdout, r.stderr,
                          workloads.parse_metrics(r.stdout), r.seconds)

    # --- building and loading ---

    def _build(self, key: str, plans: list[plan.DriverPlan],
               sources: dict[str, Path]) -> Artifacts:
        """Build once per key; install again after a reboot (an in-guest
        build is lost with the guest and made again)."""
        have = self._built.get(key)
        if have is not None and have[1] == self.boots:
            return have[0]
        if have is not None and not have[0].in_guest:
            art = have[0]
        else:
            out = self.dir / "build" / hashlib.sha256(key.encode()).hexdigest()[:12]
            job = BuildJob(self.image, plans, sources, out, threading.Event(),
                           self.options.timeouts.build,
                           lambda stage, text: self.say(stage, f"{self.definition.name}: {text}"),
                           Cache(self.options.cache_dir))
            ssh = self.ssh
            if ssh is None:
                raise GuestDied(self.dead_reason() or "the guest is not running")
            art = self.family.build(job, lambda: ssh)
        art.install(self.ssh, REMOTE_DIR)
        self._built[key] = (art, self.boots)
        return art

    def _metered(self, key: str, plans: list[plan.DriverPlan],
                 sources: dict[str, Path]) -> Artifacts:
        """_build, and while a module is loaded, the free memory it took (the
        program's file in a tiny guest's RAM root, the SSH server's buffers
        the upload grew) counted as the harness's, not the module's."""
        have = self._built.get(key)
        installed = have is not None and have[1] == self.boots
        if installed or not any(m.loaded and m.boot == self.boots for m in self._modules):
            return self._build(key, plans, sources)
        before = self.ops().free_kib()
        art = self._build(key, plans, sources)
        taken = max(0, before - self.ops().free_kib())
        boot, kib = self._harness_kib
        self._harness_kib = (self.boots, taken + (kib if boot == self.boots else 0))
        return art

    def harness_kib(self) -> int:
        """Free memory the harness's own uploads took in this boot since a
        module was loaded (see _metered)."""
        boot, kib = self._harness_kib
        return kib if boot == self.boots else 0

    def load_module(self, what: str | Path, params: Mapping[str, object] | Sequence[str] = (),
                    device: str | None = None, make_args: Sequence[str] = (),
                    source_tree: Path | None = None) -> Module:
        """Build (in the build root, as `run` does), upload and load a module:
        `what` is a driver spec's name (drivers/specs) or the directory of an
        out-of-tree module with its own Makefile. `params` go to the loader
        ({"pages": 8} or ["pages=8"]); `device` is the node it must create
        (a spec's own device by default). DriverError if it will not load."""
        args = module_params(params)
        if isinstance(what, Path) or "/" in what:
            ext = plan.external_driver(Path(what), args, list(make_args), device, source_tree)
            p = plan.external_plan(ext, [])
            key, sources, source = f"dir:{ext.tree}:{ext.source_dir}:{ext.make_args}", {}, \
                ext.source_dir
        else:
            (spec,) = drivers.find_specs([what])
            if device is not None and device != spec.device:
                raise ConfigError(f"{what}: its device is {spec.device}, not {device}")
            p = plan.DriverPlan(spec.name, spec.device, [], spec=spec)
            source = self.family.render(spec, self.dir / "src", Cache(self.options.cache_dir))
            key, sources = f"spec:{spec.name}", {spec.name: source}
        art = self._metered(key, [p], sources)
        ko = art.modules[p.key]
        name = self.family.module_name(ko)
        ops = self.ops()
        free_before = ops.free_kib()
        mark = self.mark(f"loading {name}")
        error = ops.load(f"{REMOTE_DIR}/{ko.name}", args, self.options.timeouts.command_s)
        if not error and p.device and not ops.has_device(p.device):
            ops.unload(name, self.options.timeouts.command_s)
            error = f"{p.device} did not appear after loading it"
        if error:
            raise DriverError(f"{name}: {error}", hint=f"its kernel log: dmesg in the guest; "
                              f"its source: {source}")
        self.say("load", f"{self.definition.name}: {name} loaded")
        module = Module(self, p, name, args, source, free_before, mark)
        self._modules = [*(m for m in self._modules if m.loaded), module]
        return module

    def run_c(self, source: str | Path, *args: str, timeout: float | None = None) -> ProgramRun:
        """Compile a C program (static, as `run` compiles workloads; headers
        beside it are on the include path) and run it with `args`. `source`
        is a FILE.c or the name of one of the harness's workloads."""
        path = Path(source) if isinstance(source, Path) or source.endswith(".c") \
            else drivers.WORKLOADS_DIR / f"{source}.c"
        (w,) = plan.extra_workloads([path])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        p = plan.DriverPlan(f"program-{w.name}", None, [w])
        self._metered(f"program:{path.resolve()}:{digest}", [p], {})
        return self.run([f"{REMOTE_DIR}/{w.name}", *args], timeout)


def module_params(params: Mapping[str, object] | Sequence[str]) -> list[str]:
    """{"pages": 8} or ["pages=8"] as the loader's NAME=VALUE words."""
    if isinstance(params, Mapping):
        return [f"{k}={v}" for k, v in params.items()]
    if isinstance(params, str):
        raise ConfigError(f"module parameters {params!r}: give a dict or a list of NAME=VALUE")
    return list(params)
