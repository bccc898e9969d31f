"""Built modules and workloads in the cache, keyed by everything that makes them.

    <cache>/artifacts/<root>-<label>-<hash>/
        product/<name>   the .ko or the static program, read-only
        build.log        the compiler's output when it was built
        artifact.json    what it was made from (the key's inputs, for people)
        integrity.json   the seal (harness.integrity): checked before every use

The key is a sha256 of: RECIPE, the build root's identity (its build_id, new
for every root build, covers the compiler and the kernel headers installed
in it; the compiler's version line and the kernel release are named too),
the command and its working directory, and each directory the command sees
by its place in the sandbox and the digest of its contents (names, file
contents, the exec bit, link targets; never times). A warm run therefore
compiles nothing whose inputs did not change, and one changed line rebuilds
only what saw it.

Entries are published by Cache.get_or_build (built aside, renamed into place
under a lock), so a failed or cancelled build is never an entry; they are
sealed, so one that changed afterwards is found before its product is used,
removed and built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import integrity
from .cache import Cache
from .debug_kernel import KernelBuild
from .errors import CacheDamaged
from .images import Cleaned
from .rootfs import BuildRoot

KIND = "artifacts"
# Bumped by hand when how a module or workload is built changes in a way the
# key's inputs miss: the sandbox (user, environment, mounts) or the copying
# rules of harness/linux/build.py.
RECIPE = 1
# The product goes in a directory of its own: its name is the user's to choose.
PRODUCT, META, LOG = "product", "artifact.json", "build.log"
# Everything in an entry is this small: all of it is hashed at every use.
HASH_BELOW = 256 * 2**20


@dataclass(frozen=True)
class RootIdentity:
    """What a build root contributes to a key; read once per build stage."""

    name: str               # the root's cache entry: names the artifacts built in it
    build_id: str
    compiler: str
    kernel_release: str

    @classmethod
    def of(cls, root: BuildRoot, kernel: KernelBuild | None = None) -> RootIdentity:
        """`root`'s, building for `kernel` (a debug kernel) instead of its own."""
        m = root.manifest
        if kernel is None:
            return cls(root.dir.name, m["build_id"], m["compiler"], m["kernel_release"])
        k = kernel.manifest
        return cls(f"{root.dir.name}-{k['variant']}", f"{m['build_id']}+{k['build_id']}",
                   m["compiler"], k["release"])


@dataclass(frozen=True)
class Key:
    """One artifact's identity: `name` is its cache entry."""

    name: str
    digest: str
    what: str               # for people: "workload pattern"
    inputs: dict            # what `digest` hashes


def make_key(root: RootIdentity, label: str, what: str, argv: list[str], cwd: str,
             directories: dict[str, str]) -> Key:
    """`directories`: each directory the command sees (its path in the
    sandbox) -> tree_digest of its contents."""
    doc = {"recipe": RECIPE, "build_id": root.build_id, "compiler": root.compiler,
           "kernel_release": root.kernel_release, "argv": argv, "cwd": cwd,
           "directories": directories}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return Key(f"{root.name}-{label}-{digest[:16]}", digest, what, doc)


def tree_digest(top: Path) -> str:
    """sha256 over every path under `top`: its kind, name, contents and exec
    bit (files) or target (links, not followed). Times, owners and the other
    mode bits are left out: they do not change what a compiler makes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted(filenames + [d for d in dirnames
                                        if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            h.update(f"{os.path.normpath(os.path.join(rel_dir, name))}\0".encode())
            h.update(_describe(path).encode())
        if not filenames and not dirnames:
            h.update(f"{rel_dir}/\0empty\n".encode())
    return h.hexdigest()


def file_digest(name: str, data: bytes) -> str:
    """tree_digest of a directory holding only `data`, as the plain (not
    executable) file `name`: a job's one source is keyed before it is written."""
    return hashlib.sha256(f"{name}\0file - {hashlib.sha256(data).hexdigest()}\n".encode()
                          ).hexdigest()


