"""`export --kcidb` and junit.xml, checked with the readers CI systems use:
kcidb-io's own schema validation (KCIDB v5.3) and junitparser's reading of the
Jenkins xunit plugin's junit-10.xsd flavour (junitparser.xunit2), plus the
rules of that schema that a reader does not enforce. No guest is booted: the
runs are made from harness.results' dataclasses."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import kcidb_io
import pytest
from junitparser import Error, Failure
from junitparser.xunit2 import JUnitXml

from harness import cli, kcidb, results

TRACE = ("BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
         "Oops: 0002 [#1] PREEMPT SMP NOPTI\nCall Trace:\n <TASK>\n bad_probe_mmap+0x1c/0x40")


def _run(crash: bool) -> results.RunResult:
    run = results.RunResult("20261123-185331-2280", "2026-11-23T18:53:31+00:00",
                            {"hostname": "vm", "kernel": "6.18", "python": "3.11.7",
                             "qemu": "QEMU 7.2", "cpus": 2},
                            finished="2026-11-23T18:54:23+00:00",
                            fuzz={"seed": 1688993660, "ops": 10000})
    g = results.GuestResult("debian-bookworm", "tiny", "debian-bookworm-tiny",
                            kernel_release="6.1.0-50-cloud-amd64", accel="tcg",
                            accel_reason="no /dev/kvm", cpu_model="qemu64",
                            compiler="gcc (Debian 12.2.0-14) 12.2.0",
                            kernel_compiler="gcc-12", boot_attempts=1,
                            timings=results.Timings(boot_to_ssh_s=5.9, build_s=11.3,
                                                    load_s=3.8, total_s=51.9))
    remap = results.DriverResult("mmap_remap", loaded=True, taint=12288,
                                 taint_flags=["O", "E"])
    remap.workloads = [results.WorkloadResult("pattern", "pass", {"ratio": 1.5}, "", 0.2),
                       results.WorkloadResult("fuzz", "pass", {"ops": 10000}, "", 1.4)]
    g.drivers.append(remap)
    if crash:
        bad = results.DriverResult("bad_probe", loaded=True, error="the guest died",
                                   error_kind="kernel-crash")
        bad.workloads = [results.WorkloadResult("bad.probe", "kernel-crash", {}, TRACE, 0.3),
                         results.WorkloadResult("oob", "fail", {}, "want EINVAL", 0.1),
                         results.WorkloadResult("never", "error", {}, "not run: guest dead")]
        g.drivers.append(bad)
    g.settle()
    run.guests.append(g)
    if crash:  # a second guest that never booted
        dead = results.GuestResult("debian-trixie", "tiny", "debian-trixie-tiny",
                                   error="no kernel output within 60s", error_kind="boot")
        dead.settle()
        run.guests.append(dead)
    run.settle()
    return run


def _run_dir(tmp_path: Path, crash: bool) -> Path:
    run = _run(crash)
    run_dir = tmp_path / run.run_id
    guest_dir = run_dir / "debian-bookworm-tiny"
    guest_dir.mkdir(parents=True)
    noise = "".join(f"[{i:5}.000000] line {i}\r\n" for i in range(500))
    (guest_dir / "console.log").write_text(noise + "\x1b[0m\x00" + TRACE + "\n")
    (guest_dir / "dmesg.txt").write_text(noise + "mmap_remap: loaded\n")
    results.write_json(run, run_dir / "results.json")
    results.write_junit(run, run_dir / "junit.xml")
    return run_dir


@pytest.mark.parametrize("crash", [False, True])
def test_kcidb_export_validates_with_kcidb_io(crash: bool, tmp_path: Path):
    data = kcidb.to_kcidb(_run(crash).to_json())
    kcidb_io.schema.V5_3.validate_exactly(data)     # the newest schema, exactly
    assert kcidb_io.schema.LATEST.is_valid(data)
    assert data["version"] == {"major": 5, "minor": 3}
    ids = [o["id"] for kind in ("checkouts", "builds", "tests") for o in data[kind]]
    assert len(ids) == len(set(ids)) and all(i.startswith("mmap_harness:") for i in ids)
    assert all(t["build_id"] in {b["id"] for b in data["builds"]} for t in data["tests"])
    tests = {t["path"]: t for t in data["tests"]}
    assert tests["mmap.mmap_remap.pattern"]["status"] == "PASS"
    assert tests["mmap.mmap_remap.pattern"]["duration"] == 0.2
    assert tests["mmap.mmap_remap.load"]["status"] == "PASS"
    env = tests["mmap.mmap_remap.pattern"]["environment"]
    assert env["misc"]["kernel_release"] == "6.1.0-50-cloud-amd64"
    assert env["misc"]["accel"] == "tcg" and "debian-bookworm" in env["comment"]
    build = next(b for b in data["builds"] if b["id"].endswith(":mmap_remap"))
    assert build["compiler"].startswith("gcc") and build["status"] == "PASS"
    if not crash:
        assert {t["status"] for t in data["tests"]} == {"PASS"}
        return
    crashed = tests["mmap.bad_probe.bad_probe"]          # "bad.probe": a path has one dot each
    assert crashed["status"] == "FAIL" and crashed["misc"]["harness_status"] == "kernel-crash"
    assert "Call Trace" in crashed["log_excerpt"]
    assert tests["mmap.bad_probe.oob"]["status"] == "FAIL"
    assert tests["mmap.bad_probe.never"]["status"] == "ERROR"
    assert tests["mmap.bad_probe.load"]["status"] == "FAIL"
    assert tests["mmap.boot"]["status"] == "FAIL"       # the guest that never booted
    assert "60s" in tests["mmap.boot"]["log_excerpt"]


def test_kcidb_status_names_cover_every_workload_status():
    assert {kcidb.STATUS[s] for s in (results.PASS, results.FAIL, results.ERROR,
                                      results.KERNEL_CRASH, "skipped")} == \
        {"PASS", "FAIL", "ERROR", "SKIP"}
    assert set(kcidb.STATUS.values()) <= set(kcidb_io.schema.V5_3.json["$defs"]["status"]["enum"])


def test_kcidb_excerpt_is_bounded_and_keeps_the_end():
    run = _run(True)
    run.guests[0].drivers[1].workloads[0].message = "x" * 40000 + "\nend of trace"
    data = kcidb.to_kcidb(run.to_json())
    kcidb_io.schema.V5_3.validate_exactly(data)
    excerpt = next(t for t in data["tests"] if t["path"] == "mmap.bad_probe.bad_probe")
    assert len(excerpt["log_excerpt"]) <= 16384 and excerpt["log_excerpt"].endswith("of trace")


def test_export_cli_writes_stdout_and_file(tmp_path: Path, capsys):
    run_dir = _run_dir(tmp_path, crash=True)
    assert cli.main(["export", "--kcidb", str(run_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    kcidb_io.schema.V5_3.validate_exactly(printed)
    out = tmp_path / "kcidb.json"
    assert cli.main(["export", "--kcidb", str(run_dir), "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == printed


@pytest.mark.parametrize("setup, words", [
    (lambda d: None, "is not a directory"),
    (lambda d: d.mkdir(), "has no results.json"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text("{half")), "cannot be read as JSON"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text("[1]")), "not an mmap-harness"),
    (lambda d: (d.mkdir(), (d / "results.json").write_text('{"run_id": "r", "guests": [{}]}')),
     "lacks what schema 1 has"),
])
def test_export_cli_refuses_what_is_not_a_run(setup, words, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    setup(run_dir)
    assert cli.main(["export", "--kcidb", str(run_dir)]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert words in err and "what to do:" in err and "Traceback" not in err


# junit-10.xsd (Jenkins xunit plugin; GitLab reads the same elements): what each
# element may hold and which attributes it must have.
_CHILDREN = {"testsuites": {"testsuite"},
             "testsuite": {"properties", "testcase", "system-out", "system-err"},
             "testcase": {"skipped", "error", "failure", "system-out", "system-err"}}
_REQUIRED = {"testsuite": {"name", "tests"}, "testcase": {"name"}}
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _check_junit_10(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    for el in root.iter():
        if el.tag in _CHILDREN:
            assert {c.tag for c in el} <= _CHILDREN[el.tag], el.tag
        assert _REQUIRED.get(el.tag, set()) <= set(el.attrib), el.tag
        if "time" in el.attrib:
            assert _DECIMAL.match(el.get("time")), el.get("time")
        for count in ("tests", "failures", "errors"):
            if count in el.attrib and el.tag == "testsuite":
                assert el.get(count).isdigit()
    for case in root.iter("testcase"):   # the order the schema's sequence asks
        order = [c.tag for c in case]
        assert order == sorted(order, key=["skipped", "error", "failure", "system-out",
                                           "system-err"].index)


@pytest.mark.parametrize("crash", [False, True])
def test_junit_one_case_per_guest_driver_workload(crash: bool, tmp_path: Path):
    run_dir = _run_dir(tmp_path, crash)
    path = run_dir / "junit.xml"
    _check_junit_10(ET.parse(path).getroot())
    xml = JUnitXml.fromfile(str(path))       # as a CI reader sees it
    cases = {(suite.name, case.classname, case.name): case
             for suite in xml for case in suite}
    run = _run(crash)
    for g in run.guests:
        guest = f"{g.name}-{g.flavour}"
        assert (guest, guest, "boot") in cases
        for d in g.drivers:
            assert (guest, f"{guest}.{d.name}", "load") in cases
            for w in d.workloads:
                assert (guest, f"{guest}.{d.name}", w.name) in cases
    assert len(cases) == sum(1 + sum(1 + len(d.workloads) for d in g.drivers)
                             for g in run.guests)
    for suite in xml:
        assert suite.tests == sum(1 for _ in suite)
    if not crash:
        assert all(case.is_passed for case in cases.values())
        return
    crash_case = cases[("debian-bookworm-tiny", "debian-bookworm-tiny.bad_probe", "bad.probe")]
    failure = crash_case.result[0]
    assert isinstance(failure, Failure) and failure.type == "kernel-crash"
    text = failure.text
    assert "Call Trace" in text
    assert "--- console tail (console.log) ---" in text and "line 499" in text
    assert "--- dmesg excerpt (dmesg.txt) ---" in text and "mmap_remap: loaded" in text
    assert "line 100 " not in text and len(text) < 2 * results.JUNIT_LOG_CHARS + len(TRACE) + 200
    assert "\x00" not in text and "\x1b" not in text
    never = cases[("debian-bookworm-tiny", "debian-bookworm-tiny.bad_probe", "never")]
    assert isinstance(never.result[0], Error)
    boot = cases[("debian-trixie-tiny", "debian-trixie-tiny", "boot")]
    assert isinstance(boot.result[0], Error) and "60s" in boot.result[0].text
