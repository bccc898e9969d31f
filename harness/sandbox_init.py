"""PID 1 of a build sandbox: `python -m harness.sandbox_init JOB` (see harness.sandbox).

Runs on the host side of the chroot, inside fresh mount, PID, network and
IPC namespaces made by unshare: mounts the layer, forks the command into
the tree as the build user, reaps orphans until the command ends. Kept to
the standard library and small: it starts once per build job.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys

# The build user: not root, so a build cannot write the lower tree even before
# the overlay catches it. Its ids own the build's scratch directories on the
# host too, so they belong to nobody there: above the ranges that Debian
# (users from 1000), subuid allocations and systemd's containers
# (up to 1879048191) hand out, below 2^31 - 1.
BUILD_USER = "mmap-build"
BUILD_UID = 0x7FFF0000
BUILD_GID = 0x7FFF0000
BUILD_HOME = f"/home/{BUILD_USER}"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What may be written outside the bound directories, in memory, per job.
LAYER_SIZE = "4g"
DEV_SIZE = "64k"
# Exit status and first-line marker of a sandbox that could not be set up:
# the harness's failure, never blamed on the command.
SETUP_FAILED = 125
ERROR_MARKER = "mmap-harness sandbox error: "
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
REAL_UNAME = "/usr/lib/mmap-harness/uname"
UNAME_WRAPPER = """\
#!/bin/sh
# Written by mmap-harness for one build: the kernel built for is the guest's.
out=$({real} "$@") || exit
host=$({real} -r)
case $out in
*"$host"*) out="${{out%%"$host"*}}{release}${{out#*"$host"}}" ;;
esac
printf '%s\\n' "$out"
"""

_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_PR_SET_NO_NEW_PRIVS = 38
_PER_LINUX32 = 0x0008

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None = None, flags: int = 0,
           data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), target.encode(),
                     fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind(source: str, target: str, writable: bool) -> None:
    _mount(source, target, flags=_MS_BIND | _MS_REC)
    if not writable:
        _mount("none", target, flags=_MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID)


def _inside(merged: str, path: str) -> str:
    """`path` of the sandbox as a host path under `merged`, never outside it."""
    full = os.path.normpath(os.path.join(merged, path.lstrip("/")))
    if os.path.commonpath([full, merged]) != merged:
        raise OSError(0, f"{path} leaves the sandbox")
    return full


def _layer(spec: dict) -> str:
    """Mount the overlay; returns the merged tree."""
    layer = spec["layer"]
    _mount("tmpfs", layer, "tmpfs", _MS_NOSUID, f"size={LAYER_SIZE},mode=0755")
    lower, upper, work, merged = (os.path.join(layer, d)
                                  for d in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        os.mkdir(d)
    # A read-only bind first: the overlay option string never sees the
    # cache's path (no escaping of ',' or ':'), and the lower tree is read-only twice.
    _bind(spec["root"], lower, writable=False)
    # nosuid: the root's setuid programs (su, mount, passwd) give the build user nothing.
    _mount("overlay", merged, "overlay", _MS_NOSUID | _MS_NODEV,
           f"lowerdir={lower},upperdir={upper},workdir={work}")
    return merged


def _devices(merged: str) -> None:
    dev = _inside(merged, "/dev")
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", _MS_NOSUID, f"size={DEV_SIZE},mode=0755")
    for node in DEV_NODES:
        open(os.path.join(dev, node), "w").close()
        _mount(f"/dev/{node}", os.path.join(dev, node), flags=_MS_BIND)
    for name, target in DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))
    proc = _inside(merged, "/proc")
    os.makedirs(proc, exist_ok=True)
    _mount("proc", proc, "proc", _MS_NOSUID | _MS_NODEV)


def _user(merged: str) -> None:
    """The build user's passwd and group lines and home, in the layer only."""
    with open(_inside(merged, "/etc/passwd"), "a") as f:
        f.write(f"{BUILD_USER}:x:{BUILD_UID}:{BUILD_GID}:mmap-harness build:"
                f"{BUILD_HOME}:/bin/sh\n")
    with open(_inside(merged, "/etc/group"), "a") as f:
        f.write(f"{BUILD_USER}:x:{BUILD_GID}:\n")
    home = _inside(merged, BUILD_HOME)
    os.makedirs(home, exist_ok=True)
    os.chown(home, BUILD_UID, BUILD_GID)


def _uname(merged: str, release: str) -> None:
    """`uname` answers `release` where it would say the host's kernel."""
    uname = _inside(merged, "/usr/bin/uname")
    real = _inside(merged, REAL_UNAME)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    shutil.copy2(uname, real)
    os.unlink(uname)
    with open(uname, "w") as f:
        f.write(UNAME_WRAPPER.format(real=REAL_UNAME, release=release))
    os.chmod(uname, 0o755)


def _prepare(spec: dict) -> str:
    merged = _layer(spec)
    _devices(merged)
    if not spec["as_root"]:
        _user(merged)
    if spec["kernel_release"]:
        _uname(merged, spec["kernel_release"])
    for b in spec["binds"]:
        target = _inside(merged, b["inside"])
        os.makedirs(target, exist_ok=True)
        _bind(b["host"], target, b["writable"])
    return merged


def _environment(spec: dict) -> dict[str, str]:
    home = "/root" if spec["as_root"] else BUILD_HOME
    user = "root" if spec["as_root"] else BUILD_USER
    env = {"PATH": PATH, "HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/sh",
           "LC_ALL": "C", "PWD": spec["cwd"], "TMPDIR": "/tmp"}
    return {**env, **spec["env"]}


def _exec(merged: str, spec: dict) -> None:
    """In the forked child: enter the tree, drop privileges, run the command."""
    os.chroot(merged)
    os.chdir(spec["cwd"])
    if not spec["as_root"]:
        os.setgroups([])
        os.setgid(BUILD_GID)
        os.setuid(BUILD_UID)
    os.umask(0o022)
    if spec["linux32"] and _libc.personality(_PER_LINUX32) == -1:
        raise OSError(ctypes.get_errno(), "personality(PER_LINUX32) failed")
    # Nothing the command runs can gain privileges (setuid bits, file capabilities).
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    os.execvpe(spec["argv"][0], spec["argv"], _environment(spec))


def _fail(message: str) -> int:
    print(f"{ERROR_MARKER}{message}", flush=True)
    return SETUP_FAILED


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        merged = _prepare(spec)
    except OSError as e:
        return _fail(f"setting up the build layer failed: {e}")
    pid = os.fork()
    if pid == 0:
        try:
            _exec(merged, spec)
        except OSError as e:
            os._exit(_fail(f"cannot run {spec['argv'][0]} in {spec['cwd']}: {e}"))
    # PID 1 of the namespace: reap orphans until the command itself ends.
    while True:
        done, status = os.wait()
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code   # killed: the shell's 128 + signal


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
