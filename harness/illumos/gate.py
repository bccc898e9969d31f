"""An illumos-gate tree, read through git: a checkout or a bare repository.

What is read is the committed tree at HEAD (a checkout's uncommitted changes are
not seen), one object at a time through one `git cat-file --batch`, so a copy
whose large blobs (firmware headers of 4 MiB and more) are missing still works:
a missing blob is simply absent from what `read` returns.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, HostError

# A file every illumos-gate has at this path: the uts build's common Makefile.
MARKER = "usr/src/uts/Makefile.uts"
_HINT = ("give --gate the top directory of an illumos-gate git checkout or bare "
         "repository (a clone of the illumos-gate repository)")


@dataclass(frozen=True)
class Gate:
    path: Path          # what the user named
    git_dir: Path
    commit: str

    def _git(self, *args: str) -> list[str]:
        return ["git", f"--git-dir={self.git_dir}", *args]

    def tree(self, prefixes: Iterable[str]) -> dict[str, str]:
        """Path -> blob id of every file under the `prefixes` (directories or files)."""
        out = _run(self._git("ls-tree", "-r", "-z", "--full-tree", self.commit, "--",
                             *prefixes), "list the gate's files")
        files: dict[str, str] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, path = entry.split(b"\t", 1)
            mode, kind, blob = meta.split()
            if kind == b"blob" and mode != b"120000":
                files[path.decode()] = blob.decode()
        return files

    def read(self, blobs: dict[str, str]) -> dict[str, bytes]:
        """Contents by path of the given path -> blob ids; missing blobs are left out."""
        items = list(blobs.items())
        proc = subprocess.Popen(self._git("cat-file", "--batch"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None and proc.stdout is not None

        def feed() -> None:
            assert proc.stdin is not None
            try:
                for _path, blob in items:
                    proc.stdin.write(blob.encode() + b"\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        found: dict[str, bytes] = {}
        try:
            for path, _blob in items:
                header = proc.stdout.readline().split()
                if len(header) != 3:        # "<id> missing"
                    continue
                size = int(header[2])
                found[path] = proc.stdout.read(size)
                proc.stdout.read(1)
        finally:
            feeder.join()
            proc.stdout.close()
            proc.wait()
        return found

    def read_files(self, paths: Iterable[str]) -> dict[str, bytes]:
        """Contents of the named files (those absent or missing are left out)."""
        wanted = list(paths)
        listing = self.tree(wanted)
        return self.read({p: listing[p] for p in wanted if p in listing})

    def extract(self, blobs: dict[str, str], dest: Path) -> list[str]:
        """Write the files under `dest` (same relative paths); returns those missing."""
        found = self.read(blobs)
        for path, data in found.items():
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return sorted(set(blobs) - set(found))


def text_loader(gate: Gate) -> Callable[[str], str | None]:
    """A function giving a gate file's text by path (None when absent), each
    file read once: what harness.illumos.makevars follows includes with."""
    texts: dict[str, str | None] = {}

    def load(path: str) -> str | None:
        if path not in texts:
            found = gate.read_files([path])
            texts[path] = found[path].decode(errors="replace") if path in found else None
        return texts[path]
    return load


def extract_headers(gate: Gate, listing: dict[str, str], dirs: list[str],
                    dest: Path) -> list[str]:
    """Every header (*.h) under the gate directories `dirs` written under `dest`
    (those already there are left alone); returns those whose blobs are missing."""
    roots = tuple(d.rstrip("/") + "/" for d in dirs)
    wanted = {p: b for p, b in listing.items()
              if p.endswith(".h") and p.startswith(roots) and not (dest / p).exists()}
    return gate.extract(wanted, dest) if wanted else []


def open_gate(path: Path) -> Gate:
    """The gate at `path`, checked to be illumos-gate; ConfigError when it is not."""
    if not path.is_dir():
        raise ConfigError(f"--gate {path}: no such directory", hint=_HINT)
    top = path.resolve()
    git_dir = _git_dir(top)
    if git_dir is None:
        raise ConfigError(f"--gate {path}: not a git checkout or bare repository", hint=_HINT)
    work_tree = _run(["git", "-C", str(top), "rev-parse", "--show-toplevel"],
                     "find the checkout's top", check=False).decode().strip()
    if git_dir != top and Path(work_tree or "/").resolve() != top:
        raise ConfigError(f"--gate {path} is inside a git tree, not at its top",
                          hint=f"{_HINT}; here perhaps --gate {work_tree or git_dir}")
    commit = _run(["git", f"--git-dir={git_dir}", "rev-parse", "--verify", "-q",
                   "HEAD^{commit}"], "read HEAD", check=False).decode().strip()
    if not commit:
        raise ConfigError(f"--gate {path}: the repository has no commit at HEAD", hint=_HINT)
    gate = Gate(path=path, git_dir=git_dir, commit=commit)
    if not gate.tree([MARKER]):
        raise ConfigError(f"--gate {path} is a git repository but not illumos-gate "
                          f"(no {MARKER} at HEAD {commit[:12]})", hint=_HINT)
    return gate


def _git_dir(top: Path) -> Path | None:
    proc = _git(["git", "-C", str(top), "rev-parse", "--absolute-git-dir"])
    if proc.returncode != 0:
        if b"dubious ownership" in proc.stderr:
            raise ConfigError(f"git refuses to read {top}: it belongs to another user",
                              hint=f"if you trust it: git config --global --add "
                                   f"safe.directory {top}")
        return None
    return Path(proc.stdout.decode().strip()).resolve()


def _run(cmd: list[str], what: str, check: bool = True) -> bytes:
    proc = _git(cmd)
    if proc.returncode != 0 and check:
        raise HostError(f"git could not {what}: {proc.stderr.decode(errors='replace').strip()}",
                        hint="check that the gate is a readable git repository")
    return proc.stdout if proc.returncode == 0 else b""


def _git(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HostError("git is not installed (it reads the gate)",
                        hint="install it: apt-get install git (ci/bootstrap.sh does)") from None
