"""The debug kernel: built from the suite's own source with Debian's config
plus KASAN, KFENCE, DEBUG_VM, DEBUG_PAGEALLOC, PAGE_TABLE_CHECK, lockdep,
kmemleak and UBSAN, it catches what a stock kernel lets through.

Each broken fixture (tests/fixtures/debug, one real module per bug) runs
twice through `run`: on the stock kernel it passes unnoticed, on the debug
kernel it fails with a kernel report of its own kind. The first test that
needs the debug kernel builds it (~15 min on 2 cores, once per cache).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ConsoleLines
from harness import debug_kernel, integrity
from harness.linux import boot_args, kmemleak
from harness.linux.patterns import TABLE as LINUX_TABLE
from harness.watcher import Watcher

FIXTURES = Path(__file__).parent / "fixtures" / "debug"
GUEST = "debian-bookworm"


# --- pure logic --------------------------------------------------------------------------

STOCK_CONFIG = "CONFIG_SLUB_DEBUG=y\n# CONFIG_PAGE_POISONING is not set\nCONFIG_KFENCE=m\n"


def test_boot_options_go_only_to_kernels_built_with_their_code():
    kept, dropped = boot_args.usable(
        ["slub_debug=FZPU", "page_poison=1", "init_on_free=1", "panic_on_warn=1",
         "kasan_multi_shot", "kfence.sample_interval=10"], STOCK_CONFIG)
    assert kept == ["slub_debug=FZPU", "init_on_free=1", "panic_on_warn=1",
                    "kfence.sample_interval=10"]
    assert dropped == ["page_poison=1", "kasan_multi_shot"]
    assert boot_args.why_dropped(dropped) == \
        "page_poison=1 (no CONFIG_PAGE_POISONING), kasan_multi_shot (no CONFIG_KASAN)"


def test_a_32_bit_guest_is_told_there_is_no_debug_kernel_for_it(tmp_path: Path):
    from harness import guests, images
    from harness.cache import Cache
    from harness.errors import ConfigError
    from harness.guests import Flavour
    from harness.progress import Progress
    with pytest.raises(ConfigError, match="an i386 guest: the debug kernel is built for amd64"):
        with images.use(guests.find("debian-bookworm-686"), Flavour.TINY, Cache(tmp_path),
                        Progress(), images.DEBUG):
            pass
    assert not any(tmp_path.rglob("*"))        # refused before anything was built


def test_a_config_missing_a_debug_option_is_named():
    config = "".join(f"CONFIG_{o}=y\n" for o, v in debug_kernel.DEBUG_OPTIONS.items()
                     if v == "y" and o != "PAGE_TABLE_CHECK")
    assert debug_kernel.missing_options(config, debug_kernel.DEBUG_OPTIONS) == \
        ["CONFIG_PAGE_TABLE_CHECK"]


def test_the_kept_build_tree_is_what_a_module_build_reads():
    kept = {rel: debug_kernel._kept(rel, rel.rsplit("/", 1)[-1]) for rel in (
        "include/linux/mm.h", "include/config/auto.conf", "arch/x86/include/generated/asm/x.h",
        "scripts/mod/modpost", "scripts/module.lds", "tools/objtool/objtool", "Module.symvers",
        ".config", "Makefile", "arch/x86/Makefile", "drivers/net/Kconfig",
        "drivers/gpu/drm/amd/include/huge_registers.h", "kernel/fork.c", "kernel/fork.o",
        "arch/arm64/Makefile", "scripts/basic/.fixdep.cmd", "tools/objtool/check.c")}
    assert [rel for rel, keep in kept.items() if not keep] == [
        "drivers/gpu/drm/amd/include/huge_registers.h", "kernel/fork.c", "kernel/fork.o",
        "arch/arm64/Makefile", "scripts/basic/.fixdep.cmd", "tools/objtool/check.c"]


# kmemleak's file after rmmod: the module's frames are bare addresses.
KMEMLEAK_TEXT = """\
unreferenced object 0xffff888004a1c2c0 (size 64):
  comm "debug_probe", pid 201, jiffies 4294893418 (age 8.912s)
  hex dump (first 32 bytes):
    01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace:
    [<ffffffff8138fa86>] kmalloc_trace+0x26/0x90
    [<ffffffffc0201234>] 0xffffffffc0201234
    [<ffffffff81461a2b>] __x64_sys_ioctl+0x8b/0xc0
