"""pytest fixtures for tests that boot real guests (registered as `mmap_harness`).

    def test_my_driver(boot_guest):
        with boot_guest("debian-bookworm") as guest:
            assert guest.ssh.run(["uname", "-r"]).ok

Options: --mmap-cache-dir DIR (default $XDG_CACHE_HOME/mmap-harness),
--mmap-accel auto|tcg|kvm (default auto: probe KVM by booting).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import accel, guests, images
from .cache import Cache, default_cache_dir
from .errors import BootError
from .guest import Guest
from .guests import Flavour
from .progress import Progress
from .session import BOOT_ATTEMPTS

BOOT_TIMEOUT = 180.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmap-harness")
    group.addoption("--mmap-cache-dir", type=Path, default=None,
                    help="guest image cache (default: $XDG_CACHE_HOME/mmap-harness)")
    group.addoption("--mmap-accel", choices=["auto", "tcg", "kvm"], default="auto",
                    help="accelerator for booted guests (default: probe)")


@pytest.fixture(scope="session")
def mmap_cache_dir(request: pytest.FixtureRequest) -> Path:
    return request.config.getoption("--mmap-cache-dir") or default_cache_dir()


@pytest.fixture(scope="session")
def guest_image(mmap_cache_dir: Path) -> Iterator[Callable[..., images.GuestImage]]:
    """Factory: guest_image(name, flavour="tiny") builds or reuses the cached,
    verified image; its leases are held until the test session ends."""
    made: dict[tuple[str, str], images.GuestImage] = {}
    with contextlib.ExitStack() as held:
        def get(name: str, flavour: str = "tiny") -> images.GuestImage:
            if (name, flavour) not in made:
                made[name, flavour] = held.enter_context(images.use(
                    guests.find(name), Flavour(flavour), Cache(mmap_cache_dir), Progress()))
            return made[name, flavour]
        yield get


@pytest.fixture
def boot_guest(guest_image: Callable[..., images.GuestImage], mmap_cache_dir: Path,
               request: pytest.FixtureRequest, tmp_path: Path):
    """Factory of context managers: a booted guest with `.ssh` logged in.
    A guest that hangs silently while booting is booted once more, as `run`
    does (session.BOOT_ATTEMPTS); each boot keeps its console in its own dir."""

    @contextlib.contextmanager
    def boot(name: str, flavour: str = "tiny",
             kernel_args: list[str] | None = None) -> Iterator[Guest]:
        image = guest_image(name, flavour)
        choice = accel.choose(request.config.getoption("--mmap-accel"), image.kernel,
                              image.initrd, mmap_cache_dir)
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            workdir = tmp_path / f"{name}-{flavour}" / f"boot{attempt}"
            workdir.mkdir(parents=True, exist_ok=True)
            with Guest(image, choice.accel, workdir, workdir / "console.log",
                       kernel_args) as guest:
                try:
                    guest.wait_ssh(BOOT_TIMEOUT)
                except BootError as e:
                    if e.hung and attempt < BOOT_ATTEMPTS:
                        continue
                    raise
                yield guest
                return
    return boot
