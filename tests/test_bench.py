"""`mmap-harness bench`: the summary's arithmetic on made-up rows (pure logic),
and a real bench run on a real guest (integration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import bench, drivers
from harness.linux import LINUX
from harness.results import DriverResult, GuestResult, RunResult, Timings, WorkloadResult


def made_up_guest() -> GuestResult:
    g = GuestResult("debian-bookworm", "tiny", "debian-bookworm-tiny", kernel_release="6.1",
                    accel="tcg", cpu_model="qemu64", image_start="warm",
                    timings=Timings(boot_to_ssh_s=3.0, kernel_to_init_s=1.5, total_s=20.0,
                                    harness_cpu_s=0.5))
    metrics = {"bytes": 1048576, "repeat": 5,
               "device_write_mib_s": 950.0, "device_write_mib_s_spread": [900, 940, 960, 990],
               "anon_write_mib_s": 1000.0, "anon_write_mib_s_spread": [950, 990, 1010, 1050],
               "device_mmap_munmap_us": 12.5, "device_mmap_munmap_us_spread": [11, 12, 13, 14]}
    g.drivers.append(DriverResult("mmap_remap", True, workloads=[
        WorkloadResult("bench_bandwidth", "pass", metrics),
        WorkloadResult("harness:counters", "pass", {"live_pages": 256})]))
    return g


def test_summary_has_the_headline_ratios_units_and_loop():
    run = RunResult("r1", "now", {}, guests=[made_up_guest()])
    summary = bench.summarize(run, 5)
    assert summary["device_vs_anon_bandwidth"] == 0.95
    assert summary["boot_to_ssh_vs_kernel_to_init"] == 2.0
    (g,) = summary["guests"]
    units = {f["metric"]: (f["unit"], f["better"]) for f in g["figures"]}
    assert units == {"device_write_mib_s": ("MiB/s", "higher"),
                     "anon_write_mib_s": ("MiB/s", "higher"),
                     "device_mmap_munmap_us": ("us", "lower")}
    assert g["loop"]["harness_cpu_share"] == 0.025 and g["loop"]["image_start"] == "warm"
    assert g["cpu_model"] == "qemu64" and g["accel"] == "tcg" and summary["debug_boot"] is False
    assert "device_vs_anon_bandwidth 0.950" in bench.table(summary)


def test_every_bench_workload_figure_has_a_unit():
    """The names the C programs print (mh_figure) all end in a known suffix."""
    for spec in drivers.all_specs():
        for w in spec.bench:
            text = (drivers.WORKLOADS_DIR / f"{w}.c").read_text()
            for name in __import__("re").findall(r'mh_figure\(&r, "(\w+)"', text):
                assert bench.unit_of(name)


def test_kernel_to_init_is_read_from_the_console():
    console = "[    0.000000] Linux version 6.1\n[    1.312345] Run /init as init process\n"
    assert LINUX.init_reached_s(console) == 1.312345
    assert LINUX.init_reached_s("no timestamps here") == 0.0


@pytest.mark.integration
def test_bench_run_on_a_real_guest(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "bench", "--repeat", "5",
                        "--results", str(tmp_path)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((tmp_path / "latest" / "results.json").read_text())
    b = data["bench"]
    assert b["debug_boot"] is False and b["repeat"] == 5
    (g,) = b["guests"]
    assert 0.3 < b["device_vs_anon_bandwidth"] < 3
    assert g["loop"]["kernel_to_init_s"] > 0 and b["boot_to_ssh_vs_kernel_to_init"] > 1
    assert 0 < g["loop"]["harness_cpu_share"] < 1
    metrics = {(f["driver"], f["metric"]) for f in g["figures"]}
    for driver, metric in [("mmap_remap", "write_ratio_device_vs_anon"),
                           ("mmap_fault", "device_first_touch_ns_per_page"),
                           ("mmap_remap", "device_mmap_munmap_us"),
                           ("mmap_dmabuf", "alloc_us"), ("mmap_dmabuf", "free_us")]:
        assert (driver, metric) in metrics
    for f in g["figures"]:
        s = f["spread"]
        assert s["min"] <= s["q1"] <= f["value"] <= s["q3"] <= s["max"], f
    # Booted without the debug options: they change the figures.
    cmdline = (tmp_path / "latest" / data["guests"][0]["dir"] / "qemu.cmdline").read_text()
    assert "mmap_harness" in cmdline or "console=" in cmdline
    assert "panic_on_warn" not in cmdline and "slub_debug" not in cmdline
