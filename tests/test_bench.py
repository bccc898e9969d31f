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


def test_a_restored_start_keeps_its_loop_figures_apart():
    g = made_up_guest()
    cold = {f.metric for f in bench.history_figures(bench.guest_summary(g))}
    g.start = "restored"
    restored = {f.metric for f in bench.history_figures(bench.guest_summary(g))}
    assert {"loop/boot_to_ssh_s", "boot_to_ssh_vs_kernel_to_init"} <= cold
    assert {"loop/boot_to_ssh_s@restored", "boot_to_ssh_vs_kernel_to_init@restored",
            "device_vs_anon_bandwidth", "mmap_remap/device_write_mib_s"} <= restored
    assert not {n for n in restored if n.startswith("loop/") and "@" not in n}


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
    assert g["loop"]["kernel_to_init_s"] > 0 and g["loop"]["start"] in ("cold", "restored")
    # A kernel boot is above its floor; a restore from a snapshot below it.
    assert (b["boot_to_ssh_vs_kernel_to_init"] > 1) == (g["loop"]["start"] == "cold")
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


def bench_run(run_id: str, started: str, device: float) -> RunResult:
    """A made-up bench run of one guest whose remap writes at `device` MiB/s."""
    g = made_up_guest()
    metrics = g.drivers[0].workloads[0].metrics
    metrics["device_write_mib_s"] = device
    metrics["device_write_mib_s_spread"] = [device] * 4
    run = RunResult(run_id, started, {"hostname": "ci-1"}, guests=[g])
    run.bench = bench.summarize(run, 5)
    return run


def test_a_lasting_slowdown_is_a_regression_named_with_its_run(tmp_path: Path):
    import random
    rng = random.Random(7)
    found = []
    for i in range(20):
        level = 1000.0 if i < 15 else 800.0      # 20 % slower from run 15 on
        run = bench_run(f"run{i:02d}", f"2026-11-{i + 1:02d}T03:00:00+00:00",
                        level * rng.gauss(1, 0.03))
        found = bench.record(tmp_path, run)
    names = {c.metric: c for c in found}
    assert set(names) == {"mmap_remap/device_write_mib_s", "device_vs_anon_bandwidth"}
    c = names["mmap_remap/device_write_mib_s"]
    assert c.run_id == "run15" and -25 < c.size_pct < -15 and c.regression
    # A machine of another kind is another history: nothing to compare with yet.
    other = bench_run("other", "2026-11-22T03:00:00+00:00", 500.0)
    other.host["hostname"] = "ci-2"
    assert bench.record(tmp_path, other) == []


def test_noise_alone_is_no_regression(tmp_path: Path):
    import random
    rng = random.Random(11)
    for i in range(25):
        found = bench.record(tmp_path, bench_run(f"run{i:02d}",
                                                 f"2026-10-{i + 1:02d}T03:00:00+00:00",
                                                 1000 * rng.gauss(1, 0.04)))
    assert found == []


@pytest.mark.integration
def test_fail_on_regression_makes_a_lasting_slowdown_the_exit_status(tmp_path: Path):
    """A real bench run, after a history in which this guest's mapping was
    30 % faster for 15 nights and as now for 2: the drop is named and fails."""
    from harness import history

    def bench_cli(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness.cli", "bench", "--repeat", "5",
                               "--driver", "mmap_remap", "--results", str(tmp_path), *extra],
                              capture_output=True, text=True, timeout=900)
    r = bench_cli()
    assert r.returncode == 0 and "no regression(s)" in r.stdout, r.stdout + r.stderr
    data = json.loads((tmp_path / "latest" / "results.json").read_text())
    (g,) = data["bench"]["guests"]
    now = g["device_vs_anon_bandwidth"]
    ctx = bench.context(g, data["host"]["hostname"])
    for night in range(17):
        value = now * (1.3 if night < 15 else 1.0)
        history.record(tmp_path / history.DB_NAME, f"night{night:02d}",
                       f"2026-10-{night + 1:02d}T03:00:00+00:00", ctx,
                       [history.Figure("device_vs_anon_bandwidth", value, "ratio", "higher",
                                       {})])
    r = bench_cli("--fail-on-regression")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "regression: device_vs_anon_bandwidth -2" in r.stdout and "since run night15" \
        in r.stdout, r.stdout
    assert (tmp_path / "latest" / "report.html").stat().st_size > 10_000
