"""Bad input ends in one clear message and exit status 2, never a traceback."""

import subprocess
import sys

import pytest


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (["run", "--guest", "debian-potato"], "unknown guest 'debian-potato'"),
    (["run", "--driver", "nope"], "unknown driver(s) nope"),
    (["run", "--timeout-scale", "0"], "--timeout-scale and --workload-timeout must be positive"),
    (["images", "build", "--guest", "../etc"], "unknown guest '../etc'"),
    (["run", "--driver-dir", "tests/fixtures/thirdparty_ring"], "needs at least one --workload"),
    (["run", "--module-param", "pages=1"], "go with --driver-dir"),
    (["run", "--driver-dir", "/nonexistent", "--workload", "tests/fixtures/thirdparty_ring/"
      "tp_ring_check.c"], "no such directory"),
    (["bench", "--parallel", "2"], "--parallel 2 with 1 guest(s): nothing to run at once"),
    (["bench", "--parallel", "2", "--guest", "debian-bookworm", "--guest", "debian-trixie",
      "--rounds", "0"], "--rounds must be 1..50"),
])
def test_bad_input_is_explained(args, words, tmp_path):
    r = harness(*args, *(["--results", str(tmp_path)] if args[0] in ("run", "bench") else []))
    assert r.returncode == 2, r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr
    assert "what to do:" in r.stderr
