"""Host subprocesses that can never outlive the harness.

Every child gets its own process group (so the whole tree can be killed)
and dies with the harness even when the harness is SIGKILLed: QEMU through
PR_SET_PDEATHSIG, commands with children of their own (debootstrap, make)
through harness.reaper, which takes their whole group down.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from .errors import Interrupted

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


# What stops the harness (the CLI turns each into an orderly unwinding).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold the stop signals until the block ends, then deliver them: some
    objects (qemu.qmp's monitor and its asyncio loop) are left half-built,
    with a task pending that fails later, when an exception lands inside
    them. The Python handlers are swapped, not the thread's signal mask:
    the kernel may deliver a signal to any thread (the console reader's)."""
    if threading.current_thread() is not threading.main_thread():
        yield   # handlers can only be changed, and only run, in the main thread
        return
    held: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: held.append(signum))
           for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if held:
            signal.raise_signal(held[0])


def unwind_on_stop_signals() -> None:
    """Main thread: a stop signal raises KeyboardInterrupt (SIGINT) or
    Interrupted where the program is, which unwinds it (QEMU stopped and
    reaped, results written)."""
    for s in STOP_SIGNALS:
        signal.signal(s, _raise_interrupted)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    """The first stop signal unwinds the run; later ones (a terminal sends
    SIGHUP then SIGCONT and more; an impatient ^C) are ignored so that the
    unwinding, which reaps QEMU in seconds, is not cut short. SIGKILL still
    works, and QEMU dies with the harness then too (PR_SET_PDEATHSIG)."""
    for s in STOP_SIGNALS:   # Ctrl-C, kill, a dropped terminal
        signal.signal(s, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt   # as Python's own: no `except HarnessError` swallows it
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def die_with_parent() -> None:
    """preexec_fn: the kernel SIGKILLs this child when the harness dies."""
    set_parent_death_signal(signal.SIGKILL)


def reaped(cmd: list[str]) -> list[str]:
    """`cmd` run under harness.reaper, so its grandchildren die with us too."""
    return [sys.executable, "-m", "harness.reaper", *cmd]


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_logged(cmd: list[str], log: Path, *, env: dict[str, str] | None = None,
               tick: Callable[[float], None] = lambda _s: None,
               tick_every: float = 15.0) -> int:
    """Run `cmd` with its output appended to `log`; return the exit status.

    The whole process group is killed if the wait is interrupted.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(reaped(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while True:
                try:
                    return proc.wait(timeout=tick_every)
                except subprocess.TimeoutExpired:
                    tick(time.monotonic() - start)
        finally:
            if proc.returncode is None:
                kill_group(proc.pid)
                proc.wait()


def run_captured(cmd: list[str], *, env: dict[str, str] | None = None,
                 timeout: float = 600.0, cancel: threading.Event | None = None,
                 reap: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `cmd` to completion and return its combined output as text.

    Setting `cancel` (from another thread) kills it; so does the timeout,
    after which the output so far is returned with exit status -9.
    `reap=False` is for a command that takes its children down itself when
    it dies (unshare --kill-child): it only gets PR_SET_PDEATHSIG.
    """
    argv, preexec = (reaped(cmd), None) if reap else (cmd, die_with_parent)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True,
                            errors="replace", start_new_session=True, preexec_fn=preexec)
    deadline = time.monotonic() + timeout
    out = ""
    try:
        while True:
            try:
                out, _ = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                    kill_group(proc.pid)
                    out, _ = proc.communicate()
                    out += f"\n[mmap-harness: killed after {timeout:.0f}s or on cancel]\n"
                    break
    finally:
        if proc.returncode is None:
            kill_group(proc.pid)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)
