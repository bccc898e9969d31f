"""Static checks on every module build: sparse through Kbuild (C=2), its
findings in the module's own sources a `harness:sparse` row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.linux import sparse
from harness.results import strictly

FIXTURE = Path(__file__).parent / "fixtures" / "sparse_dirty"

LOG = """\
$ cd /build/mydrv && make -C /lib/modules/6.1.0-50-cloud-amd64/build M=/build/mydrv C=2 modules
  CC [M]  /build/mydrv/mydrv.o
  CHECK   /build/mydrv/mydrv.c
/build/mydrv/mydrv.c:17:29: warning: incorrect type in argument 1 (different address spaces)
/build/mydrv/mydrv.c:17:29:    expected void [noderef] __user *to
./include/linux/compiler_types.h:1:2: warning: a kernel header's own noise
/build/mydrv/mydrv.c:17:29: warning: incorrect type in argument 1 (different address spaces)
/build/mydrv/sub/helper.h:3:1: error: bad constant expression
"""


def test_only_the_module_s_own_findings_count_once_each():
    assert sparse.findings(LOG, "/build/mydrv") == [
        "/build/mydrv/mydrv.c:17:29: warning: incorrect type in argument 1 "
        "(different address spaces)",
        "/build/mydrv/sub/helper.h:3:1: error: bad constant expression"]
    assert sparse.findings(LOG, "/build/other") == []
    row = sparse.verdict(LOG, "/build/mydrv")
    assert (row.name, row.status, row.metrics) == ("harness:sparse", "warn", {"warnings": 2})
    assert row.message.splitlines()[0] == ("sparse: 2 finding(s), first mydrv.c:17:29: warning: "
                                           "incorrect type in argument 1 (different address "
                                           "spaces)")
    assert row.passed and strictly(row).status == "fail" and not strictly(row).passed
    assert sparse.verdict("  CHECK   /build/mydrv/mydrv.c\n", "/build/mydrv").status == "pass"


def sparse_dirty_run(results: Path, *more: str) -> tuple[int, dict[str, dict]]:
    """(exit status, the driver's rows by name) of a run of the fixture."""
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--driver-dir", str(FIXTURE),
                        "--device", "/dev/sparse_dirty", "--workload", str(FIXTURE / "poke.c"),
                        "--results", str(results), *more],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    (driver,) = json.loads((results / "latest" / "results.json").read_text()
                           )["guests"][0]["drivers"]
    return r.returncode, {w["name"]: w for w in driver["workloads"]}


@pytest.mark.integration
def test_a_vendor_driver_sparse_faults_warn_and_fail_only_when_strict(tmp_path: Path):
    status, rows = sparse_dirty_run(tmp_path / "default")
    assert status == 0, rows                 # it works; sparse objects, the run still passes
    assert rows["harness:sparse"]["status"] == "warn"
    assert "different address spaces" in rows["harness:sparse"]["message"]
    assert "sparse_dirty.c:" in rows["harness:sparse"]["message"]
    assert rows["poke"]["status"] == "pass"

    status, rows = sparse_dirty_run(tmp_path / "strict", "--strict-sparse")
    assert status == 1, rows
    assert rows["harness:sparse"]["status"] == "fail"
    assert rows["poke"]["status"] == "pass"
