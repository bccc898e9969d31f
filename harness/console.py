"""The guest's serial console: drained on a thread into console.log.

QEMU blocks when nobody reads its serial output, so a reader thread keeps
draining the pexpect child whatever the rest of the harness is doing. Other
parts wait for a pattern, take the tail for an error message, or subscribe
to whole lines (the kernel-message watcher does). Text can be typed into
the console too (a guest reached through its serial login).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pexpect

LineListener = Callable[[str], None]


class Console:
    """Reads everything QEMU prints (serial console and its own stderr)."""

    def __init__(self, child: pexpect.spawn, log_path: Path) -> None:
        self._child = child
        self._log = log_path.open("ab", buffering=0)
        self._text: list[str] = []
        self._partial = ""
        self._cond = threading.Condition()
        self._listeners: list[LineListener] = []
        self._eof = False
        self._thread = threading.Thread(target=self._drain, name="console", daemon=True)
        self.started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def subscribe(self, listener: LineListener) -> None:
        with self._cond:
            self._listeners.append(listener)

    @property
    def eof(self) -> bool:
        return self._eof

    def text(self) -> str:
        with self._cond:
            return "".join(self._text) + self._partial

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def position(self) -> int:
        """How much text the console has shown so far: a `since` for wait_for."""
        return len(self.text())

    def send(self, text: str) -> None:
        """Type `text` into the guest's serial console."""
        self._child.send(text.encode())

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float,
                 since: int = 0) -> re.Match[str] | None:
        """The first match of `pattern` in the console text from offset
        `since` on (match positions are relative to it), or None on
        timeout/EOF."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = regex.search(("".join(self._text) + self._partial)[since:])
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    return None
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self._thread.join(timeout=5)
        self._log.close()

    def _drain(self) -> None:
        while True:
            try:
                data = self._child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                break
            self._log.write(data)
            self._feed(data.decode("utf-8", "replace").replace("\r", ""))
        with self._cond:
            self._eof = True
            if self._partial:
                self._emit([self._partial])
                self._text.append(self._partial)
                self._partial = ""
            self._cond.notify_all()

    def _feed(self, chunk: str) -> None:
        with self._cond:
            pieces = (self._partial + chunk).split("\n")
            self._partial = pieces.pop()
            lines = [p + "\n" for p in pieces]
            self._text.extend(lines)
            self._emit([line.rstrip("\n") for line in lines])
            self._cond.notify_all()

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            for listener in self._listeners:
                listener(line)
