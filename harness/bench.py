"""`mmap-harness bench`: the drivers' benchmark workloads, run the way `run`
runs workloads, and the `bench` object of results.json made from that run.

    plans = bench_plans(specs)              # each spec's `bench` workloads
    result, run_dir = session.run(opts)     # booted without the debug options
    result.bench = summarize(result, repeat)

A bench workload (drivers/workloads/bench_*.c, helpers in mh_bench.h)
repeats each measurement and prints `NAME: median, NAME_spread: [min, q1,
q3, max]`; the unit is the name's suffix. Beside the figures, each guest's
loop is timed against its floor: the kernel's own start-to-/init, read from
the console timestamps of the same boot.
"""

from __future__ import annotations

from pathlib import Path

from . import history, throughput
from .drivers import WORKLOADS_DIR, DriverSpec
from .errors import ConfigError
from .plan import DriverPlan, Workload
from .results import GuestResult, RunResult

DEFAULT_REPEAT = 15
REMAP, REMAP_WRITE = "mmap_remap", ("device_write_mib_s", "anon_write_mib_s")
SPREAD = "_spread"
# A figure's unit and which way is better, from its name's suffix.
UNITS: tuple[tuple[str, str, str], ...] = (
    ("_mib_s", "MiB/s", "higher"),
    ("_ns_per_page", "ns/page", "lower"),
    ("_us", "us", "lower"),
    ("_vs_anon", "ratio", "higher"),
)


def bench_plans(specs: list[DriverSpec]) -> list[DriverPlan]:
    """One plan per spec with bench workloads; ConfigError if none has any."""
    plans = [DriverPlan(s.name, s.device, [Workload(w, WORKLOADS_DIR / f"{w}.c")
                                           for w in s.bench], spec=s)
             for s in specs if s.bench]
    if not plans:
        raise ConfigError(f"no benchmark for {', '.join(s.name for s in specs)}",
                          hint="drivers with a `bench` list in their spec: "
                               "mmap_remap, mmap_fault, mmap_dmabuf")
    return plans


def unit_of(metric: str) -> tuple[str, str]:
    """(unit, better) of a figure from its name."""
    for suffix, unit, better in UNITS:
        if metric.endswith(suffix):
            return unit, better
    raise ValueError(f"bench figure {metric!r} has no known unit suffix")


def figures(g: GuestResult) -> list[dict]:
    """Every figure of the guest's bench workloads, with its unit and spread."""
    found = []
    for d in g.drivers:
        for w in d.workloads:
            for name, value in w.metrics.items():
                spread = w.metrics.get(name + SPREAD)
                if not isinstance(spread, list) or len(spread) != 4:
                    continue
                unit, better = unit_of(name)
                found.append({"driver": d.name, "workload": w.name, "metric": name,
                              "value": value, "unit": unit, "better": better,
                              "spread": dict(zip(("min", "q1", "q3", "max"), spread))})
    return found


def loop(g: GuestResult) -> dict:
    """The loop's stages, its floor and the harness's own share of it."""
    t = g.timings
    return {"image_s": t.image_s, "image_start": g.image_start, "start": g.start,
            "boot_to_ssh_s": t.boot_to_ssh_s, "kernel_to_init_s": t.kernel_to_init_s,
            "build_s": t.build_s, "load_s": t.load_s, "workloads_s": t.workloads_s,
            "teardown_s": t.shutdown_s, "total_s": t.total_s,
            "harness_cpu_s": t.harness_cpu_s,
            "harness_cpu_share": _ratio(t.harness_cpu_s, t.total_s)}


def guest_summary(g: GuestResult) -> dict:
    found = figures(g)
    remap = {f["metric"]: f["value"] for f in found if f["driver"] == REMAP}
    device, anon = (remap.get(k) for k in REMAP_WRITE)
    return {"name": g.name, "flavour": g.flavour, "kernel": g.kernel_release,
            "cpu_model": g.cpu_model, "accel": g.accel,
            # The remap mapping's sequential write bandwidth over anonymous
            # memory's: medians of the same run in the same guest.
            "device_vs_anon_bandwidth": _ratio(device, anon),
            "boot_to_ssh_vs_kernel_to_init": _ratio(g.timings.boot_to_ssh_s,
                                                    g.timings.kernel_to_init_s),
            "loop": loop(g), "figures": found}


def summarize(result: RunResult, repeat: int) -> dict:
    """results.json's `bench` object; the headline ratios are the first guest's."""
    guests = [guest_summary(g) for g in result.guests]
    head = guests[0] if guests else {}
    return {"repeat": repeat, "debug_boot": False,
            "device_vs_anon_bandwidth": head.get("device_vs_anon_bandwidth"),
            "boot_to_ssh_vs_kernel_to_init": head.get("boot_to_ssh_vs_kernel_to_init"),
            "guests": guests}


