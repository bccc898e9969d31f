"""Running a workload in the guest and reading its verdict.

A workload is a static program. It passes when it exits 0; the last line of
its stdout that is a JSON object becomes its metrics (`ok: false` fails it,
`error` becomes the message).
"""

from __future__ import annotations

import json

from .results import FAIL, PASS, WorkloadResult  # noqa: F401 (re-exported)
from .ssh import GuestSSH

REMOTE_DIR = "/tmp/mmap-harness"


def parse_metrics(stdout: str) -> dict | None:
    """The last JSON object printed on a line of its own, or None."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def verdict(name: str, exit_status: int, stdout: str, stderr: str,
            seconds: float) -> WorkloadResult:
    metrics = parse_metrics(stdout) or {}
    message = str(metrics.pop("error", "")) if metrics else ""
    ok_flag = metrics.pop("ok", True)
    if exit_status == 0 and ok_flag is not False:
        return WorkloadResult(name, PASS, metrics, message, seconds)
    if not message:
        tail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
        how = "killed by a signal" if exit_status < 0 else f"exit {exit_status}"
        message = f"{how}: {' | '.join(tail)}" if tail else how
    return WorkloadResult(name, FAIL, metrics, message, seconds)


def run(ssh: GuestSSH, name: str, argv: list[str], timeout: float) -> tuple[WorkloadResult, str]:
    """Run `argv` in the guest; returns the verdict and the raw output to keep.

    A workload that overruns `timeout` raises CommandTimeout: the guest may
    be hung, and the caller decides what that means.
    """
    r = ssh.run(argv, timeout=timeout)
    output = f"$ {r.command}\n{r.stdout}" + (f"--- stderr ---\n{r.stderr}" if r.stderr else "")
    return verdict(name, r.exit_status, r.stdout, r.stderr, r.seconds), output
