"""`bench --parallel N`: does running guests at once pay on this host?

The matrix `run` runs over the bench's guests (every driver, its default
options) is run once to warm the caches, then timed `rounds` times one guest
after the other and N at once, alternating which goes first so a drift of
the host's load falls on both.
Beside the throughput of N at once over one after the other, the figures say
why it is what it is: how many of the host's cores the serial runs kept busy
(the CPU time of the harness, its QEMUs, compilers and guest processes over
the wall time), the ceiling that leaves (the host's cores over that, at most
N), and each guest's loop alone and beside the others.

    timed = measure(opts, jobs=2, rounds=3, progress)
    bench["parallel"] = summarize(timed, os.cpu_count())
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from dataclasses import dataclass

from . import session
from .progress import Progress
from .results import PASS

DEFAULT_ROUNDS = 3


@dataclass(frozen=True)
class Timed:
    """One `run` of the matrix."""

    jobs: int                       # 0: the untimed warm-up
    wall_s: float
    cpu_s: float                    # this process and every child it reaped
    status: str
    run_id: str
    guest_total_s: tuple[float, ...]    # each guest's loop, as its results say


def measure(opts: session.RunOptions, jobs: int, rounds: int,
            progress: Progress) -> list[Timed]:
    """The first run, untimed, warms what the others would find cold (an
    image, a build, a snapshot saved by a guest's first boot): otherwise the
    first mode timed pays for both."""
    progress.say("parallel", "warming up: the matrix once, untimed")
    timed = [dataclasses.replace(time_matrix(dataclasses.replace(opts, jobs=1), progress),
                                 jobs=0)]
    for i in range(rounds):
        for j in ((1, jobs) if i % 2 == 0 else (jobs, 1)):
            progress.say("parallel", f"round {i + 1} of {rounds}: "
                         + ("one guest after the other" if j == 1 else f"{j} guests at once"))
            timed.append(time_matrix(dataclasses.replace(opts, jobs=j), progress))
    return timed


def time_matrix(opts: session.RunOptions, progress: Progress) -> Timed:
    """CPU time counts children once they are reaped, and every QEMU,
    compiler and guest process of a run is reaped before `run` returns."""
    cpu, start = _cpu_s(), time.monotonic()
    result, _ = session.run(opts, progress)
    wall = time.monotonic() - start
    return Timed(opts.jobs, round(wall, 2), round(_cpu_s() - cpu, 2), result.status,
                 result.run_id, tuple(g.timings.total_s for g in result.guests))


def _cpu_s() -> float:
    used = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(r.ru_utime + r.ru_stime for r in used)


def summarize(timed: list[Timed], host_cpus: int) -> dict:
    """results.json's `bench.parallel`."""
    serial = [t for t in timed if t.jobs == 1]
    parallel = [t for t in timed if t.jobs > 1]
    jobs = parallel[0].jobs
    serial_wall = statistics.median(t.wall_s for t in serial)
    busy = statistics.median(t.cpu_s / t.wall_s for t in serial)
    return {
        "jobs": jobs, "rounds": len(serial), "host_cpus": host_cpus,
        "serial_wall_s": [t.wall_s for t in serial],
        "parallel_wall_s": [t.wall_s for t in parallel],
        # Guests per second at once over guests per second one after the other.
        "parallel_vs_serial_throughput":
            round(serial_wall / statistics.median(t.wall_s for t in parallel), 3),
        "serial_cores_busy": round(busy, 2),
        "parallel_cores_busy": round(statistics.median(t.cpu_s / t.wall_s for t in parallel), 2),
        # The same work costs more CPU when the cores are shared (caches,
        # memory bandwidth): the other reason a ratio stays below its ceiling.
        "serial_cpu_s": round(statistics.median(t.cpu_s for t in serial), 2),
        "parallel_cpu_s": round(statistics.median(t.cpu_s for t in parallel), 2),
        # What CPU alone allows: the cores the serial runs left idle, filled.
        "ceiling": round(min(jobs, host_cpus / busy), 2),
        "guest_loop_alone_s": _median_loop(serial),
        "guest_loop_beside_s": _median_loop(parallel),
        "runs": [{"run_id": t.run_id, "jobs": t.jobs, "status": t.status,
                  "wall_s": t.wall_s, "cpu_s": t.cpu_s} for t in timed],   # jobs 0: warm-up
        "status": PASS if all(t.status == PASS for t in timed) else "fail",
    }


def _median_loop(timed: list[Timed]) -> float | None:
    loops = [s for t in timed for s in t.guest_total_s if s]
    return round(statistics.median(loops), 2) if loops else None


def line(p: dict) -> str:
    """The figures for people, with the reason when the ratio falls short."""
    return (f"{p['jobs']} guests at once: {p['parallel_vs_serial_throughput']:.2f}x the "
            f"throughput of one after the other (matrix {statistics.median(p['serial_wall_s']):.1f}s "
            f"-> {statistics.median(p['parallel_wall_s']):.1f}s, {p['rounds']} rounds); "
            f"ceiling {p['ceiling']:.2f}x: one after the other kept {p['serial_cores_busy']:.2f} "
            f"of {p['host_cpus']} cores busy, at once {p['parallel_cores_busy']:.2f}; the matrix "
            f"cost {p['serial_cpu_s']:.1f} CPU-s one after the other, {p['parallel_cpu_s']:.1f} "
            f"at once; a guest's loop {_s(p['guest_loop_alone_s'])} alone, "
            f"{_s(p['guest_loop_beside_s'])} beside the others")


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}s"
