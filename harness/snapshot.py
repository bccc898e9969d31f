"""Starting a guest from a snapshot of its own first boot, below the kernel's boot floor.

    first boot (of an image, with these exact QEMU parameters):
        boot --console: "mmap-harness: sshd started"--> stop, migrate to a file, cont --> SSH
    every later boot:
        QEMU -incoming defer --migrate-incoming fd:--> cont --> SSH --> mh_resume --> ready

The state is saved once the guest's sshd has started and before any
connection to it exists, so it holds no TCP connection; slirp does not
migrate its host forwards, so the restoring QEMU's own forward (port 0, read
back over QMP) is the only one. QEMU never opens our files: each side gets
an open descriptor over QMP (`getfd`, a `fd:` migration URI).

A snapshot is one cache entry, `<cache>/snapshots/<image key>-<hash>`:

    state.bin        the migration stream: the guest's RAM and device state
    console.log      what the saved boot printed on its console
    mh_resume        the helper each restore runs first (harness/linux/mh_resume.c)
    meta.json        what it was made from, for people
    integrity.json   sealed when published; every file hashed again before a restore

Its key is everything that shapes the state (`key_parts`): the image's key
and integrity record, the whole QEMU command line (kernel arguments,
accelerator, CPU model, memory, CPUs, machine type, devices), QEMU's version,
the helper's source and RECIPE. Anything changed is another key, so a snapshot is never used for
a guest it was not made from. A damaged one is refused, removed and made
again; a restore that fails falls back to a cold boot, and the guest's
`start` says why.

Every restore of a snapshot wakes with the same clock and the same kernel
random state, so before anything else runs over SSH, mh_resume sets the
guest's clock from the host and credits host random bytes to the kernel's
pool and reseeds its CRNG (RNDADDENTROPY, RNDRESEEDCRNG).

Only a Linux `tiny` guest is snapshotted: the `full` flavour's disk is a
`snapshot=on` overlay, a temporary file the migration stream does not carry,
and a disk-image guest (illumos) boots its own firmware and disk the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import artifacts, integrity
from .cache import Cache
from .console import Console
from .errors import InfraError
from .images import Cleaned, GuestImage
from .linux.build import Builder
from .qemu import Machine, MachineSpec, command_line, qemu_version
from .ssh import GuestSSH

KIND = "snapshots"
# Bump when what a snapshot holds, or how it is made or resumed, changes.
RECIPE = 1
COLD, RESTORED = "cold", "restored"
# The tiny guest's rc prints this once sshd has written its pid file, which it
# does after it binds its socket (guest_images/tiny/rc): saved after it, a
# restore has nothing left to do before it answers.
READY_LINE = "mmap-harness: sshd started"
MIGRATE_S = 60.0            # base seconds for writing or reading a state
RESTORED_SSH_S = 15.0       # base seconds for a restored guest to answer SSH
# No migration bandwidth limit: the state goes to a local file (QEMU's default
# limit, 128 MiB/s, made a save take 0.6 s).
BANDWIDTH = 1 << 40
STATE, CONSOLE, HELPER, META = "state.bin", "console.log", "mh_resume", "meta.json"
HELPER_SOURCE = Path(__file__).resolve().parent / "linux" / "mh_resume.c"
# No libc and no page padding: the helper travels inside its command (~1 KiB).
HELPER_FLAGS = ("-nostdlib", "-Os", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
                "-fno-pie", "-no-pie", "-s", "-Wl,--build-id=none", "-Wl,-z,noseparate-code")
HELPER_REMOTE = "/run/mh_resume"
SEED_BYTES = 64
HELPER_FAILURES = {2: "it refused its arguments", 3: "the clock could not be set",
                   4: "/dev/urandom could not be opened",
                   5: "the kernel refused the entropy (RNDADDENTROPY)",
                   6: "the kernel refused to reseed (RNDRESEEDCRNG)"}
FD_NAME = "mmap-harness-state"


@dataclass(frozen=True)
class Start:
    """How a guest started, as results.json says it: `how` is COLD or
    RESTORED, `why` says which snapshot, or why none was used or saved."""

    how: str = COLD
    why: str = ""

    def describe(self) -> str:
        """For a progress line: "restored from snapshot ..." or "cold boot (why)"."""
        if self.how == RESTORED:
            return self.why
        return f"cold boot ({self.why})" if self.why else "cold boot"


@dataclass(frozen=True)
class Plan:
    """What one boot does about snapshots: restore `restore`, save one under
    `key` once it is ready (`save`), or neither; `why` is for the results."""

    cache: Cache | None = None
    key: str = ""
    parts: dict[str, object] = field(default_factory=dict)     # what `key` is made of
    restore: Path | None = None
    save: bool = False
    why: str = ""


def refusal(spec: MachineSpec) -> str | None:
    """Why a machine must never be snapshotted, or None when it may."""
    if spec.boot_disk is not None:
        return ("a disk-image guest boots its own firmware and disk (a snapshot=on "
                "overlay the migration stream does not carry): never snapshotted")
    if spec.disk is not None:
        return ("the full flavour's disk is a snapshot=on overlay the migration stream "
                "does not carry: never snapshotted")
    return None


def key_parts(image: GuestImage, spec: MachineSpec) -> dict[str, object]:
    """Everything that shapes a saved state. The command line is taken with
    the machine's name and monitor socket made constant: they differ per run
    and shape nothing the guest sees."""
    argv = command_line(dataclasses.replace(spec, name="guest"), Path("qmp.sock"))
    return {"recipe": RECIPE, "image": image.dir.name,
            "image_integrity": integrity.sha256_file(image.dir / integrity.NAME),
            "kernel_args": " ".join(spec.kernel_args), "accel": spec.accel,
            "cpu_model": spec.cpu_model, "memory_mib": spec.memory_mib, "cpus": spec.cpus,
            "machine": spec.machine, "qemu": qemu_version(), "argv": argv,
            "helper": integrity.sha256_file(HELPER_SOURCE)}


def snapshot_key(parts: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return f"{parts['image']}-{digest[:16]}"


def plan(image: object, spec: MachineSpec, cache: Cache | None,
         say: Callable[[str], None]) -> Plan:
    """Restore the snapshot made for exactly this guest if there is a sound
    one; otherwise save one on this boot when that is safe. A damaged
    snapshot is refused (and removed, unless another harness is using it)."""
    if cache is None:
        return Plan(why="snapshots off (--cold-boot)")
    refused = refusal(spec)
    if refused is not None or not isinstance(image, GuestImage):
        return Plan(why=refused or "not a Linux image: never snapshotted")
    parts = key_parts(image, spec)
    key = snapshot_key(parts)
    entry = cache.path(KIND, key)
    if not entry.is_dir():
        return Plan(cache, key, parts, save=True, why="no snapshot of this guest yet")
    with cache.lease(KIND, key):
        problems = integrity.verify(entry, cache.memo(entry))
    if not problems:
        return Plan(cache, key, parts, restore=entry, why=f"restored from snapshot {key}")
    why = (f"snapshot {key} refused: damaged ({len(problems)} problem"
           f"{'s' if len(problems) > 1 else ''}: {problems[0]})")
    removed = cache.remove(entry)
    say(f"{why}; {'booting cold and saving it again' if removed else 'booting cold'}")
    return Plan(cache, key, parts, save=removed, why=why)


def discard(p: Plan) -> Plan:
    """After a failed restore: the snapshot removed (unless another harness is
    using it), and this boot to save a new one in its place if it was."""
    assert p.cache is not None and p.restore is not None
    removed = p.cache.remove(p.restore)
    return dataclasses.replace(p, restore=None, save=removed)


def wait_ready(console: Console, timeout: float, keep_waiting: Callable[[], bool]) -> bool:
    """Whether the console said READY_LINE before `timeout` or before
    `keep_waiting` said to stop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and keep_waiting():
        if console.wait_for(READY_LINE, 0.2):
            return True
    return False


