"""Shared fixtures of the test suite (the harness's own are in harness/pytest_plugin.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.images import GuestImage


def hardlinked_copy(image: GuestImage, cache_dir: Path, near: Path) -> tuple[Path, Path, Path]:
    """A new cache dir holding `cp -al` copies of `image`'s cached build root
    and image entries; returns (cache dir, root copy, image copy). It is made
    under `near` when that is on the cache's file system (hard links cannot
    cross), else beside the cache; the caller removes its parent.

    Damage done by unlinking in a copy never reaches the original entries.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    same_device = near.stat().st_dev == cache_dir.stat().st_dev
    cache = Path(tempfile.mkdtemp(prefix="copy-", dir=near if same_device
                                  else cache_dir.parent)) / "cache"
    copies = []
    for kind, entry in (("roots", image.root.dir), ("images", image.dir)):
        (cache / kind).mkdir(parents=True)
        subprocess.run(["cp", "-al", str(entry), str(cache / kind)], check=True)
        copies.append(cache / kind / entry.name)
    return cache, copies[0], copies[1]


@pytest.fixture
def hardlinked_cache(guest_image, mmap_cache_dir: Path,
                     tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Path, Path]]]:
    """Factory: hardlinked_copy() of a guest's real cached root and image;
    removed after the test."""
    made: list[Path] = []

    def copy(name: str = "debian-bookworm", flavour: str = "tiny") -> tuple[Path, Path, Path]:
        copies = hardlinked_copy(guest_image(name, flavour), mmap_cache_dir, tmp_path)
        made.append(copies[0].parent)
        return copies
    yield copy
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


# --- the debug kernel: ~15 min cold, so built beside the other tests ----------------------

DEBUG_GUEST = "debian-bookworm"


def _needs_debug_kernel(item: pytest.Item) -> bool:
    return "debug_image" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that boot the debug kernel go last: by then its build,
    started with the session, has had the other tests' time to run in."""
    items.sort(key=_needs_debug_kernel)   # stable: the others keep their order


@pytest.fixture(scope="session", autouse=True)
def debug_kernel_build(request: pytest.FixtureRequest, mmap_cache_dir: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """When a selected test needs the debug kernel, `images build --kernel
    debug` starts with the session, niced, in a process of its own: the
    other tests use the CPU it leaves (a TCG guest keeps about one core of
    two busy). A test that needs the kernel waits on the cache's lock for
    it; an absent build costs nothing (the command finds it cached). The
    process never outlives the session."""
    if not any(_needs_debug_kernel(i) for i in request.session.items):
        yield
        return
    log = tmp_path_factory.mktemp("debug-kernel") / "images-build.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["nice", "-n", "15", sys.executable, "-m", "harness.cli", "images", "build",
             "--guest", DEBUG_GUEST, "--kernel", "debug", "--cache-dir", str(mmap_cache_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()        # the harness unwinds: the sandbox and make die with it
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ConsoleLines:
    """Whole console lines for a Watcher (what Console.subscribe delivers)."""

    started = 0.0

    def __init__(self) -> None:
        self.listeners: list = []

    def subscribe(self, listener) -> None:
        self.listeners.append(listener)

    def feed(self, text: str) -> None:
        for line in text.split("\n"):
            for listener in self.listeners:
                listener(line)
