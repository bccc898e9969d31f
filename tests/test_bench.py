"""`mmap-harness bench`: the summary's arithmetic on made-up rows (pure logic),
and a real bench run on a real guest (integration)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import bench, drivers, throughput
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


def timed(jobs: int, wall_s: float, cpu_s: float, loops: tuple[float, ...]) -> throughput.Timed:
    return throughput.Timed(jobs, wall_s, cpu_s, "pass", f"r{jobs}-{wall_s}", loops)


def test_the_parallel_figures_say_why_the_throughput_falls_short():
    """Two guests of 10 s each, one after the other in 20 s keeping 1.25 of
    2 cores busy; at once in 16 s, each guest's loop stretched to 15 s."""
    p = throughput.summarize([timed(0, 90.0, 99.0, (45.0, 45.0)),
                              timed(1, 20.0, 25.0, (10.0, 10.0)), timed(2, 16.0, 31.0, (15.0, 16.0)),
                              timed(2, 17.0, 32.0, (15.0, 17.0)), timed(1, 21.0, 25.2, (10.5, 10.5))],
                             host_cpus=2)
    assert p["jobs"] == 2 and p["rounds"] == 2 and p["status"] == "pass"
    assert p["parallel_vs_serial_throughput"] == round(20.5 / 16.5, 3)
    assert p["serial_cores_busy"] == 1.23 and p["ceiling"] == round(2 / 1.2250, 2)
    assert p["guest_loop_alone_s"] == 10.25 and p["guest_loop_beside_s"] == 15.5
    text = throughput.line(p)
    assert p["serial_cpu_s"] == 25.1 and p["parallel_cpu_s"] == 31.5
    assert "1.24x the throughput" in text and "ceiling 1.63x" in text and "15.5s beside" in text
    assert "cost 25.1 CPU-s one after the other, 31.5 at once" in text
    # Idle cores cap nothing beyond the guests there are to run at once.
    assert throughput.summarize([timed(1, 20.0, 4.0, ()), timed(2, 11.0, 8.0, ())], 8)["ceiling"] == 2
    failed = throughput.summarize([timed(1, 20.0, 4.0, ()),
                                   dataclasses.replace(timed(2, 11.0, 8.0, ()), status="fail")], 2)
    assert failed["status"] == "fail"


def test_the_matrix_throughput_has_a_history_of_its_own(tmp_path: Path):
    run = RunResult("r1", "2026-11-01T03:00:00+00:00", {"hostname": "ci-1"},
                    guests=[made_up_guest()])
    run.bench = bench.summarize(run, 5)
    run.bench["parallel"] = throughput.summarize([timed(1, 20.0, 25.0, ()), timed(2, 16.0, 31.0, ())], 2)
    bench.record(tmp_path, run)
    from harness import history
    ctx = bench.matrix_context(run.bench, "ci-1")
    assert ctx.guest == "debian-bookworm@jobs2"
    assert set(history.metrics(tmp_path / history.DB_NAME, ctx)) == {
        "parallel/parallel_vs_serial_throughput", "parallel/serial_cores_busy"}
    assert "2 guests at once: 1.25x" in bench.table(run.bench)


@pytest.mark.integration
def test_bench_parallel_times_the_matrix_both_ways(tmp_path: Path):
    """Real runs: the bench, then the two-guest matrix one after the other
    and both at once; every run passes and the figures add up."""
    r = subprocess.run([sys.executable, "-m", "harness.cli", "bench", "--repeat", "3",
                        "--driver", "mmap_remap", "--guest", "debian-bookworm",
                        "--guest", "debian-trixie", "--parallel", "2", "--rounds", "1",
                        "--results", str(tmp_path)], capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = (tmp_path / "latest").resolve()
    p = json.loads((run_dir / "results.json").read_text())["bench"]["parallel"]
    assert (p["jobs"], p["rounds"], p["status"]) == (2, 1, "pass")
    assert [run["jobs"] for run in p["runs"]] == [0, 1, 2]     # warm-up, serial, at once
    for run in p["runs"]:
        matrix = json.loads((run_dir / "parallel" / run["run_id"] / "results.json").read_text())
        assert [g["name"] for g in matrix["guests"]] == ["debian-bookworm", "debian-trixie"]
        assert matrix["status"] == "pass" and len(matrix["guests"][0]["drivers"]) >= 4
        # QEMU and the compilers are counted: far more CPU than the harness's own.
        assert run["cpu_s"] > 0.3 * run["wall_s"]
    assert 0.3 < p["parallel_vs_serial_throughput"] < 2.5
    assert 0 < p["serial_cores_busy"] <= p["host_cpus"] + 0.5 and 0 < p["ceiling"] <= 2
    assert p["guest_loop_alone_s"] and p["guest_loop_beside_s"]
    assert "2 guests at once:" in r.stdout