def save(machine: Machine, image: GuestImage, p: Plan, console: Console) -> float:
    """Save the running guest as the snapshot `p.key`, with what its console
    has said (published atomically, sealed); returns the seconds the guest
    stood still. InfraError (the guest runs on) when QEMU cannot save it or
    another harness is saving it."""
    cache = p.cache
    assert cache is not None
    paused: list[float] = []

    def build(tmp: Path) -> None:
        start = time.monotonic()
        machine.qmp("stop")
        try:
            write_state(machine, tmp / STATE)
            # Stopped, the guest prints nothing more: the console is whole.
            (tmp / CONSOLE).write_text(console.text())
        finally:
            if machine.alive():
                machine.qmp("cont")
        paused.append(time.monotonic() - start)
        _build_helper(image, cache, tmp, cache.kind_dir("logs") / f"{p.key}-{HELPER}.log",
                      machine.timeout_scale)
        meta = {**p.parts, "state_bytes": (tmp / STATE).stat().st_size,
                "paused_s": round(paused[0], 3), "made": time.time()}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o400)
        integrity.seal(tmp, critical=[tmp / STATE], hash_below=1 << 20)

    if cache.build_unless_busy(KIND, p.key, build, machine.spec.memory_mib << 20) is None:
        raise InfraError("another harness is saving the same snapshot")
    if not paused:
        raise InfraError("another harness saved the same snapshot first")
    return paused[0]


