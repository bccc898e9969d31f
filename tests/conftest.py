"""Shared fixtures of the test suite (the harness's own are in harness/pytest_plugin.py)."""

from __future__ import annotations

import shutil
import subprocess
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
