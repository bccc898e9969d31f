"""Issue-3 behaviour: every templated driver on both kernels, and drivers that
are not the harness's own, built and run through --driver-dir.

These boot real guests (bookworm 6.1 and trixie 6.12) under the debug boot
options; nothing is faked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import drivers, plan
from harness.errors import ConfigError
from harness.render import render

FIXTURES = Path(__file__).parent / "fixtures"
GUESTS = ["debian-bookworm", "debian-trixie"]
TROUBLE = re.compile(r"WARNING:|BUG:|Oops|general protection fault|Kernel panic")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args],
                          capture_output=True, text=True, timeout=1800)


def load_results(results: Path) -> dict:
    (run_dir,) = [d for d in results.iterdir() if d.is_dir() and not d.is_symlink()]
    return json.loads((run_dir / "results.json").read_text()) | {"_dir": str(run_dir)}


def test_every_spec_renders_without_leftovers(tmp_path: Path):
    for spec in drivers.all_specs():
        src = render(spec, tmp_path) / f"{spec.name}.c"
        text = src.read_text()
        assert "{{" not in text and "{%" not in text
        assert f'#define MH_NAME\t\t"{spec.name}"' in text


def test_every_driver_refuses_private_and_exec_maps(tmp_path: Path):
    """No template's mmap is reachable but through the base's shared check, and
    every driver runs the workload that proves the refusals in the guest."""
    for spec in drivers.all_specs():
        text = (render(spec, tmp_path) / f"{spec.name}.c").read_text()
        assert ".mmap\t\t= mh_mmap_checked," in text, spec.name
        assert "refusals" in spec.workloads, spec.name


def test_every_spec_with_an_illumos_template_renders_for_illumos(tmp_path: Path):
    """The same specs render for illumos: the C source and its driver.conf,
    each naming the driver, nothing of jinja left. (Compiling them against
    illumos-gate is `mmap-harness illumos check`'s job; the install steps,
    the same for every driver, are tested in test_omnios.py.)"""
    specs = [s for s in drivers.all_specs() if "illumos" in s.families()]
    assert {s.template for s in specs} == {"umem", "remap", "fault", "dmabuf"}
    for spec in specs:
        out = render(spec, tmp_path, "illumos")
        source, conf = (out / f"{spec.name}{ext}" for ext in (".c", ".conf"))
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [source.name, conf.name, "mmap_harness.h"])
        for path in (source, conf):
            text = path.read_text()
            assert spec.name in text, path
            assert not re.search(r"\{\{|\{%|\{#|%\}|#\}", text), path
        c = source.read_text()
        assert f'#define\tMH_NAME\t\t"{spec.name}"' in c
        # Every map passes the base's checks (shared, never executable) first.
        assert "mh_segmap,\t\t/* segmap */" in c and "mh_devmap,\t\t/* devmap */" in c
        assert re.search(rf'^name="{spec.name}" parent="pseudo" instance=0\b', conf.read_text(),
                         re.M)
        for key, value in spec.all_params().items():
            assert f"{key}={value}" in conf.read_text()


@pytest.mark.integration
def test_all_drivers_pass_on_both_kernels(tmp_path: Path):
    args = [a for g in GUESTS for a in ("--guest", g)]
    r = run_cli(*args, "--results", str(tmp_path))
    data = load_results(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    specs = {s.name for s in drivers.all_specs()}
    assert {"mmap_umem", "mmap_remap", "mmap_fault", "mmap_dmabuf"} <= specs
    releases = {g["name"]: g["kernel_release"] for g in data["guests"]}
    assert releases["debian-bookworm"].startswith("6.1.")
    assert releases["debian-trixie"].startswith("6.12.")
    for g in data["guests"]:
        assert {d["name"] for d in g["drivers"]} == specs
        for d in g["drivers"]:
            own = [w for w in d["workloads"] if not w["name"].startswith("harness:")]
            assert len(own) >= 3, (g["name"], d["name"], own)
            assert all(w["status"] == "pass" for w in d["workloads"]), (g["name"], d)
            checks = {w["name"] for w in d["workloads"]}
            assert {"harness:counters", "harness:rmmod-busy", "harness:unload",
                    "harness:free-memory", "harness:dmesg-clean"} <= checks
        gdir = Path(data["_dir"]) / g["dir"]
        assert not TROUBLE.search((gdir / "dmesg.txt").read_text())
        assert "slub_debug=FZPU" in (gdir / "console.log").read_text()
        assert all((gdir / "src" / name / f"{name}.c").is_file() for name in specs)


@pytest.mark.integration
def test_third_party_driver_and_outside_workloads(tmp_path: Path):
    """A module with its own Makefile, a parameter and a workload of its own,
    and an outside workload run against the harness's remap driver."""
    args = [a for g in GUESTS for a in ("--guest", g)]
    r = run_cli(*args, "--driver-dir", str(FIXTURES / "thirdparty_ring"),
                "--module-param", "pages=8", "--device", "/dev/tp_ring",
                "--workload", str(FIXTURES / "thirdparty_ring" / "tp_ring_check.c"),
                "--results", str(tmp_path / "byo"))
    assert r.returncode == 0, r.stdout + r.stderr
    for g in load_results(tmp_path / "byo")["guests"]:
        (d,) = g["drivers"]
        assert d["name"] == "thirdparty_ring" and d["loaded"]
        check = next(w for w in d["workloads"] if w["name"] == "tp_ring_check")
        assert check["status"] == "pass" and check["metrics"]["pages"] == 8

    r = run_cli(*args, "--driver", "mmap_remap",
                "--workload", str(FIXTURES / "outside_workloads" / "outside_remap_rw.c"),
                "--results", str(tmp_path / "outside"))
    assert r.returncode == 0, r.stdout + r.stderr
    for g in load_results(tmp_path / "outside")["guests"]:
        outside = next(w for w in g["drivers"][0]["workloads"]
                       if w["name"] == "outside_remap_rw")
        assert outside["status"] == "pass" and outside["metrics"]["bytes"] > 0


