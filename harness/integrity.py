"""Cheap checks that a cache entry is still what was published.

At publish time `seal(entry, ...)` writes `integrity.json` into the entry:
the lstat of every file, directory and symlink under it (type, mode, size,
mtime to the nanosecond, the target of links; links are never followed) and
the sha256 of the files that matter most. Inodes are left out on purpose: a
cache copied with its times kept (`cp -a`, rsync -a) is the same cache. `verify(entry)`
compares the entry with it before every use and returns what differs, as
lines for people:

    root/usr/src/linux-headers-6.1.0-50-common/Makefile: deleted
    root/usr/bin/x86_64-linux-gnu-gcc-12: changed (size 928584 -> 28, mtime_ns ...)
    root/lib/modules/6.1.0-50-cloud-amd64/build/include/config/auto.conf: content changed

A build root of ~27,000 entries verifies in about 0.2 s: lstat is cheap and
only the critical set (kernel, compilers, Kbuild files, keys) is hashed.

A file whose content was found right is not hashed again while it keeps the
same inode, size, mtime and ctime (`memo`, a file outside the entry, as git's
index does): writing to a file, or replacing it, moves its ctime, which no
utime call can set back.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Iterable
from pathlib import Path

NAME = "integrity.json"
FORMAT = 2
MAX_PROBLEMS_SHOWN = 5

# lstat record: [kind, mode, size, mtime_ns, target (links) or ""]
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _record(path: str, st: os.stat_result) -> list:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "other")
    extra = os.readlink(path) if kind == "link" else ""
    size = 0 if kind == "dir" else st.st_size  # a directory's size never shrinks back
    return [kind, stat.S_IMODE(st.st_mode), size, st.st_mtime_ns, extra]


def _walk(entry: Path) -> dict[str, list]:
    """Every path under `entry` (relative), with its record."""
    found: dict[str, list] = {}

    def scan(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            for e in it:
                rel = prefix + e.name
                if rel == NAME:
                    continue
                rec = _record(e.path, e.stat(follow_symlinks=False))
                if rec[0] == "dir":
                    scan(e.path, rel + "/")
                found[rel] = rec
    scan(str(entry), "")
    return found


def seal(entry: Path, critical: Iterable[Path] = (), hash_below: int = 0) -> None:
    """Write `entry`/integrity.json.

    `critical` files (inside `entry`) are hashed whatever their size; so is
    every other regular file smaller than `hash_below` bytes.
    """
    tree = _walk(entry)
    hashed = {str(p.relative_to(entry)) for p in critical}
    hashed |= {rel for rel, rec in tree.items() if rec[0] == "file" and rec[2] < hash_below}
    data = {"format": FORMAT, "tree": tree,
            "sha256": {rel: sha256_file(entry / rel) for rel in sorted(hashed)}}
    fd = os.open(entry / NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, separators=(",", ":"))


def verify(entry: Path, memo: Path | None = None) -> list[str]:
    """What differs between `entry` and its integrity.json; [] when nothing does.

    `memo` keeps the stamps of files whose content was found right.
    """
    try:
        data = json.loads((entry / NAME).read_text())
    except (OSError, ValueError):
        return [f"{NAME}: missing or unreadable"]
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return [f"{NAME}: not of format {FORMAT}"]
    sealed: dict[str, list] = data["tree"]
    now = _walk(entry)
    problems, touched_dirs = [], []
    for rel in sorted(sealed.keys() | now.keys()):
        was, found = sealed.get(rel), now.get(rel)
        if found is None:
            problems.append(f"{rel}: deleted")
        elif was is None:
            problems.append(f"{rel}: added")
        elif found != was:
            # A directory whose mtime alone moved only echoes a change inside it.
            echo = was[0] == found[0] == "dir" and was[:3] == found[:3]
            (touched_dirs if echo else problems).append(f"{rel}: {_difference(was, found)}")
    known, checked = _read_memo(memo), {}
    for rel, digest in data["sha256"].items():
        if now.get(rel) != sealed.get(rel):
            continue  # already reported
        # Stamped before hashing: a write during the hash moves the ctime.
        st = os.lstat(entry / rel)
        stamp = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest]
        if known.get(rel) == stamp:
            checked[rel] = stamp
        elif sha256_file(entry / rel) == digest:
            checked[rel] = stamp
        else:
            problems.append(f"{rel}: content changed")
    if memo is not None and not problems and checked != known:
        _write_memo(memo, checked)
    return problems + touched_dirs


def _read_memo(memo: Path | None) -> dict[str, list]:
    try:
        found = json.loads(memo.read_text()) if memo is not None else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_memo(memo: Path, checked: dict[str, list]) -> None:
    """Replace `memo` whole (a reader never sees half of it); a memo that
    cannot be written only costs the next check its hashing."""
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(checked, separators=(",", ":")))
        os.replace(tmp, memo)
    except OSError:
        tmp.unlink(missing_ok=True)


def _difference(was: list, now: list) -> str:
    kind = was[0]
    if kind != now[0]:
        return f"changed (type {kind} -> {now[0]})"
    fields = [("target", 4, str), ("size", 2, str), ("mode", 1, oct), ("mtime_ns", 3, str)]
    parts = [f"{name} {show(was[i])} -> {show(now[i])}"
             for name, i, show in fields if was[i] != now[i]]
    return f"changed ({', '.join(parts)})"


def summary(problems: list[str]) -> str:
    """The first few problems, one a line, and how many more there are."""
    shown = [f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return "\n".join(shown)


def resolve_in(tree: Path, path: str, depth: int = 0) -> Path | None:
    """`path` as the tree's own processes see it (links followed inside `tree`,
    as in a chroot); None when it does not lead to anything."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts)):
        host = tree.joinpath(*parts[:i + 1])
        if host.is_symlink():
            if depth > 40:
                return None
            target = os.readlink(host)
            base = target if target.startswith("/") else posixpath.join(
                "/" + "/".join(parts[:i]), target)
            return resolve_in(tree, posixpath.normpath(posixpath.join(base, *parts[i + 1:])),
                              depth + 1)
    host = tree.joinpath(*parts)
    return host if host.exists() else None
