"""Unit tests of pure logic: initramfs pieces, QEMU command line, results, verdicts."""

import io
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import guests, host_clock, parallel, results, session, workloads
from harness.cache import Cache
from harness.errors import HostError
from test_integration import descendants
from harness.initramfs import CpioWriter, load_levels, module_load_order, rng_later
from harness.qemu import DiskImage, MachineSpec, command_line, kernel_firmware

MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko
"""


def test_module_order_puts_dependencies_first():
    order = module_load_order(MODULES_DEP, ["virtio_pci", "virtio_net", "virtio_rng"])
    assert order.index("kernel/drivers/virtio/virtio.ko") < order.index(
        "kernel/drivers/virtio/virtio_pci.ko")
    assert order.index("kernel/net/core/failover.ko") < order.index(
        "kernel/drivers/net/net_failover.ko")
    assert order[-1] == "kernel/drivers/char/hw_random/virtio-rng.ko"
    assert len(order) == len(set(order)) == 7


def test_builtin_modules_need_no_loading():
    builtin = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n"
    order = module_load_order(MODULES_DEP, ["virtio_pci", "virtio_rng"], builtin)
    assert order == ["kernel/drivers/char/hw_random/virtio-rng.ko"]


def test_cpio_is_read_by_gnu_cpio(tmp_path: Path):
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.directory("/etc")
    w.file("/etc/hello", b"hi there\n", 0o600)
    w.symlink("/init", "/usr/bin/busybox")
    w.close()
    archive = tmp_path / "a.cpio"
    archive.write_bytes(buf.getvalue())
    listing = subprocess.run(["cpio", "-itv"], stdin=archive.open("rb"), capture_output=True,
                             text=True, check=True).stdout
    assert "etc/hello" in listing and "-rw-------" in listing
    assert "init -> /usr/bin/busybox" in listing
    assert len(buf.getvalue()) % 4 == 0


def test_qemu_command_line_is_safe_and_complete(tmp_path: Path):
    spec = MachineSpec(name="x", kernel=Path("/k"), initrd=Path("/i"),
                       kernel_args=["console=ttyS0", "panic=-1"], accel="tcg",
                       disk=Path("/d.img"))
    argv = command_line(spec, tmp_path / "qmp.sock")
    joined = " ".join(argv)
    # loopback only, port from the kernel; the guest reaches nothing of the host
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22" in joined
    assert "file=/d.img,format=raw,if=virtio,snapshot=on" in joined  # base image never written
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert "-no-reboot" in argv and f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off" in argv


def test_a_pvh_kernel_boots_through_qboot_and_a_bzimage_through_seabios(tmp_path: Path):
    vmlinux, bzimage = tmp_path / "vmlinux", tmp_path / "vmlinuz"
    vmlinux.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(57))
    bzimage.write_bytes(bytes(0x202) + b"HdrS")
    assert kernel_firmware(vmlinux) == "qboot.rom" and kernel_firmware(bzimage) is None
    spec = MachineSpec(name="x", kernel=vmlinux, initrd=Path("/i"), accel="tcg",
                       firmware=kernel_firmware(vmlinux))
    argv = command_line(spec, Path("/q"))
    assert argv[argv.index("-bios") + 1] == "qboot.rom"
    spec = MachineSpec(name="x", kernel=bzimage, initrd=Path("/i"), accel="tcg")
    assert "-bios" not in command_line(spec, Path("/q"))


def test_the_host_s_tsc_rate_is_measured_once_per_host_boot(tmp_path: Path):
    measured = host_clock.measure_tsc_khz()
    if measured is None:        # another architecture or an unsteady counter: nothing to tell
        assert host_clock.tcg_kernel_args(None) == []
        return
    assert measured % 1000 == 0 and 100_000 <= measured <= 10_000_000
    assert abs(host_clock.measure_tsc_khz() - measured) <= 1000
    cache = Cache(tmp_path)
    arg = host_clock.tcg_kernel_args(cache)
    assert arg in ([f"tsc_early_khz={measured + d}"] for d in (-1000, 0, 1000))
    # Kept, not measured again: every guest of this boot has the same key.
    (kept,) = (tmp_path / "host").iterdir()
    kept.write_text(json.dumps({"tsc_khz": 1234000}))
    assert host_clock.tcg_kernel_args(cache) == ["tsc_early_khz=1234000"]
    kept.write_text(json.dumps({"tsc_khz": 0}))      # not knowable on this boot
    assert host_clock.tcg_kernel_args(cache) == []


def test_kvm_command_line():
    spec = MachineSpec(name="x", kernel=Path("/k"), initrd=Path("/i"), kernel_args=[],
                       accel="kvm", cpus=1)
    argv = command_line(spec, Path("/q"))
    assert argv[argv.index("-accel") + 1] == "kvm"


def test_disk_image_command_line(tmp_path: Path):
    """An image that boots itself: no -kernel, the image on a virtio disk
    (snapshot=on), the seed on a CD-ROM, the same network and console."""
    image = DiskImage(tmp_path / "o.qcow2", "qcow2", tmp_path / "seed.iso")
    spec = MachineSpec(name="o", accel="tcg", memory_mib=2048, cpus=2, boot_disk=image)
    argv = command_line(spec, tmp_path / "q.sock")
    joined = " ".join(argv)
    assert not {"-kernel", "-initrd", "-append"} & set(argv)
    assert f"file={tmp_path}/o.qcow2,format=qcow2,if=none,id=boot,snapshot=on" in argv
    assert "virtio-blk-pci,drive=boot,addr=0x4,bootindex=0" in argv
    assert (f"file={tmp_path}/seed.iso,format=raw,if=none,id=seed,media=cdrom,readonly=on"
            in argv)
    assert "ide-cd,drive=seed,bus=ide.1" in argv
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22" in argv
    assert "stdio,id=console,signal=off" in argv and "chardev:console" in argv
    assert argv[argv.index("-machine") + 1] == "q35"
    assert argv[argv.index("-m") + 1] == "2048" and argv[argv.index("-smp") + 1] == "2"
    assert "-no-reboot" in argv and "snapshot=off" not in joined


def test_commas_in_paths_cannot_add_qemu_options(tmp_path: Path):
    spec = MachineSpec(name="o", accel="tcg",
                       boot_disk=DiskImage(Path("/x/a,snapshot=off.qcow2"), "qcow2"))
    drive = [a for a in command_line(spec, tmp_path / "q") if a.startswith("file=")]
    assert drive == ["file=/x/a,,snapshot=off.qcow2,format=qcow2,if=none,id=boot,snapshot=on"]


def test_taint_flags_decode_out_of_tree_unsigned():
    assert results.taint_flags(4096 | 8192) == ["O", "E"]
    assert results.taint_flags(0) == []
    assert results.taint_flags(1 << 9) == ["W"]


def test_workload_verdicts():
    ok = workloads.verdict("p", 0, 'noise\n{"ok": true, "rate": 3}\n', "", 0.5)
    assert (ok.status, ok.metrics) == ("pass", {"rate": 3})
    bad = workloads.verdict("p", 1, '{"ok": false, "error": "word 7 differs"}\n', "", 0.1)
    assert (bad.status, bad.message) == ("fail", "word 7 differs")
    flagged = workloads.verdict("p", 0, '{"ok": false}\n', "", 0.1)
    assert flagged.status == "fail"
    crashed = workloads.verdict("p", -1, "", "Segmentation fault\n", 0.1)
    assert crashed.status == "fail" and "signal" in crashed.message


def _sample_run() -> results.RunResult:
    run = results.RunResult("r1", "2026-01-01T00:00:00+00:00", {"hostname": "h"})
    g = results.GuestResult("debian-bookworm", "tiny", "debian-bookworm-tiny",
                            kernel_release="6.1.0-x", accel="tcg", accel_reason="why")
    d = results.DriverResult("mmap_remap", loaded=True, taint=12288, taint_flags=["O", "E"])
    d.workloads = [results.WorkloadResult("pattern", "pass", {"ratio": 1.5}),
                   results.WorkloadResult("other", "kernel-crash", {}, "Oops")]
    g.drivers.append(d)
    g.settle()
    run.guests.append(g)
    run.settle()
    return run


def test_results_json_keeps_the_documented_names(tmp_path: Path):
    run = _sample_run()
    results.write_json(run, tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema"] == 1 and data["status"] == "fail"
    assert {"run_id", "started", "host", "guests"} <= set(data)
    g = data["guests"][0]
    assert {"name", "kernel_release", "accel", "accel_reason", "timings", "drivers"} <= set(g)
    assert set(g["timings"]) >= {"image_s", "boot_to_ssh_s", "build_s", "load_s",
                                 "workloads_s", "shutdown_s"}
    w = g["drivers"][0]["workloads"][1]
    assert {"name", "status", "metrics", "message"} <= set(w)
    assert g["drivers"][0]["taint"] == 12288


def test_junit_counts_failures(tmp_path: Path):
    results.write_junit(_sample_run(), tmp_path / "junit.xml")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    failure = suite.find(".//testcase[@name='other']/failure")
    assert failure is not None and "Oops" in failure.text


def test_a_warning_passes_its_driver_and_says_why_in_junit(tmp_path: Path):
    run = results.RunResult("r2", "2026-01-01T00:00:00+00:00", {"hostname": "h"})
    g = results.GuestResult("debian-bookworm", "tiny", "debian-bookworm-tiny")
    d = results.DriverResult("vendor", loaded=True)
    d.workloads = [results.WorkloadResult("harness:sparse", "warn", {"warnings": 1},
                                          "sparse: 1 finding(s), first v.c:3:1: warning: x"),
                   results.WorkloadResult("check", "pass")]
    g.drivers.append(d)
    g.settle()
    run.guests.append(g)
    run.settle()
    assert d.passed and run.status == "pass"
    results.write_junit(run, tmp_path / "junit.xml")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    out = suite.find(".//testcase[@name='harness:sparse']/system-out")
    assert out is not None and out.text.startswith("warn: sparse: 1 finding(s)")
    assert "warn" in results.table(run) and "first v.c:3:1" in results.table(run)
    d.workloads[0] = results.strictly(d.workloads[0])
    assert not d.passed


def test_table_shows_status_and_timings():
    text = results.table(_sample_run())
    assert "kernel-crash" in text and "boot-to-SSH" in text and "FAIL" in text


def test_free_pages_counts_buddy_and_per_cpu_lists():
    from harness.linux.checks import free_pages
    zoneinfo = """Node 0, zone      DMA
  pages free     3968
        nr_free_pages 3968
  pagesets
    cpu: 0
              count: 0
              high:  0