def test_driver_dir_input_is_checked(tmp_path: Path):
    with pytest.raises(ConfigError, match="no Makefile or Kbuild"):
        plan.external_driver(tmp_path, [], [], None)
    (tmp_path / "Makefile").write_text("all:\n")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        plan.external_driver(tmp_path, ["pages"], [], None)
    with pytest.raises(ConfigError, match="expected a path under /dev"):
        plan.external_driver(tmp_path, [], [], "/etc/passwd")
    with pytest.raises(ConfigError, match="not a C source file"):
        plan.extra_workloads([tmp_path / "Makefile"])


@pytest.mark.integration
def test_a_module_that_does_not_compile_is_reported(tmp_path: Path):
    r = run_cli("--driver-dir", str(FIXTURES / "broken_build"),
                "--workload", str(FIXTURES / "thirdparty_ring" / "tp_ring_check.c"),
                "--results", str(tmp_path))
    assert r.returncode == 1
    assert "undeclared_on_purpose" in r.stderr and "Traceback" not in r.stderr
    data = load_results(tmp_path)
    guest = data["guests"][0]
    assert guest["status"] == "error" and "failed to compile" in guest["error"]
    assert guest["error_kind"] == "build"   # the driver's failure, not the harness's
    log = Path(data["_dir"]) / guest["dir"] / "build" / "logs" / "broken_build.log"
    assert "undeclared_on_purpose" in log.read_text()
    assert (Path(data["_dir"]) / guest["dir"] / "console.log").stat().st_size > 0


@pytest.mark.integration
def test_fuzz_seed_is_recorded_and_replays(tmp_path: Path):
    """The same seed makes the same calls: the fuzz figures repeat exactly."""
    figures = []
    for attempt in ("first", "again"):
        r = run_cli("--driver", "mmap_remap", "--fuzz-seed", "424242", "--fuzz-ops", "3000",
                    "--results", str(tmp_path / attempt))
        assert r.returncode == 0, r.stdout + r.stderr
        data = load_results(tmp_path / attempt)
        assert data["fuzz"] == {"seed": 424242, "ops": 3000}
        (fuzz,) = [w for w in data["guests"][0]["drivers"][0]["workloads"]
                   if w["name"] == "fuzz"]
        assert fuzz["metrics"]["seed"] == 424242
        figures.append({k: fuzz["metrics"][k] for k in ("mmaps_ok", "ioctls_ok")})
    assert figures[0] == figures[1]
