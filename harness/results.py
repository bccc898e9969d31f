"""Results: the documented results.json schema, JUnit XML and the printed table.

results.json (schema 1) -- names scripts may rely on; fields are only added:

    {"schema": 1, "run_id": str, "started": ISO-8601, "finished": ISO-8601,
     "status": "pass" | "fail",
     "host": {"hostname", "kernel", "python", "qemu", "cpus"},
     "fuzz": {"seed", "ops"} (replay with --fuzz-seed SEED --fuzz-ops OPS),
     "guests": [{
        "name", "flavour", "kernel_release" (the guest's `uname -r`),
        "accel": "tcg" | "kvm", "accel_reason", "cpu_model", "compiler",
        "kernel_compiler", "status": "pass" | "fail" | "error", "error",
        "error_kind" (whose failure "error" is, empty when there is none:
            "input", "infra", "boot", "build", "kernel-crash", "interrupted"),
        "boot_attempts" (2 when the first boot hung silently and the guest was
            booted once more; its console is kept as console.boot1.log),
        "dir" (this guest's files, relative to the run directory),
        "kernel_reports": [{"kind", "fatal", "first_line", "at_s", "text"}]
            (oops, BUG, WARNING, KASAN, panic... seen on the console),
        "image_start": "warm" (the cached image) | "cold" (built first),
        "start": "restored" (from the snapshot of the image's first boot, see
            harness/snapshot.py) | "cold" (the kernel booted),
        "start_reason" (which snapshot; or why none was used, and whether this
            boot saved one: "--cold-boot", the full flavour, damaged, failed...),
        "timings": {"image_s", "boot_to_ssh_s", "build_s", "load_s",
                    "workloads_s", "shutdown_s", "total_s",
                    "kernel_to_init_s" (the kernel's own start-to-/init from the
                        console's timestamps: the loop's floor; 0 unseen),
                    "harness_cpu_s" (the harness's own process: not QEMU, not gcc)},
        "build": {"built", "reused"} (modules and workloads compiled by this run,
            and copied from the artifact cache instead: harness/artifacts.py),
        "drivers": [{
            "name", "loaded", "taint", "taint_flags", "error",
            "error_kind" ("", "driver": insmod/rmmod refused or no device node,
                          "kernel-crash", "hang"),
            "workloads": [{"name", "status": "pass" | "warn" | "fail" | "error" | "kernel-crash"
                               ("warn": a finding that does not fail the run, such as
                                sparse's on someone else's driver; --strict-sparse fails it),
                           "metrics": {...}, "message", "seconds"}]}]}],
     "bench": {...} (`mmap-harness bench` only: see harness/bench.py and the README)}
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

SCHEMA = 1
PASS, WARN, FAIL, ERROR, KERNEL_CRASH = "pass", "warn", "fail", "error", "kernel-crash"
# What a driver may have and still pass.
OK = (PASS, WARN)
# /proc/sys/kernel/tainted bits, as Documentation/admin-guide/tainted-kernels.rst names them.
TAINT_FLAGS = "PFSRMBUDAWCIOELKXTN"


def taint_flags(value: int) -> list[str]:
    return [flag for bit, flag in enumerate(TAINT_FLAGS) if value & (1 << bit)]


@dataclass
class WorkloadResult:
    name: str
    status: str
    metrics: dict = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status in OK


def strictly(w: WorkloadResult) -> WorkloadResult:
    """`w` with a warning made a failure (--strict-sparse)."""
    return replace(w, status=FAIL) if w.status == WARN else w


@dataclass
class DriverResult:
    name: str
    loaded: bool = False
    taint: int = 0
    taint_flags: list[str] = field(default_factory=list)
    error: str = ""
    error_kind: str = ""
    workloads: list[WorkloadResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.loaded and not self.error and all(w.passed for w in self.workloads)


@dataclass
class Timings:
    image_s: float = 0.0
    boot_to_ssh_s: float = 0.0
    build_s: float = 0.0
    load_s: float = 0.0
    workloads_s: float = 0.0
    shutdown_s: float = 0.0
    total_s: float = 0.0
    # The loop's floor: the kernel's own start-to-/init, from the console's
    # timestamps of the same boot (0: not seen).
    kernel_to_init_s: float = 0.0
    # CPU the harness's own Python process used (not QEMU, not compilers).
    harness_cpu_s: float = 0.0


@dataclass
class BuildCounts:
    """The build stage's jobs: compiled now, or copied from the artifact cache."""

    built: int = 0
    reused: int = 0


