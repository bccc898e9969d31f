"""Shared fixtures of the test suite (the harness's own are in harness/pytest_plugin.py)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def hardlinked_cache(guest_image, mmap_cache_dir: Path,
                     tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Path, Path]]]:
    """Factory: a new cache dir holding `cp -al` copies of the real cached build
    root and image of a guest; returns (cache dir, root copy, image copy).

    Damage done by unlinking in a copy never reaches the original entries.
    The copies are made beside the real cache, so the hard links can be made.
    """
    made: list[Path] = []

    def copy(name: str = "debian-bookworm", flavour: str = "tiny") -> tuple[Path, Path, Path]:
        image = guest_image(name, flavour)
        mmap_cache_dir.mkdir(parents=True, exist_ok=True)
        same_device = tmp_path.stat().st_dev == mmap_cache_dir.stat().st_dev
        cache = Path(tempfile.mkdtemp(prefix="copy-", dir=tmp_path if same_device
                                      else mmap_cache_dir.parent)) / "cache"
        made.append(cache.parent)
        copies = []
        for kind, entry in (("roots", image.root.dir), ("images", image.dir)):
            (cache / kind).mkdir(parents=True)
            subprocess.run(["cp", "-al", str(entry), str(cache / kind)], check=True)
            copies.append(cache / kind / entry.name)
        return cache, copies[0], copies[1]
    yield copy
    for d in made:
        shutil.rmtree(d, ignore_errors=True)
