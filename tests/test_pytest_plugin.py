"""The pytest plugin as its users use it: test files outside the project, run
by a pytest of their own, on real guests (nothing here is faked).

- the README's example file, copied out exactly, passes on two guests, and
  under pytest-xdist with two workers;
- a kernel crash fails the test that was running with the kernel's report,
  and the next test gets a freshly booted guest;
- a failing test's report carries the console, the kernel log since the test
  began and the driver sources.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
GUESTS = ["debian-bookworm", "debian-trixie"]


def readme_example() -> tuple[str, str]:
    """(file name, text) of the README's complete example test file."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- example: (\S+) -->\n```python\n(.*?)```\n", readme, re.S)
    assert m, "the README lost its example test file"
    return m.group(1), m.group(2)


def run_pytest(where: Path, request: pytest.FixtureRequest, *args: str,
               timeout: float = 1200) -> tuple[subprocess.CompletedProcess, dict[str, ET.Element]]:
    """A user's pytest in `where` (no ini file, no conftest: the plugin comes
    from the installed package); returns its output and its JUnit test cases."""
    junit = where / "junit.xml"
    options = [f"--mmap-cache-dir={request.config.getoption('--mmap-cache-dir') or ''}"] \
        if request.config.getoption("--mmap-cache-dir") else []
    options.append(f"--mmap-accel={request.config.getoption('--mmap-accel')}")
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
                        f"--junitxml={junit}", *options, *args],
                       cwd=where, capture_output=True, text=True, timeout=timeout)
    cases = {c.get("name", ""): c for c in ET.parse(junit).iter("testcase")} \
        if junit.exists() else {}
    return r, cases


@pytest.mark.integration
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist-2"])
def test_readme_example_passes_on_two_guests(workers: list[str], tmp_path: Path,
                                             request: pytest.FixtureRequest):
    name, text = readme_example()
    elsewhere = tmp_path / "my-driver-tests"
    elsewhere.mkdir()
    (elsewhere / name).write_text(text)
    r, cases = run_pytest(elsewhere, request, name, *workers,
                          *(a for g in GUESTS for a in ("--mmap-guest", g)))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    expected = {f"{t}[{g}]" for t in ("test_remap_driver_maps_and_unloads_clean",
                                      "test_fault_driver_faults_lazily") for g in GUESTS}
    assert set(cases) == expected
    assert all(len(c) == 0 or c[0].tag in ("system-out", "system-err")
               for c in cases.values())   # no failure, error or skip element
    if workers:   # both workers ran tests, each on guests of its own
        assert "[gw0] " in r.stdout and "[gw1] " in r.stdout, r.stdout[-3000:]


CRASHING = '''
from pathlib import Path

FIXTURES = Path({fixtures!r})


def test_1_kernel_crash(guest, kmod):
    mod = kmod(FIXTURES / "bad_warn", device="/dev/bad_warn")
    guest.run_c(FIXTURES / "bad_probe.c", mod.device)


def test_2_next_test_gets_a_fresh_guest(guest, kmod):
    mod = kmod("mmap_remap")
    assert guest.run_c("pattern", mod.device).ok
    assert all(v.passed for v in mod.unload())


def test_3_a_plain_failure_reports_what_the_kernel_saw(guest, kmod):
    mod = kmod(FIXTURES / "thirdparty_ring", {{"pages": 8}}, device="/dev/tp_ring")
    run = guest.run_c(FIXTURES / "thirdparty_ring" / "tp_ring_check.c", mod.device)
    assert run.json["pages"] == 7, "wrong on purpose"


def test_4_a_leak_shows_though_the_program_came_after_the_load(guest, kmod):
    mod = kmod(FIXTURES / "bad_leak", device="/dev/bad_leak")
    guest.run_c(FIXTURES / "bad_probe.c", mod.device)   # uploaded while loaded: not the leak
    verdicts = {{v.name: v for v in mod.unload()}}
    lost = verdicts["harness:free-memory"].metrics["lost_kib"]
    assert not verdicts["harness:free-memory"].passed and lost > 4096, "leaked, but not seen"
'''


@pytest.mark.integration
def test_a_crash_fails_its_test_and_the_next_test_runs_on_a_fresh_guest(
        tmp_path: Path, request: pytest.FixtureRequest):
    (tmp_path / "test_crash.py").write_text(CRASHING.format(fixtures=str(FIXTURES)))
    r, cases = run_pytest(tmp_path, request, "test_crash.py", "--mmap-guest", GUESTS[0],
                          timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-6000:]
    crashed = cases[f"test_1_kernel_crash[{GUESTS[0]}]"].find("failure")
    assert crashed is not None, out[-6000:]
    report = crashed.text or ""
    assert re.search(r"WARNING: CPU: \d+ PID: \d+ at .*bad_warn_mmap", report), report
    assert "Call Trace" in report and "the guest kernel crashed" in report
    assert len(cases[f"test_2_next_test_gets_a_fresh_guest[{GUESTS[0]}]"]) == 0 or \
        cases[f"test_2_next_test_gets_a_fresh_guest[{GUESTS[0]}]"][0].tag == "system-err", out

    leak = cases[f"test_4_a_leak_shows_though_the_program_came_after_the_load[{GUESTS[0]}]"]
    assert leak.find("failure") is None and leak.find("error") is None, out[-6000:]

    plain = cases[f"test_3_a_plain_failure_reports_what_the_kernel_saw[{GUESTS[0]}]"]
    assert plain.find("failure") is not None and "wrong on purpose" in out
    # The report sections of test 3, in pytest's own failure output.
    section = out[out.index("test_3_a_plain_failure_reports"):]
    assert re.search(r"mmap-harness debian-bookworm: console .* since the test began", section)
    kernel_log = re.search(r"mmap-harness debian-bookworm: kernel log since the test began "
                           r"-+\n(.*?)\n-{5,}", section, re.S)
    assert kernel_log, section[:4000]
    assert kernel_log.group(1).splitlines()[0].endswith(
        "mmap-harness: test test_crash.py::test_3_a_plain_failure_reports_what_the_kernel_saw"
        f"[{GUESTS[0]}]")
    assert "tp_ring" in kernel_log.group(1)
    assert re.search(rf"driver sources -+\ntp_ring: {re.escape(str(FIXTURES / 'thirdparty_ring'))}",
                     section)


def test_an_unknown_guest_fails_its_tests_with_what_to_do(tmp_path: Path,
                                                          request: pytest.FixtureRequest):
    (tmp_path / "test_typo.py").write_text(
        "import pytest\n\n\n"
        "@pytest.mark.mmap_guest('debian-bookwrom')\n"
        "def test_it(guest):\n    pass\n")
    r, cases = run_pytest(tmp_path, request, "test_typo.py")
    assert r.returncode == 1
    error = cases["test_it[debian-bookwrom]"].find("error")
    assert error is not None
    assert "unknown guest 'debian-bookwrom'" in error.get("message", "")
    assert "choose one of: " in r.stdout and "Traceback" not in r.stdout
