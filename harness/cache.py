"""The image cache: entries published atomically under a lock, used under a lease.

An entry is a directory `<cache>/<kind>/<key>`. It is built in a temporary
sibling and renamed into place only when complete, so an interrupted or
failed build never leaves something that later counts as a good entry. A
second process building the same entry waits on the lock, then reuses it.

Every user of an entry holds a shared lease on `<cache>/<kind>/.<key>.use`
(flock) for as long as it uses it, taken before the entry is built or
checked; `remove` takes the lease exclusively without waiting, so an entry
in use is never deleted under a running harness.

The cache holds the guests' private keys: the cache directory, every kind
directory and every entry are 0700 (fixed up when found looser).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import HostError
from .guests import all_definitions


def is_guests(name: str, guest: str, guests: Iterable[str]) -> bool:
    """Whether the cache entry `name` belongs to `guest`: it begins with the
    guest's name, and with no longer name of `guests` (debian-bookworm-686's
    entries are not debian-bookworm's)."""
    if not name.startswith(f"{guest}-"):
        return False
    return not any(len(other) > len(guest) and name.startswith(f"{other}-")
                   for other in guests)

ENV_CACHE = "XDG_CACHE_HOME"


def default_cache_dir() -> Path:
    base = os.environ.get(ENV_CACHE) or str(Path.home() / ".cache")
    return Path(base) / "mmap-harness"


class Cache:
    """One cache directory; `kind` groups entries (roots, images, ...)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._kinds: set[str] = set()   # kind directories made and made private here

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def kind_dir(self, kind: str) -> Path:
        """`<cache>/<kind>`, made if absent. The cache directory and every kind
        directory in it are made 0700 (a cache left by an older harness too),
        once per Cache object and kind: every lease asks."""
        d = self.root / kind
        if kind in self._kinds:
            return d
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HostError(f"cannot create the cache directory {d}: {e.strerror}",
                            hint="choose another with --cache-dir or fix its permissions") \
                from None
        for p in (self.root, *(c for c in self.root.iterdir() if c.is_dir())):
            private(p)
        self._kinds.add(kind)
        return d

    @contextlib.contextmanager
    def lease(self, kind: str, key: str,
              waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold a shared lease on the entry: `remove` leaves it alone meanwhile."""
        fd = _lock(self.kind_dir(kind) / f".{key}.use", fcntl.LOCK_SH, waiting)
        try:
            yield
        finally:
            os.close(fd)

    @staticmethod
    def memo(entry: Path) -> Path:
        """Where integrity.verify keeps the stamps of `entry`'s checked files."""
        return entry.parent / f".{entry.name}.verified"

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
        final = self.kind_dir(kind) / key
        if final.is_dir():
            private(final)
            return final
        self._check_space(final.parent, needs_bytes)
        lock = FileLock(str(final.parent / f".{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waiting()
            lock.acquire()
        try:
            return self._publish(final, build)
        finally:
            lock.release()

    def build_unless_busy(self, kind: str, key: str, build: Callable[[Path], None],
                          needs_bytes: int = 0) -> Path | None:
        """As get_or_build, for a build that cannot wait: None at once when
        another process is building the same entry."""
        final = self.kind_dir(kind) / key
        if final.is_dir():
            return final
        self._check_space(final.parent, needs_bytes)
        lock = FileLock(str(final.parent / f".{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None
        try:
            return self._publish(final, build)
        finally:
            lock.release()

    def _publish(self, final: Path, build: Callable[[Path], None]) -> Path:
        """Under the entry's lock: build it in a temporary sibling, rename it into place."""
        if final.is_dir():  # built by the process we waited for
            return final
        self._remove_stale(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))  # 0700
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def clean(self, kind: str, guest: str | None,
              kept: Callable[[str], bool]) -> tuple[list[Path], list[Path]]:
        """Remove the entries of `kind` (all, or those named for `guest`)
        whose name `kept` does not keep; returns (removed, left in use)."""
        removed: list[Path] = []
        in_use: list[Path] = []
        guests = list(all_definitions())
        for entry in self.entries(kind):
            if kept(entry.name) or not (guest is None or is_guests(entry.name, guest, guests)):
                continue
            (removed if self.remove(entry) else in_use).append(entry)
        return removed, in_use

    def remove(self, entry: Path) -> bool:
        """Delete one entry unless a harness holds its lease (then False).

        The build lock is taken too, so no build is cut short; the lease
        file goes with the entry while it is held exclusively.
        """
        use = entry.parent / f".{entry.name}.use"
        fd = _lock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            return False
        try:
            with FileLock(str(entry.parent / f".{entry.name}.lock")):
                shutil.rmtree(entry)
                self.memo(entry).unlink(missing_ok=True)
            use.unlink()
        finally:
            os.close(fd)
        return True

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


def private(path: Path) -> None:
    """Make a directory of the cache 0700 (mkdir's mode is cut by umask, and
    older caches were made looser)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != 0o700:
            path.chmod(0o700)
    except OSError as e:
        raise HostError(f"cannot make {path} private (0700): {e.strerror}",
                        hint="choose another with --cache-dir or fix its permissions") from None


def _lock(path: Path, op: int, waiting: Callable[[], None] = lambda: None) -> int | None:
    """An open fd of `path` holding flock `op`; None if LOCK_NB and it is taken.

    `remove` unlinks a lease file while holding it, so a lock won on a file
    that is no longer at `path` is worth nothing: then try again.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                if op & fcntl.LOCK_NB:
                    os.close(fd)
                    return None
                waiting()
                fcntl.flock(fd, op)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
