"""The illumos family behind harness.family's interface: a user's OmniOS disk
image with this run's keys on a NoCloud seed, drivers and workloads built in
the guest by its own gcc, add_drv/rem_drv, counters through MH_IOC_COUNTERS,
the kernel's message buffer, and illumos's console reports.

Written against OmniOS's documented behaviour and illumos's sources; it has
not run against a real illumos kernel in this project's CI (no image can be
had there): see README.md, "illumos guests".
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import checks as verdicts
from ..accel import AccelChoice
from ..cache import Cache
from ..errors import ConfigError
from ..drivers import WORKLOADS_DIR, DriverSpec
from ..family import Artifacts, BuildJob
from ..guest import Guest
from ..guests import Flavour, GuestDefinition, image_path
from ..plan import Workload, workload_includes, workloads_to_build
from ..progress import Progress
from ..qemu import MachineSpec
from ..render import TEMPLATES, render
from ..results import WorkloadResult
from ..ssh import GuestSSH
from ..workloads import REMOTE_DIR
from . import console_login, steps
from .keys import GuestKeys, make_keys
from .machine import machine_spec
from .patterns import PATTERNS, TABLE
from .seed import SeedConfig, write_seed_iso

COUNTERS = "counters"   # the workload that prints MH_IOC_COUNTERS (no sysfs here)
MODUNLOAD_S = 30.0      # base seconds for the modunload that must be refused
# What a driver's run must not leave in the kernel's messages (cmn_err CE_WARN
# prints "WARNING:"; panics and traps are the console watcher's too).
TROUBLE = re.compile(r"WARNING:|panic\[cpu|BAD TRAP|kernel memory allocator")


@dataclass(frozen=True)
class IllumosImage:
    """The user's disk image (never written: snapshot=on) and this run's
    keys and seed, in a private temporary directory that goes with the run."""

    definition: GuestDefinition
    path: Path
    keys: GuestKeys
    seed: Path
    instance_id: str

    @property
    def client_key(self) -> Path:
        return self.keys.client_key

    @property
    def host_key_pub(self) -> Path:
        return self.keys.host_key_pub

    @property
    def compiler(self) -> str:
        assert self.definition.image is not None
        return self.definition.image.compiler

    kernel_compiler = ""    # the image's kernel was built elsewhere; not recorded


@contextlib.contextmanager
def use_image(definition: GuestDefinition, progress: Progress) -> Iterator[IllumosImage]:
    """The image checked, fresh keys made and the seed written for this run."""
    path = image_path(definition)
    with tempfile.TemporaryDirectory(prefix="mmap-harness-illumos-guest-") as tmp:
        keys = make_keys(Path(tmp))
        cfg = SeedConfig.for_guest(definition.name, path, keys)
        seed = write_seed_iso(Path(tmp) / "seed.iso", cfg)
        progress.say("image", f"{definition.name}: {path} with a NoCloud seed for this run")
        yield IllumosImage(definition, path, keys, seed, cfg.instance_id)


class IllumosGuest(Guest):
    """The image booted by its own loader; SSH once the seed (or, failing
    that, a console login) has put this run's keys in place."""

    patterns = TABLE

    def _spec(self, accel: str, kernel_args: list[str]) -> MachineSpec:
        # kernel_args are Linux command-line options: an illumos loader takes none from us.
        return machine_spec(self.image.definition, self.image.seed, accel)

    def _before_ssh(self, timeout: float) -> None:
        assert self.machine.console is not None
        image = self.image.definition.image
        name = self.image.definition.name
        ready = console_login.wait_ready(self.machine.console, self.image.instance_id,
                                         image.boot_timeout_s * self.timeout_scale,
                                         self.dead_reason, name, self.timeout_scale)
        if not ready.seeded:
            console_login.login_and_install(self.machine.console, self.image.keys,
                                            image.root_password, self.dead_reason, name,
                                            self.timeout_scale)


class IllumosOps:
    """The kernel of one booted illumos guest, over its SSH."""

    def __init__(self, ssh: GuestSSH) -> None:
        self.ssh = ssh

    def mark(self, text: str) -> None:
        """No /dev/kmsg: user space cannot write the kernel's message buffer."""

    def free_kib(self) -> int:
        r = self.ssh.run(["sh", "-c", "kstat -p unix:0:system_pages:freemem; pagesize"],
                         timeout=60, check=True)
        words = r.stdout.split()
        return int(words[1]) * int(words[2]) // 1024

    def load(self, path: str, params: list[str], timeout: float) -> str:
        name = Path(path).name
        error = steps.install_driver(self.ssh, name, timeout)
        if not error:
            steps.link_device(self.ssh, name)
        return error

    def has_device(self, path: str) -> bool:
        return self.ssh.run(["test", "-c", path], timeout=30).ok

    def unload(self, module: str, timeout: float) -> str:
        return steps.remove_driver(self.ssh, module, timeout)

    def taint(self) -> int:
        return 0    # illumos keeps no taint state

    def kernel_log(self) -> str:
        return steps.kernel_log(self.ssh)

    def counters_settled(self, module: str) -> WorkloadResult:
        start = time.monotonic()
        r = self.ssh.run([f"{REMOTE_DIR}/{COUNTERS}", f"/dev/{module}"], timeout=30)
        found = json.loads(r.stdout) if r.ok else {}
        return verdicts.counters_verdict(found, time.monotonic() - start)

    def unload_refused_while_mapped(self, holder: str, device: str,
                                    module: str) -> WorkloadResult:
        return verdicts.unload_refused_while_mapped(
            self.ssh, holder, device,
            lambda: steps.unload_module(self.ssh, module, MODUNLOAD_S), "modunload")

    def log_clean(self, log: str, since: str) -> WorkloadResult:
        bad = [line for line in log.splitlines() if TROUBLE.search(line)]
        return WorkloadResult("harness:dmesg-clean", "fail" if bad else "pass",
                              {"trouble_lines": len(bad)}, "; ".join(bad[:3]))

    def unload_report(self, log: str, module: str) -> WorkloadResult:
        return verdicts.unload_report(log, module)

    def leak_scope(self, module: str) -> object | None:
        return None     # kmem's ::findleaks needs kmdb: not looked for

    def leaks(self, scope: object) -> tuple[WorkloadResult, list[str]]:
        raise NotImplementedError("no leak scope on illumos")