# The loop's figures kept in the history beside the workloads' (name, unit, better).
LOOP_HISTORY = (("boot_to_ssh_s", "s", "lower"), ("total_s", "s", "lower"),
                ("harness_cpu_share", "ratio", "lower"))
HEADLINES = (("device_vs_anon_bandwidth", "higher"), ("boot_to_ssh_vs_kernel_to_init", "lower"))
STARTS_DIFFER = {"boot_to_ssh_vs_kernel_to_init"}   # a restored start is below the floor


def context(g: dict, host: str) -> history.Context:
    """What must be the same for two runs' figures to be compared."""
    return history.Context(g["name"], g["flavour"], g["kernel"], g["cpu_model"], g["accel"],
                           host, history.harness_version())


def history_figures(g: dict) -> list[history.Figure]:
    """A guest's figures as the history keeps them: `<driver>/<metric>`,
    the headline ratios, and `loop/<stage>`. A guest restored from a
    snapshot starts seconds sooner than one whose kernel boots: its loop
    figures are series of their own (`loop/<stage>@restored`, and the
    boot ratio's), never compared with a cold boot's."""
    tag = "@restored" if g["loop"].get("start") == "restored" else ""
    found = [history.Figure(f"{f['driver']}/{f['metric']}", f["value"], f["unit"],
                            f["better"], f["spread"]) for f in g["figures"]]
    found += [history.Figure(name + (tag if name in STARTS_DIFFER else ""), g[name], "ratio",
                             better, {})
              for name, better in HEADLINES if g[name] is not None]
    found += [history.Figure(f"loop/{name}{tag}", g["loop"][name], unit, better, {})
              for name, unit, better in LOOP_HISTORY if g["loop"][name] is not None]
    return found


def matrix_context(bench: dict, host: str) -> history.Context:
    """The matrix's throughput (`bench --parallel`) depends on all its guests
    and on how many run at once: a context of its own."""
    gs = bench["guests"]

    def joined(key: str) -> str:
        return "+".join(dict.fromkeys(str(g[key]) for g in gs))
    return history.Context(f"{joined('name')}@jobs{bench['parallel']['jobs']}", joined("flavour"),
                           joined("kernel"), joined("cpu_model"), joined("accel"), host,
                           history.harness_version())


PARALLEL_HISTORY = (("parallel_vs_serial_throughput", "ratio", "higher"),
                    ("serial_cores_busy", "cores", "higher"))


def record(results_root: Path, result: RunResult) -> list[history.Change]:
    """Append the run's figures to the history in `results_root`; the
    regressions still in effect (the latest change of a metric is for the
    worse), each named with its size and the run where it started."""
    assert result.bench is not None
    db = results_root / history.DB_NAME
    host = result.host.get("hostname", "")
    kept = [(context(g, host), history_figures(g)) for g in result.bench["guests"]]
    if result.bench.get("parallel"):
        p = result.bench["parallel"]
        kept.append((matrix_context(result.bench, host),
                     [history.Figure(f"parallel/{name}", p[name], unit, better, {})
                      for name, unit, better in PARALLEL_HISTORY]))
    current = []
    for ctx, figures_kept in kept:
        history.record(db, result.run_id, result.started, ctx, figures_kept)
        for metric in history.metrics(db, ctx):
            changes = history.changes(db, ctx, metric)
            if changes and changes[-1].regression:
                current.append(changes[-1])
    return current


def table(bench: dict) -> str:
    """The figures and the loop, for people."""
    rows = [("guest", "driver", "figure", "median", "q1..q3", "unit")]
    for g in bench["guests"]:
        for f in g["figures"]:
            s = f["spread"]
            rows.append((g["name"], f["driver"], f["metric"], f"{f['value']:.4g}",
                         f"{s['q1']:.4g}..{s['q3']:.4g}", f["unit"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for g in bench["guests"]:
        lp = g["loop"]
        lines.append(
            f"{g['name']}: device_vs_anon_bandwidth {_fmt(g['device_vs_anon_bandwidth'])}, "
            f"boot_to_ssh_vs_kernel_to_init {_fmt(g['boot_to_ssh_vs_kernel_to_init'])} "
            f"(boot-to-SSH {lp['boot_to_ssh_s']:.2f}s, kernel to /init "
            f"{lp['kernel_to_init_s']:.2f}s), harness CPU {lp['harness_cpu_s']:.2f}s = "
            f"{_fmt(lp['harness_cpu_share'], percent=True)} of {lp['total_s']:.1f}s "
            f"({g['accel']}, {g['cpu_model']}, image {lp['image_start']}, "
            f"{lp.get('start') or 'unknown'} start)")
    if bench.get("parallel"):
        lines.append(throughput.line(bench["parallel"]))
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"
