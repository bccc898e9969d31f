"""Commands run in a disposable layer over a read-only build root.

    host: unshare (mount, PID, network, IPC namespaces)
      -> python -m harness.sandbox_init JOB       PID 1 of the new namespaces
           tmpfs layer; overlay(lower = the root, read-only; upper = tmpfs)
           /proc, /dev nodes, the job's own directories bound in
           -> child: chroot, drop to the build user, chdir, exec the command

Whatever the command writes outside the directories bound writable lands in
the tmpfs and is gone when PID 1 exits; the kernel then also kills every
process still left in the PID namespace and drops every mount. So a Makefile
can rewrite /usr/src, delete headers or replace gcc: the cached root never
sees it, and two jobs never see each other's files.

The command runs as an unprivileged user with a normal PATH and HOME, and
`uname -r` answers the guest's kernel release, as on the machine the driver's
author builds on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field

from .errors import InfraError
from .procs import run_captured
from .sandbox_init import BUILD_GID, BUILD_UID, ERROR_MARKER, SETUP_FAILED

__all__ = ["BUILD_GID", "BUILD_UID", "Bind", "Job", "hand_over", "run"]

# unshare dies with the harness (PR_SET_PDEATHSIG), PID 1 with unshare
# (--kill-child), and every process of the namespace with PID 1.
UNSHARE = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
           "--kill-child=SIGKILL", "--net", "--ipc"]


@dataclass(frozen=True)
class Bind:
    """A host directory seen at `inside` in the sandbox."""

    host: str
    inside: str
    writable: bool = False


@dataclass(frozen=True)
class Job:
    root: str                   # the build root's tree: the overlay's lower layer
    argv: list[str]
    cwd: str = "/"              # inside the sandbox
    binds: list[Bind] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)   # on top of the normal ones
    as_root: bool = False       # run as root in the sandbox (still a throwaway layer)
    kernel_release: str = ""    # what `uname -r` answers; empty: the host's
    linux32: bool = False       # `uname -m` says i686, as on a 32-bit machine (Kbuild's ARCH)


def hand_over(tree: str | os.PathLike[str]) -> None:
    """Give `tree` (a host scratch directory, links not followed) to the build
    user, who writes a job's products there."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, BUILD_UID, BUILD_GID)


def run(job: Job, timeout: float = 600.0,
        cancel: threading.Event | None = None) -> subprocess.CompletedProcess[str]:
    """Run `job`; returns its exit status and combined output.

    InfraError when the sandbox itself could not be set up, so a broken host
    is never reported as the command's failure.
    """
    if shutil.which("unshare") is None:
        raise InfraError("unshare (util-linux) is not installed: builds cannot be isolated")
    for b in job.binds:
        if not os.path.isdir(b.host):
            raise InfraError(f"sandbox: {b.host} is not a directory")
    with tempfile.TemporaryDirectory(prefix="mmap-harness-layer-") as layer:
        # The tmpfs is mounted on `layer` only inside the new mount namespace:
        # on the host the directory stays empty.
        spec = json.dumps({"layer": layer, **asdict(job)})
        result = run_captured([*UNSHARE, sys.executable, "-m", "harness.sandbox_init", spec],
                              timeout=timeout, cancel=cancel, reap=False)
    if result.returncode == SETUP_FAILED and result.stdout.startswith(ERROR_MARKER):
        raise InfraError(result.stdout.splitlines()[0],
                         hint="not the command's fault: builds need root, util-linux's "
                              "unshare and overlayfs; a command missing from the build "
                              "root means the root is damaged (`mmap-harness images clean`)")
    return result