@dataclass
class GuestResult:
    name: str
    flavour: str
    dir: str
    kernel_release: str = ""
    kernel_variant: str = "stock"   # "debug": the suite's kernel with its debug options
    accel: str = ""
    accel_reason: str = ""
    cpu_model: str = ""
    compiler: str = ""
    kernel_compiler: str = ""
    status: str = ERROR
    error: str = ""
    error_kind: str = ""
    boot_attempts: int = 0
    # "warm": the cached image was used; "cold": it (or its build root) was built first.
    image_start: str = ""
    # "restored": started from the snapshot of its image's first boot; "cold": the
    # kernel booted. `start_reason` says which snapshot, or why none was used.
    start: str = ""
    start_reason: str = ""
    timings: Timings = field(default_factory=Timings)
    build: BuildCounts = field(default_factory=BuildCounts)
    drivers: list[DriverResult] = field(default_factory=list)
    kernel_reports: list[dict] = field(default_factory=list)

    def settle(self) -> None:
        """Status from the parts: error beats fail beats pass."""
        if self.error:
            self.status = ERROR
        elif self.drivers and all(d.passed for d in self.drivers):
            self.status = PASS
        else:
            self.status = FAIL


@dataclass
class RunResult:
    run_id: str
    started: str
    host: dict
    finished: str = ""
    status: str = FAIL
    fuzz: dict = field(default_factory=dict)
    guests: list[GuestResult] = field(default_factory=list)
    bench: dict | None = None   # `mmap-harness bench` only (harness/bench.py)

    def settle(self) -> None:
        self.status = PASS if self.guests and all(g.status == PASS for g in self.guests) else FAIL

    def to_json(self) -> dict:
        data = {"schema": SCHEMA, **asdict(self)}
        if data["bench"] is None:
            del data["bench"]
        return data


def report_dict(report) -> dict:
    """A watcher.KernelReport as results.json keeps it."""
    return {"kind": report.kind, "fatal": report.fatal, "first_line": report.first_line,
            "at_s": report.at_s, "text": report.text}


def write_json(run: RunResult, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run.to_json(), indent=2) + "\n")
    tmp.replace(path)  # readers never see half a file


JUNIT_LOG_LINES, JUNIT_LOG_CHARS = 40, 4000  # each log excerpt in a JUnit failure
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_junit(run: RunResult, path: Path) -> None:
    """JUnit XML as GitLab and Jenkins read it: one testsuite per guest
    (`<guest>-<flavour>`), in it a testcase `boot` (classname the guest), and per
    driver a testcase `load` and one per workload (classname `<guest>.<driver>`,
    name the workload). A failure or error carries the message, then the tail of
    the guest's console.log and of its dmesg.txt (beside `path`, bounded)."""
    suites = ET.Element("testsuites", name=f"mmap-harness {run.run_id}")
    for g in run.guests:
        guest = f"{g.name}-{g.flavour}"
        suite = ET.SubElement(suites, "testsuite", name=guest,
                              time=f"{g.timings.total_s:.3f}")
        cases = _cases(g)
        logs = _guest_logs(path.parent / (g.dir or guest)) if any(
            c[3] not in OK for c in cases) else ""
        for classname, name, seconds, status, message, output in cases:
            case = ET.SubElement(suite, "testcase", classname=classname, name=name,
                                 time=f"{seconds:.3f}")
            text = _xml_text(message + logs)
            if status in (FAIL, KERNEL_CRASH):
                ET.SubElement(case, "failure", message=_xml_text(f"{status}: {message}")[:500],
                              type=status).text = text
            elif status == ERROR:
                ET.SubElement(case, "error", message=_xml_text(message)[:500],
                              type=status).text = text
            if status == WARN:     # JUnit has no warnings: the case passes and says why
                output = f"{status}: {message}\n{output}"
            if output:
                ET.SubElement(case, "system-out").text = _xml_text(output)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c[3] in (FAIL, KERNEL_CRASH) for c in cases)))
        suite.set("errors", str(sum(c[3] == ERROR for c in cases)))
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _cases(g: GuestResult) -> list[tuple[str, str, float, str, str, str]]:
    guest = f"{g.name}-{g.flavour}"
    cases = [(guest, "boot", g.timings.boot_to_ssh_s, ERROR if g.error else PASS, g.error, "")]
    for d in g.drivers:
        load_status = PASS if d.loaded and not d.error else FAIL
        cases.append((f"{guest}.{d.name}", "load", g.timings.load_s, load_status, d.error, ""))
        for w in d.workloads:
            cases.append((f"{guest}.{d.name}", w.name, w.seconds, w.status, w.message,
                          json.dumps(w.metrics, indent=1) if w.metrics else ""))
    return cases