class IllumosFamily:
    name = "illumos"
    patterns = PATTERNS

    def use_image(self, definition: GuestDefinition, flavour: Flavour, cache: Cache,
                  progress: Progress, kernel: str = "stock", timeout_scale: float = 1.0
                  ) -> contextlib.AbstractContextManager[IllumosImage]:
        """`flavour`, the cache and `timeout_scale` have no meaning for an
        image the user brings (nothing is built); its kernel is the image's own."""
        if kernel != "stock":
            raise ConfigError(f"{definition.name} boots its own image's kernel: there is no "
                              f"{kernel} variant of it to build",
                              hint="--kernel debug is for Debian guests; boot a debug "
                                   "kernel in the image yourself (illumos: `kmdb`, kmem_flags)")
        return use_image(definition, progress)

    def choose_accel(self, requested: str, image: IllumosImage, cache_dir: Path) -> AccelChoice:
        if requested == "kvm":
            return AccelChoice("kvm", "requested with --accel kvm (not probed)")
        return AccelChoice("tcg", "an illumos image boots through its own loader: there is "
                                  "no kernel to probe KVM with; TCG unless --accel kvm")

    def guest(self, image: IllumosImage, accel: str, workdir: Path, console_log: Path,
              kernel_args: list[str], timeout_scale: float, snapshots: Cache | None = None,
              say: Callable[[str], None] = lambda _text: None) -> Guest:
        """Never from a snapshot (harness.snapshot.refusal says why): the
        guest's `start` records that."""
        return IllumosGuest(image, accel, workdir, console_log, kernel_args,  # type: ignore
                            timeout_scale, snapshots, say)

    def render(self, spec: DriverSpec, out_dir: Path, cache: Cache | None = None) -> Path:
        return render(spec, out_dir, self.name, cache.kind_dir(TEMPLATES) if cache else None)

    def build(self, job: BuildJob, ssh: Callable[[], GuestSSH]) -> Artifacts:
        """In the guest, with its own compiler, once SSH is up."""
        if any(p.external for p in job.plans):
            raise ConfigError("--driver-dir runs on Linux guests; an illumos driver of your "
                              "own is checked with `mmap-harness illumos check --driver-dir`")
        guest = ssh()
        start = time.monotonic()
        art = Artifacts(in_guest=True)
        compiler = job.image.compiler  # type: ignore[attr-defined]
        version = steps.compiler_version(guest, compiler)
        for p in (p for p in job.plans if p.has_module):
            steps.upload_driver(guest, job.sources[p.key], p.key)
            steps.build_driver(guest, p.key, compiler, job.timeout)
            art.modules[p.key] = Path(p.key)
        steps.upload(guest, [f for d in workload_includes(job.plans)
                             for f in sorted(d.glob("*.h"))], f"{REMOTE_DIR}/include")
        wanted = [*workloads_to_build(job.plans),
                  Workload(COUNTERS, WORKLOADS_DIR / f"{COUNTERS}.c")]
        files = sorted({w.source for w in wanted})
        uploaded = dict(zip(files, steps.upload(guest, files, f"{REMOTE_DIR}/src")))
        for w in wanted:
            steps.build_workload(guest, compiler, uploaded[w.source], f"{REMOTE_DIR}/{w.name}",
                                 w.m32, [f"{REMOTE_DIR}/include"], job.timeout)
            art.workloads[w.name] = Path(w.name)
        art.built = len(art.modules) + len(art.workloads)
        return job.done(art, start, f"in the guest with {version}")

    def ops(self, ssh: GuestSSH, kernel_config: str = "") -> IllumosOps:
        return IllumosOps(ssh)

    def module_name(self, module_file: Path) -> str:
        return module_file.name

    def taint_flags(self, taint: int) -> list[str]:
        return []

    def init_reached_s(self, console: str) -> float:
        return 0.0   # illumos prints no timestamps on its console


ILLUMOS = IllumosFamily()
