"""Progress lines on stderr for the long steps (image builds, boots)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints `[stage] message` lines; `tick` reports a step still running."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.start = time.monotonic()

    def say(self, stage: str, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.start
            # One write per line: guests run in parallel (`run --jobs`) share the stream.
            self.stream.write(f"[{elapsed:6.1f}s] {stage:<7} {message}\n")
            self.stream.flush()

    def ticker(self, stage: str, what: str):
        def tick(seconds: float) -> None:
            self.say(stage, f"{what}: still running ({seconds:.0f}s)")
        return tick