def write_state(machine: Machine, path: Path) -> None:
    """Migrate the stopped guest into `path` (a new file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        machine.qmp("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
        machine.pass_fd(fd, FD_NAME)
        machine.qmp("migrate", uri=f"fd:{FD_NAME}")
        _wait_migration(machine, MIGRATE_S * machine.timeout_scale, "saving the guest")
    finally:
        os.close(fd)


def saved_console(entry: Path) -> str:
    """The saved boot's console, then the line that marks where this boot's begins."""
    text = (entry / CONSOLE).read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    return (f"{text}=== mmap-harness: restored from snapshot {entry.name} "
            "(saved console above) ===\n")


def load_state(machine: Machine, p: Plan) -> None:
    """Into a machine started with `incoming`: read the saved state, run it.
    InfraError when QEMU cannot (it exits on a state it cannot load)."""
    assert p.cache is not None and p.restore is not None
    with p.cache.lease(KIND, p.key):
        fd = os.open(p.restore / STATE, os.O_RDONLY | os.O_CLOEXEC)
        try:
            machine.pass_fd(fd, FD_NAME)
            machine.qmp("migrate-incoming", uri=f"fd:{FD_NAME}")
            _wait_migration(machine, MIGRATE_S * machine.timeout_scale, "restoring the guest")
        finally:
            os.close(fd)
    machine.qmp("cont")


def _wait_migration(machine: Machine, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = machine.qmp("query-migrate")
        except InfraError:
            if machine.wait_exit(1.0):   # QEMU ends itself on a state it cannot load
                raise InfraError(f"QEMU exited while {what}: {_qemu_said(machine)}") from None
            raise
        info = status if isinstance(status, dict) else {}
        state = info.get("status", "")
        if state == "completed":
            return
        if state in ("failed", "cancelled"):
            raise InfraError(f"{what} failed: {info.get('error-desc', state)}")
        if time.monotonic() > deadline:
            raise InfraError(f"{what} took more than {timeout:.0f}s")
        time.sleep(0.005)


def _qemu_said(machine: Machine) -> str:
    """QEMU's own last message on the console (its stderr), or what is there."""
    tail = machine.console.tail(5).splitlines() if machine.console is not None else []
    said = [line for line in tail if line.startswith("qemu-system")]
    return (said or tail or ["no message"])[-1].strip()


def resume(ssh: GuestSSH, entry: Path) -> None:
    """The first command of a restored guest: the host's clock and fresh
    random state (see mh_resume.c). InfraError when it fails: a restored
    guest is never used unreseeded."""
    helper = base64.b64encode((entry / HELPER).read_bytes()).decode()
    now = time.time_ns()
    # One command, as few processes as may be: the helper removes itself.
    r = ssh.run(f"echo {helper} | base64 -d > {HELPER_REMOTE} && chmod 700 {HELPER_REMOTE} "
                f"&& exec {HELPER_REMOTE} {now // 10**9}.{now % 10**9:09d} "
                f"{secrets.token_hex(SEED_BYTES)}", timeout=30)
    if not r.ok:
        why = HELPER_FAILURES.get(r.exit_status, f"exit {r.exit_status}: {r.stderr.strip()}")
        raise InfraError(f"the restored guest could not be resumed: {why}")


def _build_helper(image: GuestImage, cache: Cache, out: Path, log: Path,
                  timeout_scale: float) -> None:
    """mh_resume into `out`, compiled in the image's build root (sandboxed, as
    workloads are, and kept in the artifact cache like them)."""
    store = artifacts.Store(cache, lambda text: None)
    with Builder(image.root, None, 120 * timeout_scale, store, image.verify_root,
                 image.kernel_build) as b:
        b.workload(HELPER_SOURCE, out, log, extra_flags=HELPER_FLAGS)


def clean(cache: Cache, guest: str | None = None,
          keep_images: frozenset[str] = frozenset()) -> Cleaned:
    """Remove snapshots (of one guest's images, or all) except those of the
    images in `keep_images` and those in use."""
    return Cleaned(*cache.clean(KIND, guest,
                                lambda name: name.rsplit("-", 1)[0] in keep_images))
