"""The pipeline, one function per stage, read top to bottom:

    definition -> image -> guest (boot, SSH) -> build -> load -> workload -> results

The build runs on a thread while the guest boots: under TCG both take
seconds and the host has two cores.
"""

from __future__ import annotations

import os
import platform
import resource
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import parallel, results, workloads
from .cache import Cache
from .driver_run import DriverRun, Limits
from .errors import (
    BootError,
    ConfigError,
    GuestDied,
    HarnessError,
    HostError,
    Interrupted,
    why_stopped,
)
from .family import Artifacts, BuildJob, family_of
from .guest import Guest
from .guests import Flavour, GuestDefinition
from .plan import DriverPlan
from .progress import Progress
from .qemu import qemu_version
from .results import BuildCounts, GuestResult, RunResult, report_dict, strictly
from .ssh import GuestSSH

# A guest that hangs silently while booting gets one more boot (see _boot_with_one_retry).
BOOT_ATTEMPTS = 2
# Seconds one build job may take (a module's make, a workload's gcc), before --timeout-scale.
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True)
class Timeouts:
    """Base seconds, fit for TCG on a 2-core host; `scale` stretches them all
    (the guest's SSH connection scales the command and workload ones itself)."""

    boot_s: float = 120.0
    command_s: float = 120.0
    workload_s: float = 300.0
    silence_s: float = 60.0     # no console output while booting: hung
    build_s: float = BUILD_TIMEOUT
    scale: float = 1.0

    @property
    def boot(self) -> float:
        return self.boot_s * self.scale

    @property
    def silence(self) -> float:
        return self.silence_s * self.scale

    @property
    def build(self) -> float:
        return self.build_s * self.scale


# Misuse of memory must crash loudly instead of passing by luck.
DEBUG_KERNEL_ARGS = ["slub_debug=FZPU", "page_poison=1", "init_on_free=1",
                     "panic_on_warn=1", "oops=panic"]


@dataclass(frozen=True)
class RunOptions:
    guests: list[GuestDefinition]
    drivers: list[DriverPlan]
    flavour: Flavour = Flavour.TINY
    results_root: Path = Path("results")
    cache_dir: Path = Path("cache")
    accel: str = "auto"
    kernel_args: list[str] = field(default_factory=list)
    debug_boot: bool = True
    fuzz_seed: int = 0          # the fuzz workload's seed, recorded for replay
    fuzz_ops: int = 10000
    timeouts: Timeouts = field(default_factory=Timeouts)
    workload_env: tuple[tuple[str, str], ...] = ()   # more environment for every workload
    # `run --shard`: per guest name, the drivers that guest runs (None: `drivers` everywhere).
    guest_drivers: dict[str, list[DriverPlan]] | None = None
    cold_boot: bool = False     # never start from a snapshot, nor save one (--cold-boot)
    kernel: str = "stock"       # or "debug": the suite's kernel built with its debug options
    strict_static: bool = False  # a static check's finding fails (--strict-sparse), not warns
    jobs: int = 1               # guests run at once (`run --jobs`)

    def drivers_for(self, definition: GuestDefinition) -> list[DriverPlan]:
        if self.guest_drivers is None:
            return self.drivers
        return self.guest_drivers.get(definition.name, [])

    def guest_kernel_args(self) -> list[str]:
        return (DEBUG_KERNEL_ARGS if self.debug_boot else []) + self.kernel_args

    def snapshots(self) -> Cache | None:
        """Where guests start from snapshots (harness/snapshot.py); None: cold boots."""
        return None if self.cold_boot else Cache(self.cache_dir)


def host_info() -> dict:
    return {"hostname": platform.node(), "kernel": platform.release(),
            "python": platform.python_version(), "qemu": qemu_version(),
            "cpus": os.cpu_count()}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def run(opts: RunOptions, progress: Progress) -> tuple[RunResult, Path]:
    """Run every guest; results (even partial ones) are written however it ends."""
    run_id = new_run_id()
    run_dir = opts.results_root / run_id
    run_dir.mkdir(parents=True)
    _point_latest(opts.results_root, run_id)
    result = RunResult(run_id, _now(), host_info(),
                       fuzz={"seed": opts.fuzz_seed, "ops": opts.fuzz_ops})
    progress.say("run", f"{run_id}: results in {run_dir}")
    variant = "" if opts.kernel == "stock" else f"-{opts.kernel}"
    runs = []
    for definition in opts.guests:
        guest = GuestResult(definition.name, opts.flavour.value,
                            f"{definition.name}-{opts.flavour.value}{variant}",
                            kernel_variant=opts.kernel)
        runs.append(GuestRun(opts, definition, run_dir, guest, progress))
    try:
        if opts.jobs > 1 and len(runs) > 1:
            _run_in_parallel(runs, opts.jobs, result, run_dir, progress)
        else:
            for guest_run in runs:   # one after the other: a guest not run is not listed
                result.guests.append(guest_run.result)
                guest_run.run()
                results.write_json(result, run_dir / "results.json")
    finally:
        result.finished = _now()
        result.settle()
        results.write_json(result, run_dir / "results.json")
        results.write_junit(result, run_dir / "junit.xml")
    return result, run_dir


