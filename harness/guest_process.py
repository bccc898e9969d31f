"""One guest of a `run --jobs N`, in a process of its own (see harness/parallel.py):

    python -m harness.guest_process JOB OUT

It runs the guest as a serial run does, with the same stop-signal handlers,
and writes its results, and what stopped it if anything did, to OUT.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from .errors import ConfigError, HostError, Interrupted, why_stopped
from .parallel import GuestOutcome, read_job, write_outcome
from .procs import unwind_on_stop_signals
from .progress import Progress


def main(argv: list[str]) -> int:
    unwind_on_stop_signals()
    job_path, out_path = (Path(a) for a in argv)
    job = read_job(job_path)
    progress = Progress(quiet=job.quiet)
    progress.start = job.progress_start
    run = job.runner(job.opts, job.definition, job.run_dir, job.result, progress)
    outcome = GuestOutcome(run.result)
    try:
        run.run()
    except KeyboardInterrupt as e:
        outcome.stop = Interrupted(why_stopped(e))
    except (ConfigError, HostError, Interrupted) as e:
        outcome.stop = e
    except Exception as e:   # a harness bug: the traceback is for its report
        traceback.print_exc()
        run.result.error, run.result.error_kind = f"harness error: {e!r}", "infra"
        run.result.settle()
    finally:
        write_outcome(out_path, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
