"""The image cache: entries published atomically under a lock.

An entry is a directory `<cache>/<kind>/<key>`. It is built in a temporary
sibling and renamed into place only when complete, so an interrupted or
failed build never leaves something that later counts as a good entry. A
second process building the same entry waits on the lock, then reuses it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import HostError

ENV_CACHE = "XDG_CACHE_HOME"


def default_cache_dir() -> Path:
    base = os.environ.get(ENV_CACHE) or str(Path.home() / ".cache")
    return Path(base) / "mmap-harness"


class Cache:
    """One cache directory; `kind` groups entries (roots, images, ...)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def entries(self, kind: str) -> list[Path]:
        d = self.root / kind
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def get_or_build(self, kind: str, key: str,
                     build: Callable[[Path], None],
                     waiting: Callable[[], None] = lambda: None,
                     needs_bytes: int = 0) -> Path:
        """Return the entry, building it with `build(tmpdir)` if absent."""
        final = self.path(kind, key)
        if final.is_dir():
            return final
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HostError(f"cannot create the cache directory {final.parent}: {e.strerror}",
                            hint="choose another with --cache-dir or fix its permissions") \
                from None
        self._check_space(final.parent, needs_bytes)
        lock = FileLock(str(final.parent / f".{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waiting()
            lock.acquire()
        try:
            if final.is_dir():  # built by the process we waited for
                return final
            self._remove_stale(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=final.parent))
            try:
                build(tmp)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final
        finally:
            lock.release()

    def remove(self, entry: Path) -> None:
        """Delete one entry under its lock, so no build or reader is cut short."""
        with FileLock(str(entry.parent / f".{entry.name}.lock")):
            shutil.rmtree(entry)

    @staticmethod
    def _remove_stale(final: Path) -> None:
        # We hold the lock: any temporary sibling is from a killed build.
        for stale in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    @staticmethod
    def _check_space(d: Path, needs_bytes: int) -> None:
        if not os.access(d, os.W_OK):
            raise HostError(f"cache directory {d} is not writable",
                            hint="choose another with --cache-dir or fix its permissions")
        free = shutil.disk_usage(d).free
        if free < needs_bytes:
            raise HostError(f"not enough space in {d}: {free // 2**20} MiB free, "
                            f"this build needs about {needs_bytes // 2**20} MiB",
                            hint="free some space, or choose another place with --cache-dir")