def _run_in_parallel(runs: list[GuestRun], at_once: int, result: RunResult,
                     run_dir: Path, progress: Progress) -> None:
    """Up to `at_once` guests at once, each in a process of its own
    (harness/parallel.py); results.json is rewritten as each ends."""
    result.guests.extend(r.result for r in runs)

    def ended(i: int, guest: GuestResult) -> None:
        runs[i].result = result.guests[i] = guest
        results.write_json(result, run_dir / "results.json")

    jobs = [parallel.GuestJob(type(r), r.opts, r.definition, run_dir, r.result,
                              progress.start, progress.quiet) for r in runs]
    parallel.run_guests(jobs, at_once, runs[0].timeouts.scale, ended)


class GuestRun:
    """One guest through every stage; fills in its GuestResult as it goes."""

    def __init__(self, opts: RunOptions, definition: GuestDefinition, run_dir: Path,
                 result: GuestResult, progress: Progress) -> None:
        self.opts = opts
        self.definition = definition
        self.result = result
        self.dir = run_dir / result.dir
        self.progress = progress
        self.timeouts = opts.timeouts
        self.family = family_of(definition.family)
        self.drivers = opts.drivers_for(definition)

    def say(self, stage: str, message: str) -> None:
        self.progress.say(stage, f"{self.definition.name}: {message}")

    def run(self) -> None:
        g, start, cpu = self.result, time.monotonic(), _own_cpu_s()
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with ExitStack() as held:  # the image's leases, for the whole run
                self._boot_with_one_retry(self._image(held))
        except (KeyboardInterrupt, Interrupted) as e:  # record, then let it end the run
            g.error, g.error_kind = f"interrupted: {why_stopped(e)}", Interrupted.kind
            raise
        except (ConfigError, HostError) as e:  # the same for every guest: stop here
            g.error, g.error_kind = str(e), e.kind
            raise
        except HarnessError as e:
            g.error, g.error_kind = str(e), e.kind
            self.say("error", str(e))
        finally:
            g.timings.total_s = round(time.monotonic() - start, 3)
            g.timings.harness_cpu_s = round(_own_cpu_s() - cpu, 3)
            g.settle()

    def _image(self, held: ExitStack) -> Any:
        """The family's image, held until `held` closes (a Linux image is
        leased with its build root: modules are built there while it runs)."""
        start = time.monotonic()
        cache = Cache(self.opts.cache_dir)
        image = held.enter_context(self.family.use_image(
            self.definition, self.opts.flavour, cache, self.progress, self.opts.kernel,
            self.timeouts.scale))
        self.result.image_start = "cold" if getattr(image, "built", ()) else "warm"
        self.result.compiler = image.compiler
        self.result.kernel_compiler = image.kernel_compiler
        self.result.timings.image_s = round(time.monotonic() - start, 3)
        return image

    def _boot_with_one_retry(self, image: Any) -> None:
        """A guest whose console falls silent while it boots (no report, no
        crash: under TCG an emulator stall as often as a kernel's) is booted
        once more, and the results say so; a second hang is the finding."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            self.result.boot_attempts = attempt
            try:
                self._boot_and_exercise(image)
                return
            except BootError as e:
                if not e.hung or attempt == BOOT_ATTEMPTS:
                    raise
                for name in ("console.log", "registers.txt"):
                    kept = self.dir / name
                    if kept.exists():
                        kept.rename(self.dir / name.replace(".", f".boot{attempt}.", 1))
                self.say("boot", f"hung while booting ({e.message.splitlines()[0]}); "
                         f"booting once more (console.boot{attempt}.log keeps this boot)")

    def _boot_and_exercise(self, image: Any) -> None:
        g = self.result
        choice = self.family.choose_accel(self.opts.accel, image, self.opts.cache_dir)
        g.accel, g.accel_reason = choice.accel, choice.reason
        g.cpu_model = self.definition.qemu.cpu_model
        self.say("boot", f"{self.opts.flavour.value} guest under {choice.accel} ({choice.reason})")
        cache = Cache(self.opts.cache_dir)
        sources = {p.key: self.family.render(p.spec, self.dir / "src", cache)
                   for p in self.drivers if p.spec is not None}
        cancel = threading.Event()
        with tempfile.TemporaryDirectory(prefix="mmap-harness-qemu-") as tmp, \
                ThreadPoolExecutor(1, thread_name_prefix="build") as pool:
            guest = self.family.guest(image, choice.accel, Path(tmp), self.dir / "console.log",
                                      self.opts.guest_kernel_args(), self.timeouts.scale,
                                      self.opts.snapshots(), lambda text: self.say("boot", text))
            try:
                with guest:
                    job = BuildJob(image, self.drivers, sources, self.dir / "build",
                                   cancel, self.timeouts.build, self.say,
                                   cache)
                    up = SSHReady(cancel)
                    built = pool.submit(self.family.build, job, up.wait)

                    def build_failed() -> bool:
                        return built.done() and built.exception() is not None
                    try:
                        ssh = guest.wait_ssh(self.timeouts.boot, self.timeouts.silence,
                                             abandon=build_failed)
                    except BootError:
                        if build_failed():
                            raise built.exception() from None  # the real cause
                        raise
                    up.set(ssh)
                    g.timings.boot_to_ssh_s = round(guest.boot_to_ssh_s, 3)
                    g.timings.kernel_to_init_s = self.family.init_reached_s(guest.console_text())
                    # The first command opens the guest's shell session: on a
                    # systemd guest still starting its services, pam_systemd
                    # registers it with a logind that may still be starting (30 s
                    # were too few on a loaded host): it gets a command's time.
                    g.kernel_release = ssh.run(["uname", "-r"], timeout=self.timeouts.command_s,
                                               check=True).stdout.strip()
                    self.say("ssh", f"up after {guest.boot_to_ssh_s:.1f}s, "
                             f"{guest.start.describe()}, kernel {g.kernel_release}")
                    try:
                        artifacts = built.result()
                        g.timings.build_s = round(artifacts.seconds, 3)
                        g.build = BuildCounts(artifacts.built, artifacts.reused)
                        self._exercise(guest, ssh, artifacts)
                    except GuestDied as e:  # a finding, not a harness error: the rows say it
                        self.say("crash", f"guest stopped: {e}")
                    finally:
                        if guest.dead_reason() is None:
                            self._save_dmesg(ssh)
            finally:
                cancel.set()
                g.start, g.start_reason = guest.start.how, guest.start.why
                if guest.watcher is not None:
                    g.kernel_reports = [report_dict(r) for r in guest.watcher.reports]
                g.timings.shutdown_s = round(guest.shutdown_s, 3)
                self.say("stop", f"QEMU gone after {guest.shutdown_s:.1f}s")

    def _exercise(self, guest: Guest, ssh: GuestSSH, art: Artifacts) -> None:
        art.install(ssh, workloads.REMOTE_DIR)
        env = (("MH_FUZZ_SEED", str(self.opts.fuzz_seed)), ("MH_FUZZ_OPS", str(self.opts.fuzz_ops)),
               *self.opts.workload_env)
        limits = Limits(self.timeouts.command_s, self.timeouts.workload_s, env)
        for plan in self.drivers:
            static = art.static.get(plan.key)
            if static is not None and self.opts.strict_static:
                static = strictly(static)
            run = DriverRun(self.family, guest, ssh, plan, art.modules[plan.key], self.dir,
                            limits, self.result.timings, self.say, static)
            try:
                run.run()
            finally:
                self.result.drivers.append(run.result)

    def _save_dmesg(self, ssh: GuestSSH) -> None:
        try:
            (self.dir / "dmesg.txt").write_text(self.family.ops(ssh).kernel_log())
        except HarnessError as e:  # the guest may be gone; the console log has the rest
            print(f"warning: could not read dmesg: {e}", file=sys.stderr)


class SSHReady:
    """Hands the guest's SSH connection to the build thread once it is up
    (a family that builds in the guest waits here; one that builds on the
    host never asks)."""

    def __init__(self, cancel: threading.Event) -> None:
        self._ssh: GuestSSH | None = None
        self._ready = threading.Event()
        self._cancel = cancel

    def set(self, ssh: GuestSSH) -> None:
        self._ssh = ssh
        self._ready.set()

    def wait(self) -> GuestSSH:
        while not self._ready.wait(0.1):
            if self._cancel.is_set():
                raise Interrupted("the run stopped before the guest's SSH was up")
        assert self._ssh is not None
        return self._ssh


def _own_cpu_s() -> float:
    """CPU seconds of this Python process, all threads; not QEMU, not compilers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _point_latest(root: Path, run_id: str) -> None:
    link = root / "latest"
    tmp = root / f".latest-{run_id}"
    tmp.symlink_to(run_id)
    tmp.replace(link)