def _describe(path: str) -> str:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return f"link {os.readlink(path)}\n"
    if stat.S_ISREG(st.st_mode):
        executable = "x" if st.st_mode & 0o111 else "-"
        return f"file {executable} {integrity.sha256_file(Path(path))}\n"
    return f"other {stat.S_IFMT(st.st_mode)}\n"


class Built(NamedTuple):
    """A fresh build's product (in its scratch tree) and its log."""

    product: Path
    log: str


class Fetched(NamedTuple):
    product: Path           # the copy in the caller's directory
    entry: Path
    reused: bool            # False: built just now by this call
    log: str                # the log of the build that made the entry


class Store:
    """Artifacts in `cache`; `say` reports a damaged entry it replaces."""

    def __init__(self, cache: Cache, say: Callable[[str], None]) -> None:
        self.cache = cache
        self.say = say

    def fetch(self, key: Key, build: Callable[[], Built], out_dir: Path,
              mode: int) -> Fetched:
        """Copy the artifact of `key` into `out_dir` (made with `mode`),
        building and publishing it first if absent or damaged. A build that
        raises publishes nothing."""
        for _ in range(2):
            made: list[Path] = []

            def publish(tmp: Path) -> None:
                _publish(tmp, key, build())
                made.append(tmp)
            with self.cache.lease(KIND, key.name):
                entry = self.cache.get_or_build(
                    KIND, key.name, publish,
                    waiting=lambda: self.say(f"waiting for another process building {key.what}"))
                problems = integrity.verify(entry, self.cache.memo(entry))
                if not problems:
                    product = _copy(entry / PRODUCT / _meta(entry)["product"], out_dir, mode)
                    return Fetched(product, entry, not made, (entry / LOG).read_text())
            self._discard(entry, key, problems)
        raise CacheDamaged(f"the cached {key.what} {entry} was damaged again just after it "
                           "was built", hint=f"check what writes into {self.cache.root}")

    def _discard(self, entry: Path, key: Key, problems: list[str]) -> None:
        """A damaged entry goes (it is rebuilt from its inputs), unless another
        harness is using it: then the run stops and says so."""
        damage = (f"the cached {key.what} {entry} is damaged ({len(problems)} "
                  f"problem{'s' if len(problems) > 1 else ''}):\n{integrity.summary(problems)}")
        if not self.cache.remove(entry):
            raise CacheDamaged(damage, hint="another harness is using it: run again when it "
                                            "has finished, and it will be rebuilt")
        self.say(f"{damage}\n  removed it; building it again")


def _publish(tmp: Path, key: Key, built: Built) -> None:
    """Fill the new entry `tmp`: product, log, metadata, all read-only, sealed."""
    product = tmp / PRODUCT / built.product.name
    product.parent.mkdir()
    shutil.copyfile(built.product, product)
    (tmp / LOG).write_text(built.log)
    (tmp / META).write_text(json.dumps(
        {"key": key.digest, "what": key.what, "product": product.name,
         "built": time.time(), "inputs": key.inputs}, indent=2) + "\n")
    for f in (product, tmp / LOG, tmp / META):
        f.chmod(0o400)   # a published artifact never changes
    integrity.seal(tmp, [product], hash_below=HASH_BELOW)


def _meta(entry: Path) -> dict:
    return json.loads((entry / META).read_text())


def _copy(product: Path, out_dir: Path, mode: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / product.name
    shutil.copyfile(product, target)
    target.chmod(mode)
    return target


def clean(cache: Cache, guest: str | None = None,
          keep: frozenset[str] = frozenset()) -> Cleaned:
    """Remove artifacts (built in one guest's roots, or all) except those
    built in a root named in `keep` and those in use."""
    return Cleaned(*cache.clean(
        KIND, guest, lambda name: any(name.startswith(f"{root}-") for root in keep)))


def usage(cache: Cache) -> tuple[int, int]:
    """How many artifacts the cache holds, and their bytes."""
    entries = cache.entries(KIND)
    return len(entries), sum(f.lstat().st_size for e in entries for f in e.rglob("*"))
