"""Integration tests: real guests under QEMU, real modules, real workloads.

Nothing here is faked: images are built with debootstrap from Debian's
mirror (cached after the first run), kernels boot, modules load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import paramiko
import pytest

from harness import host_clock, kernel_image, keys
from harness.errors import SSHError, SSHTrustError
from harness.guest import Guest
from harness.keys import load_private, load_public
from harness.ssh import GuestSSH

pytestmark = pytest.mark.integration


def run_cli(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def only_run_dir(results: Path) -> Path:
    dirs = [d for d in results.iterdir() if d.is_dir() and not d.is_symlink()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def processes_with(*words: str) -> list[str]:
    """Command lines of the processes whose command line holds every word."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(w in cmdline for w in words):
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def harness_scratch() -> set[str]:
    """The harness's temporary directories (builds, sandbox layers, QEMU)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("mmap-harness-*")}


def qemu_processes(marker: str) -> list[str]:
    return processes_with("qemu-system", marker)


def descendants(pid: int) -> dict[int, str]:
    """The processes under `pid` (children, theirs, ...) and their command lines."""
    parents, cmdlines = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(
                b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in found}
        found.update({p: cmdlines.get(p, "") for p in frontier})
    return found


def test_default_run_end_to_end(tmp_path: Path):
    """The README's run: a 6.1 guest kernel, the module loaded, every workload passing."""
    r = run_cli("run", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = only_run_dir(tmp_path)
    data = json.loads((run_dir / "results.json").read_text())
    assert data["schema"] == 1 and data["status"] == "pass"
    (guest,) = data["guests"]
    assert guest["name"] == "debian-bookworm"
    assert guest["kernel_release"].startswith("6.1.") and "cloud-amd64" in guest["kernel_release"]
    assert guest["kernel_release"] != platform.release()
    assert guest["accel"] in ("tcg", "kvm") and guest["accel_reason"]
    assert guest["boot_attempts"] in (1, 2)   # 2: a silent first boot was retried, once
    drivers = guest["drivers"]
    assert drivers and all(d["loaded"] for d in drivers)
    assert all(w["status"] == "pass" for d in drivers for w in d["workloads"])
    # sparse ran on every template driver (Kbuild C=2) and found nothing
    assert all(d["workloads"][0]["name"] == "harness:sparse" for d in drivers)
    assert all(d["taint"] & 4096 for d in drivers)  # O: an out-of-tree module was loaded
    gdir = run_dir / guest["dir"]
    assert "Linux version 6.1." in (gdir / "console.log").read_text()
    assert "mmap-harness: loading mmap_remap" in (gdir / "dmesg.txt").read_text()
    assert (gdir / "src" / "mmap_remap" / "mmap_remap.c").is_file()
    assert (gdir / "build" / "logs" / "mmap_remap.log").is_file()
    assert (run_dir / "junit.xml").is_file()
    assert "PASS" in r.stdout and "boot-to-SSH" in r.stdout

    again = run_cli("run", "--results", str(tmp_path / "second"))
    assert again.returncode == 0, again.stderr
    second = json.loads((only_run_dir(tmp_path / "second") / "results.json").read_text())
    assert second["guests"][0]["timings"]["image_s"] < 1.0


def test_trixie_reports_its_612_kernel(tmp_path: Path):
    r = run_cli("run", "--guest", "debian-trixie", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((only_run_dir(tmp_path) / "results.json").read_text())
    guest = data["guests"][0]
    assert guest["kernel_release"].startswith("6.12.")
    assert "gcc-14" in guest["kernel_compiler"] and "14." in guest["compiler"]
    # On 6.12 too, every template driver refuses private and executable
    # mappings (the refusals workload; compat processes too where the spec
    # runs them), and fuzz finds no call that should have worked and did not.
    compat = {"mmap_dmabuf", "mmap_umem"}
    assert {d["name"] for d in guest["drivers"]} == compat | {"mmap_fault", "mmap_remap"}
    for driver in guest["drivers"]:
        got = {w["name"]: w["status"] for w in driver["workloads"]}
        wanted = ("refusals", "fuzz") + (("refusals-m32",) if driver["name"] in compat else ())
        for name in wanted:
            assert got.get(name) == "pass", (driver["name"], name, got)


def test_sid_builds_and_passes_every_template_driver_on_the_newest_kernel(tmp_path: Path):
    """Debian unstable: the newest packaged kernel (API breakage shows here first)."""
    r = run_cli("run", "--guest", "debian-sid", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    (guest,) = json.loads((only_run_dir(tmp_path) / "results.json").read_text())["guests"]
    major = int(guest["kernel_release"].split(".")[0])
    assert major >= 6 and not guest["kernel_release"].startswith(("6.1.", "6.12."))
    assert {d["name"] for d in guest["drivers"]} == {"mmap_dmabuf", "mmap_fault", "mmap_remap",
                                                     "mmap_umem"}
    assert all(w["status"] == "pass" for d in guest["drivers"] for w in d["workloads"])


def test_686_pae_has_highmem_and_passes_every_template_driver(tmp_path: Path):
    """32-bit x86: a build root of i386 programs (Kbuild sees i686), one data
    model only, and memory past lowmem: highmem."""
    r = run_cli("run", "--guest", "debian-bookworm-686", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    (guest,) = json.loads((only_run_dir(tmp_path) / "results.json").read_text())["guests"]
    assert guest["kernel_release"].endswith("-686-pae")
    assert {d["name"] for d in guest["drivers"]} == {"mmap_dmabuf", "mmap_fault", "mmap_remap",
                                                     "mmap_umem"}
    rows = {w["name"]: w for d in guest["drivers"] for w in d["workloads"]}
    assert all(w["status"] == "pass" for d in guest["drivers"] for w in d["workloads"])
    assert rows["umem_compat"]["metrics"]["data_models"] == 1
    assert rows["umem_limits"]["metrics"]["pointer_bits"] == 32
    seen = run_cli("exec", "--guest", "debian-bookworm-686", "--", "sh", "-c",
                   "uname -m; sed -n 's/^HighTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo")
    assert seen.returncode == 0, seen.stderr
    machine, high_kib = seen.stdout.split()
    assert machine == "i686" and int(high_kib) > 100 * 1024


@pytest.mark.parametrize("name, outcome", [("debian-bookworm", "pass"),
                                           ("debian-bookworm-686", "kernel-crash")])
def test_page_address_of_a_highmem_page_breaks_only_on_32_bit(name: str, outcome: str,
                                                              tmp_path: Path):
    """A driver that writes its GFP_HIGHUSER pages through page_address()."""
    fixture = Path(__file__).parent / "fixtures" / "highmem_addr"
    r = run_cli("run", "--guest", name, "--driver-dir", str(fixture),
                "--device", "/dev/highmem_addr", "--workload", str(fixture / "highmem_check.c"),
                "--results", str(tmp_path))
    assert r.returncode == (0 if outcome == "pass" else 1), r.stdout[-4000:] + r.stderr[-4000:]
    (g,) = json.loads((only_run_dir(tmp_path) / "results.json").read_text())["guests"]
    (driver,) = g["drivers"]
    rows = {w["name"]: w for w in driver["workloads"]}
    if outcome == "pass":
        assert rows["highmem_check"]["metrics"] == {"bytes": 65536, "bad_bytes": 0}
    else:
        assert rows["load"]["status"] == "kernel-crash"
        assert "NULL pointer dereference" in rows["load"]["message"]
        assert "highmem_addr_init" in rows["load"]["message"]


def test_full_flavour_boots_systemd_from_disk(tmp_path: Path):
    r = run_cli("run", "--flavour", "full", "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = only_run_dir(tmp_path)
    guest = json.loads((run_dir / "results.json").read_text())["guests"][0]
    assert guest["flavour"] == "full" and guest["status"] == "pass"
    assert "systemd" in (run_dir / guest["dir"] / "console.log").read_text()


def test_kernel_is_booted_directly_when_it_has_a_pvh_note(guest_image):
    image = guest_image("debian-bookworm")
    assert image.kernel.name == "vmlinux"
    assert kernel_image.has_pvh_entry(image.kernel.read_bytes())


def test_a_tcg_guest_runs_its_clock_at_the_rate_its_kernel_measures(boot_guest):
    """Told the host's TSC rate at boot, the kernel's own refined calibration
    (against the HPET, a second after its clock started) agrees with it."""
    with boot_guest("debian-bookworm") as guest:
        told = [a for a in guest.machine.spec.kernel_args if a.startswith("tsc_early_khz=")]
        if guest.machine.spec.accel != "tcg" or host_clock.measure_tsc_khz() is None:
            assert not told      # KVM guests and unknowable rates are told nothing
            return
        (arg,) = told
        khz = int(arg.partition("=")[2])
        assert guest.ssh.run(["cat", "/proc/cmdline"], check=True).stdout.split().count(arg) == 1
        refined = None
        for _ in range(100):
            dmesg = guest.ssh.run(["dmesg"], check=True).stdout
            refined = re.search(r"Refined TSC clocksource calibration: ([\d.]+) MHz", dmesg)
            if refined:
                break
            time.sleep(0.1)
        assert refined, "the kernel never refined its TSC calibration:\n" + dmesg[-2000:]
        assert abs(float(refined.group(1)) * 1000 - khz) <= khz / 1000


def test_guest_runs_commands_and_copies_files(boot_guest, tmp_path: Path):
    with boot_guest("debian-bookworm") as guest:
        ssh = guest.ssh
        local = tmp_path / "payload"
        local.write_bytes(os.urandom(100_000))
        ssh.put(local, "/tmp/payload")
        r = ssh.run(["sha256sum", "/tmp/payload"], check=True)
        assert r.stdout.split()[0] == hashlib.sha256(local.read_bytes()).hexdigest()
        ssh.get("/tmp/payload", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == local.read_bytes()
        failing = ssh.run(["sh", "-c", "echo oops >&2; exit 3"])
        assert (failing.exit_status, failing.stderr) == (3, "oops\n")
        # Many files in one tar stream: contents, names and modes as sent.
        sizes = {"empty": 0, "odd": 513, "block": 512, "big": 1_500_000}
        files = []
        for name, size in sizes.items():
            files.append(tmp_path / name)
            files[-1].write_bytes(os.urandom(size))
        ssh.put_all(files, "/tmp/many/dir", 0o751)
        r = ssh.run("cd /tmp/many/dir && for f in *; do stat -c '%n %a %s' $f; "
                    "sha256sum $f; done", check=True)
        for f in files:
            assert f"{f.name} 751 {f.stat().st_size}" in r.stdout
            assert f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}" in r.stdout
        # Links (a program of several workloads): a name that was a file becomes
        # a link, and a link replaced by a file is not written through.
        ssh.put_all([files[1]], "/tmp/many/dir", 0o755, {"empty": "odd", "new": "odd"})
        r = ssh.run("cd /tmp/many/dir && readlink empty && readlink new && ls -a | wc -l",
                    check=True)
        assert r.stdout.split() == ["odd", "odd", "7"]   # ., .. and 5 names: no scratch left
        ssh.put_all([files[0]], "/tmp/many/dir", 0o644)
        r = ssh.run("cd /tmp/many/dir && stat -c '%n %F %s' empty odd", check=True)
        assert r.stdout.splitlines() == ["empty regular empty file 0", "odd regular file 513"]
        with pytest.raises(SSHError, match=r"uploading 1 files to the guest's /proc/x failed.*"
                                           r"exited [12]"):
            ssh.put_all(files[:1], "/proc/x")
        assert ssh.run(["true"]).ok   # the connection outlives a failed upload


def test_a_different_host_key_is_refused(boot_guest, tmp_path: Path):
    with boot_guest("debian-bookworm") as guest:
        port = guest.machine.ssh_port()
        client = load_private(guest.image.client_key)
        stranger = paramiko.Ed25519Key.from_private_key_file(str(guest.image.client_key))
        with pytest.raises(SSHError, match="refusing to connect"):
            GuestSSH.connect(port, stranger, client)  # any key but the guest's own
        pinned = load_public(guest.image.host_key_pub)
        assert GuestSSH.connect(port, pinned, client).run(["true"]).ok


@pytest.mark.parametrize("replaced, refusal", [
    ("host_key_pub", "refusing to connect"),             # another host key answers
    ("client_key", "the guest refused the harness's key"),  # our login is refused
])
def test_a_guest_that_fails_the_key_exchange_is_an_infra_error(replaced, refusal, guest_image,
                                                               tmp_path: Path):
    """Not "the guest did not come up": the kernel booted fine, and the harness
    and the guest do not trust each other. Promptly, not at the boot timeout."""
    image = guest_image("debian-bookworm")
    copy = tmp_path / "image"
    subprocess.run(["cp", "-al", str(image.dir), str(copy)], check=True)
    key = copy / getattr(image, replaced).relative_to(image.dir)
    key.unlink()  # a new file in its place: the cached image keeps its own
    keys.write_keypair(tmp_path / "stranger", "stranger")
    stranger_file = tmp_path / ("stranger.pub" if replaced == "host_key_pub" else "stranger")
    key.write_bytes(stranger_file.read_bytes())
    stranger = dataclasses.replace(image, dir=copy)
    start = time.monotonic()
    with Guest(stranger, "tcg", tmp_path / "work", tmp_path / "console.log") as guest:
        with pytest.raises(SSHTrustError, match=refusal) as refused:
            guest.wait_ssh(120)
    assert refused.value.kind == "infra"
    assert "did not come up" not in str(refused.value)
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_no_qemu_and_images_unchanged(sig, tmp_path: Path,
                                                             guest_image):
    image = guest_image("debian-bookworm")
    before = tree_digest(image.dir)
    scratch_before = harness_scratch()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--results",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    marker = f"mmap-harness-debian-bookworm-{proc.pid}"
    deadline = time.monotonic() + 120
    while not qemu_processes(marker):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "QEMU never started"
        time.sleep(0.1)
    # Into its boot: the kernel has said something (how soon depends on the host's load).
    while not any(p.stat().st_size for p in tmp_path.glob("*/*/console.log")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the guest printed nothing"
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while qemu_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qemu_processes(marker) == []
    assert tree_digest(image.dir) == before
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "QEMU stopped" in err
        assert harness_scratch() == scratch_before   # build, layer and QEMU dirs gone
        data = json.loads((only_run_dir(tmp_path) / "results.json").read_text())
        assert data["status"] == "fail"
        assert data["guests"][0]["error"].startswith("interrupted")
        console = only_run_dir(tmp_path) / "debian-bookworm-tiny" / "console.log"
        assert console.stat().st_size > 0


def test_two_guests_run_at_once_with_jobs(tmp_path: Path):
    """`--jobs 2`: both guests boot and run together, each with its own
    directory and results, in less wall time than their loops add up to."""
    r = run_cli("run", "--guest", "debian-bookworm", "--guest", "debian-trixie", "--jobs", "2",
                "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    data = json.loads((run_dir / "results.json").read_text())
    assert [g["name"] for g in data["guests"]] == ["debian-bookworm", "debian-trixie"]
    for g in data["guests"]:
        assert g["status"] == "pass" and len(g["drivers"]) == 4, g["name"]
        assert (run_dir / g["dir"] / "console.log").stat().st_size > 0
    wall = (datetime.fromisoformat(data["finished"]) -
            datetime.fromisoformat(data["started"])).total_seconds()
    assert wall + 2 < sum(g["timings"]["total_s"] for g in data["guests"])   # they overlapped
    # progress lines from both, each whole
    lines = [x for x in r.stderr.splitlines() if x.startswith("[")]
    assert any("debian-bookworm:" in x for x in lines) and any("debian-trixie:" in x for x in lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupting_parallel_guests_stops_them_all(sig, tmp_path: Path, guest_image):
    """Ctrl-C reaches the run's process, which passes it on to each guest's
    process: every guest still running stops, its QEMU reaped and its
    results saying so, as with one guest. If the run's process is killed,
    the kernel tells its guests' processes, and they stop their QEMUs."""
    for name in ("debian-bookworm", "debian-trixie"):
        guest_image(name)      # built beforehand: the interrupt must land in the boots
    scratch_before = harness_scratch()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--guest",
                             "debian-bookworm", "--guest", "debian-trixie", "--jobs", "2",
                             "--cold-boot", "--results", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        tree = descendants(proc.pid)
        qemus = {p: c for p, c in tree.items() if "qemu-system" in c}
        if all(any(f"mmap-harness-{n}-" in c for c in qemus.values())
               for n in ("debian-bookworm", "debian-trixie")):
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the two QEMUs never ran at once"
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=90)
    deadline = time.monotonic() + 30
    left = [p for p in tree if Path(f"/proc/{p}").exists()]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in tree if Path(f"/proc/{p}").exists()]
    assert left == [], [tree[p] for p in left]   # no QEMU, no guest's process
    if sig == signal.SIGKILL:
        return
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert harness_scratch() == scratch_before   # the jobs', builds' and QEMUs' dirs gone
    data = json.loads((only_run_dir(tmp_path) / "results.json").read_text())
    assert data["status"] == "fail"
    for g in data["guests"]:
        assert g["status"] == "error" and g["error"] == "interrupted: stopped by SIGINT", g
        assert g["error_kind"] == "interrupted"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_image_build_leaves_nothing_half_built(sig, tmp_path: Path):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "images", "build",
                             "--cache-dir", str(cache)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not processes_with("debootstrap", str(cache)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "debootstrap never started"
        time.sleep(0.2)
    time.sleep(3)  # well into the download
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while processes_with("debootstrap", str(cache)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with("debootstrap", str(cache)) == []
    roots = cache / "roots"
    finished = [p for p in roots.iterdir() if not p.name.startswith(".")] if roots.exists() else []
    assert finished == []  # a half-built root never counts as an image
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert not any(p.name.startswith(".tmp-") for p in roots.iterdir())
