"""The artifact cache: a warm build compiles nothing that did not change.

Modules and workloads are compiled for real in the cached build root (no
guest is booted); their artifacts go to a cache of the test's own, so the
user's cache is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import artifacts, drivers, integrity, results
from harness.cache import Cache
from harness.errors import BuildError, CacheDamaged, Interrupted
from harness.linux.build import Builder
from harness.plan import ExternalDriver
from harness.render import render

FIXTURES = Path(__file__).parent / "fixtures"
ROOT_ID = artifacts.RootIdentity("debian-bookworm-0123456789abcdef", "b1", "gcc 12",
                                 "6.1.0-x")
# The harness's own workloads that include little: quick to compile statically.
WORKLOADS = ("hold", "fault_count", "pattern")


class Run:
    """One build stage against the real build root, into `out`, through a
    store in the test's own cache; says what it said in `said`."""

    def __init__(self, root, cache: Cache, out: Path,
                 cancel: threading.Event | None = None) -> None:
        self.said: list[str] = []
        self.out = out
        self.builder = Builder(root, cancel, 120, artifacts.Store(cache, self.said.append))

    def __enter__(self) -> Run:
        self.builder.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.builder.__exit__(*exc)

    def workload(self, source: Path, includes: list[Path]) -> Path:
        return self.builder.workload(source, self.out, self.log(source.stem),
                                     include_dirs=includes)

    def log(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture
def build_run(guest_image, cache: Cache, tmp_path: Path) -> Callable[..., Run]:
    """Factory: a new Run (a new build stage, as the next `mmap-harness run`'s)."""
    root = guest_image("debian-bookworm").root
    count = iter(range(100))
    return lambda **kw: Run(root, cache, tmp_path / f"run{next(count)}", **kw)


@pytest.fixture
def workloads_copy(tmp_path: Path) -> Path:
    """The harness's workloads directory, to be edited."""
    copy = tmp_path / "workloads"
    shutil.copytree(drivers.WORKLOADS_DIR, copy)
    return copy


def build_workloads(run: Run, src: Path) -> dict[str, Path]:
    """As a run builds workloads from elsewhere (--workload FILE.c), each a
    program of its own: beside their headers, then their directory and the
    harness's headers on the include path."""
    with run:
        return {w: run.workload(src / f"{w}.c", [src, drivers.INCLUDE_DIR])
                for w in WORKLOADS}


def entries(cache: Cache) -> list[Path]:
    return cache.entries(artifacts.KIND)


# --- the key ---------------------------------------------------------------------------

def test_a_source_is_keyed_as_the_directory_it_will_be_written_to(tmp_path: Path):
    """A workload's job directory (its one source) is keyed before it is written."""
    data = b"int main(void) { return 0; }\n"
    (tmp_path / "p.c").write_bytes(data)
    assert artifacts.file_digest("p.c", data) == artifacts.tree_digest(tmp_path)
    assert artifacts.file_digest("q.c", data) != artifacts.tree_digest(tmp_path)


def test_tree_digest_sees_names_contents_and_the_exec_bit_not_times(tmp_path: Path):
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.c").write_text("int main(void) { return 0; }\n")
    (tree / "sub" / "h.h").write_text("#define X 1\n")
    (tree / "link.h").symlink_to("sub/h.h")
    first = artifacts.tree_digest(tree)
    os.utime(tree / "a.c", ns=(1, 1))
    assert artifacts.tree_digest(tree) == first                     # times do not count
    (tree / "a.c").chmod(0o755)
    assert artifacts.tree_digest(tree) != first                     # the exec bit does
    (tree / "a.c").chmod(0o644)
    assert artifacts.tree_digest(tree) == first
    (tree / "sub" / "h.h").write_text("#define X 2\n")
    assert artifacts.tree_digest(tree) != first                     # contents do
    (tree / "sub" / "h.h").write_text("#define X 1\n")
    (tree / "link.h").unlink()
    (tree / "link.h").symlink_to("a.c")
    assert artifacts.tree_digest(tree) != first                     # link targets do
    (tree / "link.h").unlink()
    (tree / "link.h").symlink_to("sub/h.h")
    (tree / "a.c").rename(tree / "b.c")
    assert artifacts.tree_digest(tree) != first                     # names do


def test_the_key_names_the_root_and_changes_with_every_input():
    base = dict(root=ROOT_ID, label="workload-p", what="workload p", argv=["gcc", "p.c"],
                cwd="/build/p", directories={"/build/p": "d1"})
    key = artifacts.make_key(**base)
    assert key.name.startswith(f"{ROOT_ID.name}-workload-p-")
    assert key.inputs["build_id"] == "b1" and key.inputs["compiler"] == "gcc 12"
    assert key.inputs["kernel_release"] == "6.1.0-x" and key.inputs["recipe"] == artifacts.RECIPE
    changed = [dict(base, argv=["gcc", "-m32", "p.c"]), dict(base, cwd="/build/q"),
               dict(base, directories={"/build/p": "d2"}),
               dict(base, root=artifacts.RootIdentity(ROOT_ID.name, "b2", "gcc 12", "6.1.0-x"))]
    assert len({artifacts.make_key(**c).digest for c in changed} | {key.digest}) == 5


# --- the store, with builds made up ----------------------------------------------------

def fake_build(tmp_path: Path, content: bytes) -> Callable[[], artifacts.Built]:
    def build() -> artifacts.Built:
        product = tmp_path / "prog"
        product.write_bytes(content)
        return artifacts.Built(product, "$ gcc prog.c\n")
    return build


def test_a_failed_build_is_never_cached(cache: Cache, tmp_path: Path):
    store = artifacts.Store(cache, print)
    key = artifacts.make_key(ROOT_ID, "workload-prog", "workload prog", ["gcc"], "/", {})

    def broken() -> artifacts.Built:
        raise BuildError("workload prog", "prog.c:1: error: expected ';'")
    with pytest.raises(BuildError):
        store.fetch(key, broken, tmp_path / "out", 0o755)
    assert entries(cache) == []
    assert [p.name for p in (cache.root / artifacts.KIND).iterdir()
            if p.name.startswith(".tmp")] == []
    got = store.fetch(key, fake_build(tmp_path, b"good"), tmp_path / "out", 0o755)
    assert not got.reused and got.product.read_bytes() == b"good"


def test_artifacts_are_cleaned_with_their_guest_and_kept_with_their_root(
        cache: Cache, tmp_path: Path):
    store = artifacts.Store(cache, print)
    for root in ("debian-bookworm-aaaa", "debian-bookworm-bbbb", "debian-trixie-cccc"):
        key = artifacts.make_key(artifacts.RootIdentity(root, "b", "gcc", "r"),
                                 "workload-p", "workload p", ["gcc"], "/", {})
        store.fetch(key, fake_build(tmp_path, b"x"), tmp_path / "out", 0o755)
    done = artifacts.clean(cache, "debian-bookworm", frozenset({"debian-bookworm-bbbb"}))
    assert [p.name.rsplit("-", 3)[0] for p in done.removed] == ["debian-bookworm-aaaa"]
    assert len(entries(cache)) == 2
    assert artifacts.usage(cache)[0] == 2


# --- real builds in the build root -----------------------------------------------------

def test_the_same_workloads_built_twice_compile_once(build_run, workloads_copy: Path,
                                                     cache: Cache):
    first = build_run()
    cold = build_workloads(first, workloads_copy)
    assert first.builder.reused == 0 and len(entries(cache)) == len(WORKLOADS)
    second = build_run()
    start = time.monotonic()
    warm = build_workloads(second, workloads_copy)
    assert second.builder.reused == len(WORKLOADS)
    assert time.monotonic() - start < 1.0
    for name in WORKLOADS:
        assert warm[name].read_bytes() == cold[name].read_bytes()
        assert stat.S_IMODE(warm[name].stat().st_mode) == 0o755
        log = second.log(name).read_text()
        assert log.startswith("reused from the cache, nothing compiled: ")
        assert str(cache.root / artifacts.KIND) in log and "gcc -static" in log


def test_one_changed_line_rebuilds_that_standalone_workload_only(
        build_run, workloads_copy: Path, cache: Cache):
    build_workloads(build_run(), workloads_copy)
    source = workloads_copy / "fault_count.c"
    source.write_text(source.read_text().replace("int main(", "/* changed */\nint main(", 1))
    again = build_run()
    build_workloads(again, workloads_copy)
    assert again.builder.reused == len(WORKLOADS) - 1
    assert "gcc -static" in again.log("fault_count").read_text().splitlines()[0]
    assert again.log("hold").read_text().startswith("reused from the cache")


def build_program(run: Run, src: Path, names=WORKLOADS, m32: bool = False) -> Path:
    """As a run builds the harness's own workloads: one program of them."""
    with run:
        return run.builder.program([(w, src / f"{w}.c") for w in names], run.out,
                                   run.out / "logs", m32, [src, drivers.INCLUDE_DIR])


def run_as(program: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run the (static) program on the host by the name of one of its workloads."""
    link = program.parent / name
    link.symlink_to(program.name)
    try:
        return subprocess.run([str(link), *args], capture_output=True, text=True, timeout=30)
    finally:
        link.unlink()


def test_the_harness_s_workloads_are_one_program_found_whole_when_warm(
        build_run, workloads_copy: Path, cache: Cache):
    first = build_run()
    cold = build_program(first, workloads_copy)
    assert (first.builder.compiled, first.builder.reused) == (len(WORKLOADS) + 1, 0)
    assert cold.stat().st_size < 2 * 2**20   # one C library, not one per workload
    warm_run = build_run()
    start = time.monotonic()
    warm = build_program(warm_run, workloads_copy)
    assert (warm_run.builder.compiled, warm_run.builder.reused) == (0, 1)   # no object fetched
    assert time.monotonic() - start < 1.0
    assert warm.read_bytes() == cold.read_bytes() and warm.name == cold.name
    assert stat.S_IMODE(warm.stat().st_mode) == 0o755
    log = warm_run.log(warm.name).read_text()
    assert log.startswith("reused from the cache, nothing compiled: ") and "gcc -static" in log
    # Each workload's own main() runs by its name: pattern wants a device (exit 2).
    assert run_as(warm, "pattern").returncode == 2
    nobody = run_as(warm, "nope")
    assert nobody.returncode == 127 and "nope: not a workload of this program" in nobody.stderr


def test_one_changed_line_recompiles_that_workload_only(build_run, workloads_copy: Path):
    build_program(build_run(), workloads_copy)
    source = workloads_copy / "fault_count.c"
    source.write_text(source.read_text().replace("int main(", "/* changed */\nint main(", 1))
    again = build_run()
    build_program(again, workloads_copy)
    assert (again.builder.compiled, again.builder.reused) == (2, len(WORKLOADS) - 1)
    assert " -c -o fault_count.o fault_count.c" in again.log("fault_count").read_text()
    assert again.log("hold").read_text().startswith("reused from the cache")


def test_workloads_with_the_same_helper_names_live_in_one_program(build_run, tmp_path: Path):
    """What two authors each call `helper` and `count` stays each one's own."""
    src = tmp_path / "two"
    src.mkdir()
    for name, value in (("first", 3), ("second", 4)):
        (src / f"{name}.c").write_text(
            f"int count = {value};\nint helper(void) {{ return count; }}\n"
            "int main(void) { return helper(); }\n")
    with build_run() as run:
        program = run.builder.program([("first", src / "first.c"), ("second", src / "second.c")],
                                      run.out, run.out / "logs")
    assert run_as(program, "first").returncode == 3
    assert run_as(program, "second").returncode == 4


def test_a_32_bit_program_links(build_run, workloads_copy: Path):
    """i386 objects share the compiler's __x86.get_pc_thunk.* with the C library."""
    program = build_program(build_run(), workloads_copy, ("umem_compat", "refusals"), m32=True)
    assert program.read_bytes()[4] == 1   # ELFCLASS32


def test_a_changed_header_beside_a_workload_rebuilds_it(build_run, tmp_path: Path):
    src = tmp_path / "mine"
    src.mkdir()
    (src / "limits.h.in").write_text("not a header: never copied\n")
    (src / "mine.h").write_text("#define ANSWER 42\n")
    (src / "prog.c").write_text('#include "mine.h"\nint main(void) { return ANSWER - 42; }\n')
    with build_run() as run:
        first = run.workload(src / "prog.c", [])
    (src / "limits.h.in").write_text("changed, but the build never sees it\n")
    with build_run() as run:
        run.workload(src / "prog.c", [])
        assert run.builder.reused == 1
    (src / "mine.h").write_text("#define ANSWER (40 + 2)\n")
    with build_run() as run:
        run.workload(src / "prog.c", [])
        assert run.builder.reused == 0
        assert run.log("prog").read_text().startswith("$ cd /build/prog && gcc ")
    assert first.is_file()


def test_a_template_driver_s_module_is_reused(build_run, tmp_path: Path):
    (spec,) = drivers.find_specs(["mmap_fault"])
    made = []
    for i in range(2):
        source = render(spec, tmp_path / f"src{i}")    # each run renders afresh
        with build_run() as run:
            made.append(run.builder.module(source, spec.name, run.out, run.log(spec.name)))
            assert run.builder.reused == i
    assert made[0].read_bytes() == made[1].read_bytes() and made[1].name == "mmap_fault.ko"


def cached_trivial_workload(build_run, cache: Cache, tmp_path: Path,
                            name: str) -> tuple[Path, Path]:
    """A workload that does nothing, built once: its source and its cache entry."""
    src = tmp_path / name
    src.mkdir()
    (src / f"{name}.c").write_text("int main(void) { return 0; }\n")
    with build_run() as run:
        run.workload(src / f"{name}.c", [])
    (entry,) = entries(cache)
    return src / f"{name}.c", entry


def test_entries_are_sealed_and_read_only(build_run, cache: Cache, tmp_path: Path):
    _, entry = cached_trivial_workload(build_run, cache, tmp_path, "p")
    assert integrity.verify(entry) == []
    files = [f for f in entry.rglob("*") if f.is_file()]
    assert {str(f.relative_to(entry)) for f in files} == {
        "product/p", artifacts.LOG, artifacts.META, integrity.NAME}
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o400}
    meta = json.loads((entry / artifacts.META).read_text())
    assert meta["product"] == "p" and meta["inputs"]["argv"][0] == "gcc"
    # the source, and the headers beside it (a copy shared by a directory's workloads)
    assert sorted(meta["inputs"]["directories"]) == ["/build/beside/0", "/build/p"]


def test_a_driver_dir_module_is_keyed_by_its_whole_tree(build_run, tmp_path: Path):
    """--driver-dir with --source-tree: a stale product in the tree (never
    copied) changes nothing; a header outside the module's directory does."""
    tree = tmp_path / "ldd_tree"
    shutil.copytree(FIXTURES / "ldd_tree", tree)
    driver = ExternalDriver(tree / "scullpage", source_tree=tree)

    def build() -> int:
        with build_run() as run:
            ko = run.builder.external_module(driver, run.out, run.log("scullpage"))
            assert ko.name == "scullpage.ko"
            return run.builder.reused
    assert build() == 0
    (tree / "scullpage" / "scullpage.o").write_bytes(b"left over from the author's make")
    assert build() == 1
    header = tree / "include" / "ldd_compat.h"
    header.write_text(header.read_text() + "\n/* one more line */\n")
    assert build() == 0


@pytest.fixture
def damaged(build_run, cache: Cache, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A workload built once, then its cached product altered: (source, entry)."""
    source, entry = cached_trivial_workload(build_run, cache, tmp_path, "d")
    product = entry / "product" / "d"
    st = product.stat()
    product.chmod(0o600)
    with product.open("r+b") as f:     # one byte changed; size, mode and mtime kept
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    product.chmod(0o400)
    os.utime(product, ns=(st.st_atime_ns, st.st_mtime_ns))
    yield source, entry


def test_a_damaged_entry_is_found_and_rebuilt_not_used(build_run, damaged, cache: Cache):
    source, entry = damaged
    altered = (entry / "product" / "d").read_bytes()
    with build_run() as run:
        product = run.workload(source, [])
        assert run.builder.reused == 0
    assert product.read_bytes() != altered
    assert any("is damaged" in s and "product/d: content changed" in s
               and "building it again" in s
               for s in run.said), run.said
    (fresh,) = entries(cache)
    assert integrity.verify(fresh) == []


def test_a_damaged_entry_in_use_elsewhere_is_refused(build_run, damaged, cache: Cache):
    source, entry = damaged
    with cache.lease(artifacts.KIND, entry.name), build_run() as run:  # another harness's
        with pytest.raises(CacheDamaged, match="is damaged") as e:
            run.workload(source, [])
    assert "another harness is using it" in str(e.value)


# --- cancellation ----------------------------------------------------------------------

def test_a_cancelled_build_stops_and_caches_nothing(build_run, cache: Cache, tmp_path: Path):
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "Makefile").write_text("all:\n\tsleep 30\n")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    with build_run(cancel=cancel) as run, pytest.raises(BuildError, match="on cancel"):
        run.builder.external_module(ExternalDriver(slow), run.out, run.log("slow"))
    assert time.monotonic() - start < 10
    with build_run(cancel=cancel) as run, pytest.raises(Interrupted):
        run.builder.external_module(ExternalDriver(slow), run.out, run.log("slow"))
    assert entries(cache) == []


# --- what a run records ----------------------------------------------------------------

def test_results_record_built_and_reused(tmp_path: Path):
    run = results.RunResult("r1", "2026-01-01T00:00:00+00:00", {"hostname": "h"})
    g = results.GuestResult("debian-bookworm", "tiny", "debian-bookworm-tiny")
    g.build = results.BuildCounts(built=1, reused=29)
    run.guests.append(g)
    results.write_json(run, tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["guests"][0]["build"] == {"built": 1, "reused": 29}
    assert "build 0.0s (29 reused)" in results.table(run)
