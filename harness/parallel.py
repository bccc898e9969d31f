"""`run --jobs N`: guests at once, each in a process of its own.

A process, not a thread, because a process can be stopped whole: a signal
unwinds it with the same handlers as a serial run's Ctrl-C (QEMU stopped and
reaped, results kept), whereas an exception forced into a thread lands
wherever that thread happens to be, in a lock or in the thread pool's own
code. Each guest's process has a process group of its own, so a terminal's
Ctrl-C reaches the run's process alone, which passes it on once; if the
run's process dies, the kernel sends its guests' processes SIGTERM
(PR_SET_PDEATHSIG) and they unwind too.

The run's process writes each guest's job to a file (the module search path,
then a pickled GuestJob); the guest's process, `python -m
harness.guest_process JOB OUT`, writes a pickled GuestOutcome to OUT.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Interrupted, why_stopped
from .procs import kill_group, set_parent_death_signal, stop_signals_held
from .results import GuestResult

# A guest's process told to stop has this long (times --timeout-scale) to
# reap its QEMU and write its results, before its process group is killed.
UNWIND_S = 120.0
POLL_S = 0.1
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class GuestJob:
    """What a guest's process needs to build its GuestRun (the class is
    pickled by reference, so a subclass must live at a module's top level)."""

    runner: type
    opts: Any               # session.RunOptions
    definition: Any         # guests.GuestDefinition
    run_dir: Path
    result: GuestResult
    progress_start: float   # the run's Progress clock: CLOCK_MONOTONIC is system-wide
    quiet: bool


@dataclass
class GuestOutcome:
    result: GuestResult
    stop: BaseException | None = None   # ConfigError, HostError or Interrupted: ends the run


def write_outcome(path: Path, outcome: GuestOutcome) -> None:
    """Written whole or not at all, even if a stop signal arrives meanwhile."""
    with stop_signals_held():
        part = path.with_suffix(".part")
        part.write_bytes(pickle.dumps(outcome))
        part.rename(path)


def read_job(path: Path) -> GuestJob:
    with path.open("rb") as f:
        sys.path[:] = pickle.load(f)   # where the runner's class is importable from
        job = pickle.load(f)
    assert isinstance(job, GuestJob)
    return job


class GuestProcess:
    """One guest's process, from its start to its reaping."""

    def __init__(self, job: GuestJob, scratch: Path, name: str) -> None:
        self.result = job.result
        self.job_path = scratch / f"{name}.job"
        self.out_path = scratch / f"{name}.out"
        with self.job_path.open("wb") as f:
            pickle.dump(sys.path, f)
            pickle.dump(job, f)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": str(_PACKAGE_ROOT) + (os.pathsep + path if path else "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.guest_process", str(self.job_path),
             str(self.out_path)], stdin=subprocess.DEVNULL, env=env, preexec_fn=_own_group)

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)

    def reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid)   # its QEMU dies with it (PR_SET_PDEATHSIG)
            self.proc.wait()

    def outcome(self) -> GuestOutcome:
        try:
            outcome = pickle.loads(self.out_path.read_bytes())
            assert isinstance(outcome, GuestOutcome)
            return outcome
        except FileNotFoundError:
            status = self.proc.returncode
            how = (f"was killed by {signal.Signals(-status).name}" if status < 0
                   else f"exited with status {status}")
            self.result.error = (f"the guest's process {how} before it wrote its results "
                                 "(its messages are above)")
            self.result.error_kind = "infra"
            self.result.settle()
            return GuestOutcome(self.result)


def run_guests(jobs: Sequence[GuestJob], at_once: int, timeout_scale: float,
               ended: Callable[[int, GuestResult], None]) -> None:
    """Run each job's guest in a process, at most `at_once` at a time;
    `ended(i, result)` is called as each one ends, however it ends. What
    stopped a guest (ConfigError, HostError, Interrupted), or a signal to
    this process, stops the others, waits for them, and is raised here."""
    with tempfile.TemporaryDirectory(prefix="mmap-harness-jobs-") as scratch:
        waiting = list(enumerate(jobs))
        running: dict[int, GuestProcess] = {}
        try:
            while waiting or running:
                while waiting and len(running) < at_once:
                    with stop_signals_held():   # never a started process left untracked
                        i, job = waiting.pop(0)
                        running[i] = GuestProcess(job, Path(scratch), str(i))
                time.sleep(POLL_S)
                for i, child in list(running.items()):
                    if child.ended():
                        del running[i]
                        outcome = child.outcome()
                        ended(i, outcome.result)
                        if outcome.stop is not None:
                            raise outcome.stop
        except BaseException as e:
            for i, job in waiting:
                job.result.error = f"interrupted before it started: {why_stopped(e)}"
                job.result.error_kind = Interrupted.kind
                job.result.settle()
                ended(i, job.result)
            for child in running.values():
                child.interrupt()
            for i, child in running.items():
                child.reap(UNWIND_S * timeout_scale)
                ended(i, child.outcome().result)
            raise


def _own_group() -> None:
    """preexec_fn: a process group of its own (a terminal's Ctrl-C is passed
    on by the run's process, once), and SIGTERM if the run's process dies."""
    os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGTERM)