Node 0, zone    DMA32
  pages free     225000
        nr_free_pages 225000
  pagesets
    cpu: 0
              count: 310
    cpu: 1
              count: 12
"""
    assert free_pages(zoneinfo) == 3968 + 225000 + 310 + 12


def test_free_memory_shortfall_is_read_again_before_it_counts(monkeypatch):
    from harness import checks
    monkeypatch.setattr(checks, "FREE_PAUSE_S", 0.0)
    readings = iter([100_000 - 1800, 100_000 - 90])     # noise that settles
    assert checks.free_memory_settled(100_000, lambda: next(readings)).status == "pass"
    calls = []

    def leaking() -> int:
        calls.append(1)
        return 100_000 - 4096
    verdict = checks.free_memory_settled(100_000, leaking)
    assert verdict.status == "fail" and verdict.metrics["lost_kib"] == 4096
    assert len(calls) == checks.FREE_READS


# --- SSH readiness: patient once the guest says sshd listens ----------------------------

class _SlowSSHServer:
    """Sends an SSH banner `delay` seconds after each connection, as an
    sshd that forks and execs sshd-session on one slow vCPU does."""

    def __init__(self, delay: float) -> None:
        import socket
        import threading
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn) -> None:
        import time
        time.sleep(self.delay)
        try:
            conn.sendall(b"SSH-2.0-OpenSSH_10.6p1\r\n")
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


def test_ssh_readiness_waits_patiently_once_sshd_said_it_listens():
    import time
    from harness.ssh import wait_banner
    server = _SlowSSHServer(delay=1.6)
    try:
        # Booting: attempts rotate every second, so a 1.6 s banner never arrives.
        assert wait_banner(server.port, time.monotonic() + 3.0, lambda: True) is None
        rotating = server.accepted
        assert rotating > 10
        # Ready: one attempt is given the time it takes.
        got = wait_banner(server.port, time.monotonic() + 5.0, lambda: True, lambda: True)
        assert got is not None and got.recv(4) == b"SSH-"
        assert server.accepted - rotating == 1
    finally:
        server.close()


def test_sshd_readiness_is_read_from_either_flavour_s_console():
    from harness.guest import sshd_listens
    assert sshd_listens("mmap-harness: sshd started")
    assert sshd_listens("[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mssh.service\x1b[0m - "
                        "OpenBSD Secure Shell server.")
    assert not sshd_listens("         Starting \x1b[0;1;39mssh.service\x1b[0m - OpenBSD Secure "
                            "Shell server...")


def test_a_guests_cache_entries_are_not_a_longer_named_guests():
    """`images clean --guest debian-bookworm` must leave debian-bookworm-686's
    entries alone."""
    from harness.cache import is_guests
    from harness.guests import all_definitions
    guests = list(all_definitions())
    assert is_guests("debian-bookworm-tiny-03f288514b4c9b3c", "debian-bookworm", guests)
    assert not is_guests("debian-bookworm-686-tiny-41c10d1c8532d0a9", "debian-bookworm", guests)
    assert is_guests("debian-bookworm-686-tiny-41c10d1c8532d0a9", "debian-bookworm-686", guests)
    assert not is_guests("debian-trixie-tiny-1", "debian-bookworm", guests)


def test_a_workload_takes_the_headers_of_its_directory_tree(tmp_path: Path, monkeypatch):
    """`#include "sub/x.h"` works: headers three levels down come along, with
    their paths; sources, hidden directories and deeper levels do not; and a
    directory full of headers (a workload in $HOME) stops the walk."""
    from harness.linux import build

    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel in ("a.h", "lib/b.h", "lib/x/y/c.def", "lib/x/y/z/too_deep.h", ".git/d.h",
                "other.c", "lib/e.inc"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    build._copy_headers(src, dst)
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert got == ["a.h", "lib/b.h", "lib/e.inc", "lib/x/y/c.def"]
    assert (dst / "lib/b.h").read_text() == "lib/b.h"

    monkeypatch.setattr(build, "HEADER_FILES", 2)
    capped = tmp_path / "capped"
    build._copy_headers(src, capped)
    # a directory once entered is copied whole; after it, the walk ends
    assert sorted(str(p.relative_to(capped)) for p in capped.rglob("*") if p.is_file()) == \
        ["a.h", "lib/b.h", "lib/e.inc"]


class _FailingRun(session.GuestRun):   # at the top level: a guest's process imports it
    def _image(self, held):
        time.sleep(0.3)
        raise HostError("the disk is full")


class _BusyRun(session.GuestRun):
    def _image(self, held):
        time.sleep(60)   # a long boot


class _VanishingRun(session.GuestRun):
    def _image(self, held):
        os._exit(3)   # as a harness bug or the OOM killer would end it


def _guest_jobs(tmp_path: Path, runners: list[type]) -> list:
    definition = guests.find("debian-bookworm")
    opts = session.RunOptions(guests=[definition] * len(runners), drivers=[], jobs=2)
    return [parallel.GuestJob(cls, opts, definition, tmp_path,
                              results.GuestResult(definition.name, "tiny", f"g{n}"), 0.0, True)
            for n, cls in enumerate(runners)]


def test_parallel_guests_stop_together_when_one_stops_the_run(tmp_path: Path):
    """`run --jobs`: a guest's HostError ends the run, as it does one guest
    after the other. A guest still running in its own process is sent SIGINT,
    unwinds and says it was interrupted; one that had not started says so.
    The guests' bodies stand in for a boot: this is the processes' logic only."""
    jobs = _guest_jobs(tmp_path, [_FailingRun, _BusyRun, _BusyRun])
    ended: dict[int, results.GuestResult] = {}
    start = time.monotonic()
    with pytest.raises(HostError, match="the disk is full"):
        parallel.run_guests(jobs, 2, 1.0, lambda i, g: ended.__setitem__(i, g))
    assert time.monotonic() - start < 30   # not the busy guest's 60 s
    failing, busy, waiting = (ended[i] for i in range(3))
    assert failing.error == "the disk is full" and failing.error_kind == "infra"
    assert busy.error == "interrupted: stopped by SIGINT" and busy.error_kind == "interrupted"
    assert busy.status == "error" and busy.timings.total_s > 0   # from the guest's process
    assert waiting.error == "interrupted before it started: the disk is full"
    assert waiting.error_kind == "interrupted"
    assert [c for c in descendants(os.getpid()).values() if "harness.guest_process" in c] == []


def test_a_guest_process_that_dies_leaves_an_error_not_a_hang(tmp_path: Path):
    ended: dict[int, results.GuestResult] = {}
    parallel.run_guests(_guest_jobs(tmp_path, [_VanishingRun]), 2, 1.0,
                        lambda i, g: ended.__setitem__(i, g))
    assert ended[0].error.startswith("the guest's process exited with status 3 before it "
                                     "wrote its results")
    assert ended[0].error_kind == "infra" and ended[0].status == "error"




def test_the_rng_driver_loads_after_the_network_is_up():
    order = module_load_order(MODULES_DEP, ["virtio_pci", "virtio_net", "virtio_rng"])
    first, later = rng_later(MODULES_DEP, order)
    assert later == ["kernel/drivers/char/hw_random/virtio-rng.ko"]
    assert first == order[:-1]   # virtio_pci (the NIC's bus) too, though nothing depends on it
    assert rng_later(MODULES_DEP, order[:-1]) == (order[:-1], [])


def test_modules_load_in_levels_each_after_what_it_needs():
    order = module_load_order(MODULES_DEP, ["virtio_pci", "virtio_net", "virtio_rng"])
    levels = dict(zip(order, load_levels(MODULES_DEP, order)))
    assert levels == {"kernel/drivers/virtio/virtio_ring.ko": 0,
                      "kernel/drivers/virtio/virtio.ko": 0,
                      "kernel/net/core/failover.ko": 0,
                      "kernel/drivers/virtio/virtio_pci.ko": 1,
                      "kernel/drivers/net/net_failover.ko": 1,
                      "kernel/drivers/net/virtio_net.ko.xz": 2,
                      "kernel/drivers/char/hw_random/virtio-rng.ko": 1}
    # A module whose dependencies load elsewhere (or are built in) starts a level.
    assert load_levels(MODULES_DEP, ["kernel/drivers/char/hw_random/virtio-rng.ko"]) == [0]