def _guest_logs(guest_dir: Path) -> str:
    """The console's and the kernel log's last lines, as a failure shows them."""
    parts = []
    for name, what in (("console.log", "console tail"), ("dmesg.txt", "dmesg excerpt")):
        tail = _tail(guest_dir / name)
        if tail:
            parts.append(f"\n\n--- {what} ({name}) ---\n{tail}")
    return "".join(parts)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4 * JUNIT_LOG_CHARS))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = text.replace("\r\n", "\n").splitlines()[-JUNIT_LOG_LINES:]
    return "\n".join(lines)[-JUNIT_LOG_CHARS:]


def _xml_text(s: str) -> str:
    """Without the characters XML 1.0 forbids (a console has escapes and NULs)."""
    return _XML_ILLEGAL.sub("\ufffd", s)


def table(run: RunResult) -> str:
    """The summary printed at the end of a run."""
    rows = [("guest", "kernel", "accel", "driver", "workload", "status", "seconds", "figures")]
    for g in run.guests:
        if not g.drivers:
            rows.append((f"{g.name}/{g.flavour}", g.kernel_release or "-", g.accel or "-",
                         "-", "-", g.status, "-", g.error.splitlines()[0][:60] if g.error else ""))
        for d in g.drivers:
            for w in d.workloads or [WorkloadResult("(none)", ERROR, message=d.error)]:
                rows.append((f"{g.name}/{g.flavour}", g.kernel_release, g.accel, d.name,
                             w.name, w.status, f"{w.seconds:.2f}", _figures(w)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for g in run.guests:
        t = g.timings
        reused = f" ({g.build.reused} reused)" if g.build.reused else ""
        lines.append(f"{g.name}/{g.flavour}: image {t.image_s:.1f}s, boot-to-SSH "
                     f"{t.boot_to_ssh_s:.1f}s ({g.start or 'no'} start), build {t.build_s:.1f}s{reused}, "
                     f"load {t.load_s:.1f}s, "
                     f"workloads {t.workloads_s:.1f}s, shutdown {t.shutdown_s:.1f}s, "
                     f"whole loop {t.total_s:.1f}s ({g.accel}, cpu {g.cpu_model})")
    lines.append(f"run {run.run_id}: {run.status.upper()}")
    return "\n".join(lines)


def _figures(w: WorkloadResult) -> str:
    if w.status != PASS:
        return w.message.splitlines()[0][:70] if w.message else ""
    figures = {k: v for k, v in w.metrics.items() if k not in ("checks", "failed")}
    ratios = {k: v for k, v in figures.items() if "ratio" in k}
    shown = ratios or dict(list(figures.items())[:3])
    return ", ".join(f"{k}={v}" for k, v in shown.items())