unreferenced object 0xffff888003f00000 (size 1024):
  comm "swapper/0", pid 1, jiffies 4294892290 (age 20.040s)
  backtrace:
    [<ffffffff8138fa86>] kmalloc_trace+0x26/0x90
    [<ffffffff82a0c1e2>] acpi_init+0x32/0x90
"""


def test_kmemleak_objects_are_attributed_by_the_module_s_memory():
    objects = kmemleak.split(KMEMLEAK_TEXT)
    assert len(objects) == 2 and objects[1].startswith("unreferenced object 0xffff888003f00000")
    where = kmemleak.Scope("kmalloc_leak", 0xffffffffc0200000, 0x3000, 0.0)
    assert [any(where.holds(a) for a in kmemleak.frames(o)) for o in objects] == [True, False]
    assert not where.holds(0xffffffffc0203000)


SLEEP_IN_ATOMIC = """[   12.101] BUG: sleeping function called from invalid context at include/linux/uaccess.h:156
[   12.102] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 230, name: debug_probe
[   12.103] Call Trace:
[   12.104]  <TASK>
[   12.105]  atomic_sleep_ioctl+0x51/0xa0 [atomic_sleep]
[   12.106]  </TASK>
[   12.500] BUG: KASAN: slab-out-of-bounds in slab_oob_ioctl+0x52/0x80 [slab_oob]"""


def test_a_report_without_an_end_marker_ends_with_its_trace():
    """A sleep-in-atomic report is a bare stack dump: it ends at </TASK>, and
    the KASAN report after it is a report of its own."""
    lines = ConsoleLines()
    w = Watcher(lines, LINUX_TABLE)
    lines.feed(SLEEP_IN_ATOMIC)
    assert [(r.kind, r.fatal) for r in w.reports] == [("sleep-in-atomic", False),
                                                      ("kasan", True)]
    assert w.reports[0].complete and w.reports[0].lines[-1].endswith("</TASK>")
    assert "atomic_sleep_ioctl" in w.reports[0].text


# --- real kernels ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def debug_image(guest_image):
    """The bookworm tiny image booting the debug kernel (built first if absent)."""
    return guest_image(GUEST, "tiny", "debug")


@pytest.mark.integration
def test_the_debug_kernel_has_every_option_and_its_own_headers(debug_image):
    k = debug_image.kernel_build
    assert k is not None and debug_image.kernel_variant == "debug"
    assert debug_kernel.missing_options(k.config, debug_kernel.DEBUG_OPTIONS) == []
    assert "CONFIG_DEBUG_KMEMLEAK_AUTO_SCAN=y" not in k.config
    stock = debug_image.root.kernel_release            # 6.1.0-N-cloud-amd64
    assert k.release.endswith(debug_kernel.LOCALVERSION) and k.release != stock
    assert k.manifest["stock_release"] == stock
    assert k.manifest["source"].startswith("linux-source-")
    assert debug_image.kernel_release == k.release
    for needed in ("Makefile", "Module.symvers", ".config", "include/generated/autoconf.h",
                   "scripts/mod/modpost", "arch/x86/include/generated/asm/orc_hash.h"
                   if (k.headers / "arch/x86/include/generated/asm/orc_hash.h").exists()
                   else "arch/x86/Makefile"):
        assert (k.headers / needed).is_file(), needed
    assert not list(k.headers.glob("kernel/*.o"))      # objects are not kept
    assert integrity.verify(k.dir) == []
    # Its image boots it, with modules.dep from its own build.
    assert json.loads((debug_image.dir / "manifest.json").read_text())["kernel"] == k.dir.name


def harness_run(results: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, Path]:
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--results", str(results),
                        *args], capture_output=True, text=True, timeout=1800)
    (run_dir,) = [d for d in results.iterdir() if d.is_dir() and not d.is_symlink()]
    return r, json.loads((run_dir / "results.json").read_text()), run_dir


@pytest.mark.integration
def test_the_template_drivers_pass_on_the_debug_kernel(debug_image, tmp_path: Path):
    r, data, run_dir = harness_run(tmp_path, "--kernel", "debug")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (guest,) = data["guests"]
    assert guest["kernel_variant"] == "debug"
    assert guest["kernel_release"] == debug_image.kernel_release
    assert guest["kernel_reports"] == []
    for driver in guest["drivers"]:
        rows = {w["name"]: w for w in driver["workloads"]}
        assert rows["harness:kmemleak"]["status"] == "pass", driver["name"]
    console = (run_dir / guest["dir"] / "console.log").read_text(errors="replace")
    assert "page_poison=1" in console      # the debug kernel acts on it


# bug -> the kind of report the debug kernel makes of it
CAUGHT = {
    "freed_mapped": "page-table-check",
    "refcount": "vm-bug",
    "atomic_sleep": "sleep-in-atomic",
    "kmalloc_leak": "kmemleak",
    "slab_oob": "kasan",
}


def fixture_run(bug: str, results: Path, *extra: str):
    return harness_run(results, "--driver-dir", str(FIXTURES), "--make-arg", f"FIXTURE={bug}",
                       "--device", f"/dev/debug_{bug}",
                       "--workload", str(FIXTURES / "debug_probe.c"), *extra)


@pytest.mark.integration
@pytest.mark.parametrize("bug", list(CAUGHT))
def test_a_stock_kernel_lets_the_bug_through(bug: str, tmp_path: Path):
    r, data, run_dir = fixture_run(bug, tmp_path)
    (guest,) = data["guests"]
    assert guest["kernel_variant"] == "stock"
    console = (run_dir / guest["dir"] / "console.log").read_text(errors="replace")
    assert "page_poison=1" not in console  # the stock kernel has no page poisoning
    if bug == "refcount":
        # The page freed one put too early goes back to the allocator with a
        # count below zero; the stock kernel finds that later, when it hands
        # the page to another process ("Bad page state in process sshd"), or
        # not at all: never in the driver.
        assert {k["kind"] for k in guest["kernel_reports"]} <= {"bad-page"}
        assert not any("refcount_" in k["text"] for k in guest["kernel_reports"])
        return
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert guest["kernel_reports"] == []


@pytest.mark.integration
@pytest.mark.parametrize("bug, kind", list(CAUGHT.items()))
def test_the_debug_kernel_catches_the_bug(bug: str, kind: str, debug_image, tmp_path: Path):
    r, data, _run_dir = fixture_run(bug, tmp_path, "--kernel", "debug")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    (guest,) = data["guests"]
    kinds = [k["kind"] for k in guest["kernel_reports"]]
    assert kinds and kinds[0] == kind, guest["kernel_reports"]
    (driver,) = guest["drivers"]
    rows = {w["name"]: w for w in driver["workloads"]}
    if kind == "kmemleak":
        leak = rows["harness:kmemleak"]
        assert leak["status"] == "fail" and leak["metrics"]["leaks"] >= 1
        assert "allocated by kmalloc_leak and never freed" in leak["message"]
    elif guest["kernel_reports"][0]["fatal"]:
        assert f"{bug}_" in guest["kernel_reports"][0]["text"]   # caught in the driver
        assert driver["error_kind"] == "kernel-crash"
        crashed = [w for w in driver["workloads"] if w["status"] == "kernel-crash"]
        assert crashed and re.search(re.escape(guest["kernel_reports"][0]["first_line"]
                                               .strip()[:40]), crashed[0]["message"])
    else:   # the kernel went on: the log check fails, unless a later report stopped it
        assert (rows.get("harness:dmesg-clean", {}).get("status") == "fail"
                or driver["error_kind"] == "kernel-crash"), rows
