"""pytest plugin (entry point `mmap_harness`): tests that boot real guests and
load real drivers.

    import pytest

    @pytest.mark.mmap_guest("debian-bookworm", "debian-trixie")
    def test_remap(guest, kmod):
        mod = kmod("mmap_remap")                        # build, load; unloaded after
        run = guest.run_c("pattern", mod.device)        # compile, run: status and JSON
        assert run.exit_status == 0, run.stderr
        assert mod.counters().passed
        assert all(v.passed for v in mod.unload())      # dmesg clean, unload line, free memory

`guest` is a harness.live.LiveGuest, one per guest name per session (per
worker under pytest-xdist), parametrized over `@pytest.mark.mmap_guest(...)`
or the repeatable `--mmap-guest NAME` (default: the default guest). A kernel
crash fails the test that was running with the kernel's report, and that
guest is booted afresh for the next test. A failing test's report carries
the console tail, the kernel log since the test began and the driver
sources it loaded.

Options: --mmap-guest NAME, --mmap-flavour tiny|full, --mmap-accel
auto|tcg|kvm, --mmap-cache-dir DIR, --mmap-timeout-scale X, --mmap-cold-boot
(tiny guests start from a snapshot of their first boot otherwise),
--mmap-kernel stock|debug (a test's @pytest.mark.mmap_kernel("debug") wins:
the suite's kernel built with KASAN, lockdep, kmemleak and the rest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import guests, images
from .cache import Cache, default_cache_dir
from .errors import HarnessError
from .guest import Guest
from .guests import Flavour
from .live import LiveGuest, LiveOptions, Module
from .progress import Progress
from .session import Timeouts

CONSOLE_LINES = 80      # of the console, in a failing test's report


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmap-harness")
    group.addoption("--mmap-guest", action="append", default=[], metavar="NAME",
                    dest="mmap_guests",
                    help="guest the `guest` fixture boots (repeatable; default: the "
                         "default guest; a test's @pytest.mark.mmap_guest wins)")
    group.addoption("--mmap-flavour", choices=[f.value for f in Flavour], default="tiny",
                    help="guest image flavour (default: tiny)")
    group.addoption("--mmap-cache-dir", type=Path, default=None,
                    help="guest image cache (default: $XDG_CACHE_HOME/mmap-harness)")
    group.addoption("--mmap-accel", choices=["auto", "tcg", "kvm"], default="auto",
                    help="accelerator for booted guests (default: probe)")
    group.addoption("--mmap-timeout-scale", type=float, default=1.0, metavar="X",
                    help="stretch every guest timeout (slow hosts)")
    group.addoption("--mmap-cold-boot", action="store_true",
                    help="boot every guest's kernel: never start one from a snapshot")
    group.addoption("--mmap-kernel", choices=list(images.KERNELS), default=images.STOCK,
                    help="kernel variant the guests boot (default: stock; a test's "
                         "@pytest.mark.mmap_kernel wins)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mmap_guest(*names): the guests the `guest` fixture "
                                       "boots for this test (one test per guest)")
    config.addinivalue_line("markers", "mmap_kernel(variant): the kernel variant (stock, "
                                       "debug) the `guest` fixture boots for this test")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "guest" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("mmap_guest")
    names = list(marker.args) if marker else metafunc.config.getoption("mmap_guests")
    if not names:
        names = [guests.default_guest().name]
    metafunc.parametrize("guest", names, indirect=True, ids=names)


@pytest.fixture(scope="session")
def mmap_cache_dir(request: pytest.FixtureRequest) -> Path:
    return request.config.getoption("--mmap-cache-dir") or default_cache_dir()


@pytest.fixture(scope="session")
def mmap_options(request: pytest.FixtureRequest, mmap_cache_dir: Path) -> LiveOptions:
    config = request.config
    return LiveOptions(mmap_cache_dir, Flavour(config.getoption("--mmap-flavour")),
                       config.getoption("--mmap-accel"),
                       timeouts=Timeouts(scale=config.getoption("--mmap-timeout-scale")),
                       cold_boot=config.getoption("--mmap-cold-boot"),
                       kernel=config.getoption("--mmap-kernel"))


class GuestPool:
    """The session's guests, booted on first use and kept until the session
    ends; a guest found dead is booted afresh, one that cannot boot fails
    every test that asks for it with the same error."""

    def __init__(self, options: LiveOptions, root: Path) -> None:
        self.options = options
        self.root = root
        self._live: dict[tuple[str, str], LiveGuest] = {}
        self._failed: dict[tuple[str, str], HarnessError] = {}
        self._held = contextlib.ExitStack()

    def get(self, name: str, kernel: str | None = None) -> LiveGuest:
        """The guest `name` booting the `kernel` variant (default: the option's)."""
        key = (name, kernel or self.options.kernel)
        if key in self._failed:
            raise self._failed[key]
        try:
            live = self._live.get(key)
            if live is None:
                live = LiveGuest(guests.find(name),
                                 dataclasses.replace(self.options, kernel=key[1]),
                                 self.root / "-".join(key), Progress(sys.stderr))
                self._held.enter_context(live)
                self._live[key] = live
            elif live.dead_reason():
                live.reboot()
        except HarnessError as e:
            self._failed[key] = e
            raise
        return live

    def close(self) -> None:
        self._held.close()


@pytest.fixture(scope="session")
def mmap_guests(mmap_options: LiveOptions,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestPool]:
    pool = GuestPool(mmap_options, tmp_path_factory.mktemp("mmap-guests"))
    try:
        yield pool
    finally:
        pool.close()


@dataclass
class _Watched:
    """What a test's report needs of a guest it used."""

    live: LiveGuest
    console_at: int
    marker: str
    modules: list[Module] = field(default_factory=list)


_WATCHED = pytest.StashKey[_Watched]()


@pytest.fixture
def guest(request: pytest.FixtureRequest, mmap_guests: GuestPool) -> LiveGuest:
    """The running guest named by this test's parameter (see the module doc)."""
    variant = request.node.get_closest_marker("mmap_kernel")
    try:
        live = mmap_guests.get(request.param, variant.args[0] if variant else None)
        console_at = live.console_position()
        marker = live.mark(f"test {request.node.nodeid}")
    except HarnessError as e:
        pytest.fail(f"guest {request.param}: {e}", pytrace=False)
    request.node.stash[_WATCHED] = _Watched(live, console_at, marker)
    return live


@pytest.fixture
def kmod(guest: LiveGuest, request: pytest.FixtureRequest) -> Iterator[Callable[..., Module]]:
    """Factory: kmod(spec_name_or_dir, params=..., device=..., make_args=...)
    builds and loads a module in `guest` (harness.live.LiveGuest.load_module);
    whatever the test left loaded is unloaded after it (a module that will
    not unload costs the guest a reboot, so the next test starts clean)."""
    watched = request.node.stash[_WATCHED]

    def load(what: str | Path, *args: object, **kwargs: object) -> Module:
        try:
            module = guest.load_module(what, *args, **kwargs)  # type: ignore[arg-type]
        except HarnessError as e:
            pytest.fail(str(e), pytrace=False)
        watched.modules.append(module)
        return module
    yield load
    for module in reversed(watched.modules):
        if module.loaded and guest.dead_reason() is None:
            try:
                module.unload()
            except HarnessError:   # DriverError too: it would not unload
                guest.reboot()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    watched = item.stash.get(_WATCHED, None)
    if watched is None or call.when != "call":
        return
    live, name = watched.live, watched.live.definition.name
    reason = live.dead_reason()
    if reason is not None:   # the kernel's report is the failure, whatever Python saw
        report.outcome = "failed"
        report.longrepr = f"{name}: {reason}\n{live.crash_report()}".rstrip()
    if not report.failed:
        return
    report.sections.append((f"mmap-harness {name}: console (last {CONSOLE_LINES} lines "
                            "since the test began)",
                            live.console_since(watched.console_at, CONSOLE_LINES)))
    if reason is None:
        try:
            report.sections.append((f"mmap-harness {name}: kernel log since the test began",
                                    live.kernel_log_since(watched.marker)))
        except HarnessError as e:
            report.sections.append((f"mmap-harness {name}: kernel log", f"unreadable: {e}"))
    if watched.modules:
        report.sections.append((f"mmap-harness {name}: driver sources",
                                "\n".join(f"{m.name}: {m.source}" for m in watched.modules)))


# --- lower level: images and boots of the harness's own tests ---

@pytest.fixture(scope="session")
def guest_image(mmap_cache_dir: Path, pytestconfig: pytest.Config
                ) -> Iterator[Callable[..., images.GuestImage]]:
    """Factory: guest_image(name, flavour="tiny", kernel="stock") builds or
    reuses the cached, verified image; its leases are held until the test
    session ends."""
    scale = pytestconfig.getoption("--mmap-timeout-scale")
    made: dict[tuple[str, str, str], images.GuestImage] = {}
    with contextlib.ExitStack() as held:
        def get(name: str, flavour: str = "tiny",
                kernel: str = images.STOCK) -> images.GuestImage:
            if (name, flavour, kernel) not in made:
                made[name, flavour, kernel] = held.enter_context(images.use(
                    guests.find(name), Flavour(flavour), Cache(mmap_cache_dir),
                    Progress(sys.stderr), kernel, scale))
            return made[name, flavour, kernel]
        yield get


@pytest.fixture
def boot_guest(mmap_options: LiveOptions, tmp_path: Path):
    """Factory of context managers: a bare booted guest (harness.guest.Guest,
    `.ssh` logged in) of its own, booted as `guest` is but without `run`'s
    debug arguments unless given; its console is under the test's tmp_path."""

    @contextlib.contextmanager
    def boot(name: str, flavour: str = "tiny",
             kernel_args: list[str] | None = None) -> Iterator[Guest]:
        options = dataclasses.replace(mmap_options, flavour=Flavour(flavour),
                                      kernel_args=tuple(kernel_args or ()))
        with LiveGuest(guests.find(name), options, tmp_path / f"{name}-{flavour}",
                       Progress()) as live:
            assert live.guest is not None
            yield live.guest
    return boot
