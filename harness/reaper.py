"""`python -m harness.reaper CMD...`: run CMD so that its whole tree dies with the harness.

PR_SET_PDEATHSIG reaches only a direct child: debootstrap's own children
(dpkg in a chroot, wget) would outlive a SIGKILLed harness. The reaper is
started as the leader of a new process group, runs CMD inside that group,
and asks for SIGTERM when its parent dies; on that signal it kills the
whole group, itself included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from .procs import set_parent_death_signal


def _kill_group(_signum: int, _frame: FrameType | None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m harness.reaper CMD [ARG...]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _kill_group)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() == 1:  # the harness died before the signal was armed
        return 1
    try:
        return subprocess.call(argv)
    except FileNotFoundError:
        print(f"reaper: {argv[0]}: command not found", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
