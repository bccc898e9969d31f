"""Static checks on every module build: sparse through Kbuild (C=2), its
findings in the module's own sources a `harness:sparse` row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.linux import sparse

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
    assert (row.name, row.status, row.metrics) == ("harness:sparse", "fail", {"warnings": 2})
    assert sparse.verdict("  CHECK   /build/mydrv/mydrv.c\n", "/build/mydrv").status == "pass"


@pytest.mark.integration
def test_a_vendor_driver_sparse_faults_gets_a_failing_row(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--driver-dir", str(FIXTURE),
                        "--device", "/dev/sparse_dirty", "--workload", str(FIXTURE / "poke.c"),
                        "--results", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stdout + r.stderr
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir() and not d.is_symlink()]
    (driver,) = json.loads((run_dir / "results.json").read_text())["guests"][0]["drivers"]
    rows = {w["name"]: w for w in driver["workloads"]}
    assert rows["harness:sparse"]["status"] == "fail"
    assert "different address spaces" in rows["harness:sparse"]["message"]
    assert rows["poke"]["status"] == "pass"          # it works; sparse still objects
    assert "sparse_dirty.c:" in rows["harness:sparse"]["message"]
