"""What the pipeline does inside an illumos guest, over SSH: check the
guest's compiler, upload and build a rendered driver with it, install it
(add_drv), link its device into /dev, unload and remove it (rem_drv), read
the kernel's messages, build the workloads.

The argv of every guest command is made by a pure function (tested in
tests/test_omnios.py); the functions that run them return what they found
or raise an error written for people, as harness/linux/load.py does for Linux:
a driver's own failure (add_drv refused, busy on unload) is returned as a
message, a compile failure is a BuildError with the compiler's output, an
image without a compiler is a ConfigError, a broken connection an SSHError.

Not here, because illumos has no equivalent: Linux's taint flags (illumos
keeps no taint state; loading a third-party module is ordinary) and
harness/linux/load.py's mark() (there is no /dev/kmsg: user space cannot write
into the kernel's message buffer).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..errors import BuildError, ConfigError, SSHError
from ..ssh import GuestSSH

WORKDIR = "/var/tmp/mmap-harness"
DRIVER_DIR = "/usr/kernel/drv"              # <name>.conf
MODULE_DIR = "/usr/kernel/drv/amd64"        # the 64-bit module <name>
# add_drv -m: every minor node 0666, owner root, group sys (add_drv(8)).
MINOR_PERMS = "* 0666 root sys"
# How illumos compiles a 64-bit kernel module (uts/Makefile.uts ALWAYS_DEFS_64,
# Makefile.master amd64_STAND_FLAGS: -xmodel=kernel, which cw(1) turns into
# -ffreestanding -mcmodel=kernel -mno-red-zone, and NO_SIMD; CSTD_GNU99;
# -fno-asynchronous-unwind-tables from CFLAGS_uts), for gcc directly.
KERNEL_CFLAGS = ["-m64", "-std=gnu99", "-D_KERNEL", "-ffreestanding", "-fno-pic", "-fno-pie",
                 "-mcmodel=kernel", "-mno-red-zone", "-mno-mmx", "-mno-sse",
                 "-fno-asynchronous-unwind-tables", "-D_SYSCALL32", "-D_SYSCALL32_IMPL",
                 "-D_ELF64", "-D_DDI_STRICT", "-Dsun", "-D__sun", "-D__SVR4", "-O2", "-Wall"]
# Workloads are linked dynamically: illumos ships no static libc (libc.a),
# so `-static` cannot link on it.
WORKLOAD_CFLAGS = ["-O2", "-Wall"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
# modinfo(8) lines: printf("%3d ", id), "%16lx " base, "%6lx " size, "%3d " or
# "  - " info, "  %d  " rev, "%s (%s)" name and description
# (illumos-gate usr/src/cmd/modload/modinfo.c, print_info).
_MODINFO = re.compile(r"^\s*(\d+)\s+[0-9a-f]+\s+[0-9a-f]+\s+(?:\d+|-)\s+\d+\s+(\S+) \(")
# rem_drv prints this and still exits 0 when the module stays loaded
# (usr/src/cmd/modload/errmsg.h ERR_MODUN, rem_drv.c).
_NOT_UNLOADED = "Cannot unload module"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} cannot be an illumos driver name: lower-case letters, "
                          "digits and '_', starting with a letter, at most 31")
    return name


def driver_dir(name: str) -> str:
    return f"{WORKDIR}/drv/{check_name(name)}"


def compile_argv(compiler: str, name: str) -> list[str]:
    d = driver_dir(name)
    return [compiler, *KERNEL_CFLAGS, f"-I{d}", "-c", "-o", f"{d}/{name}.o", f"{d}/{name}.c"]


def link_argv(name: str) -> list[str]:
    """A kernel module is a relocatable object: `ld -r`."""
    d = driver_dir(name)
    return ["ld", "-r", "-o", f"{d}/{name}", f"{d}/{name}.o"]


def install_argvs(name: str) -> list[list[str]]:
    d = driver_dir(name)
    return [["cp", f"{d}/{name}", f"{MODULE_DIR}/{name}"],
            ["cp", f"{d}/{name}.conf", f"{DRIVER_DIR}/{name}.conf"],
            ["add_drv", "-m", MINOR_PERMS, name],
            ["devfsadm", "-i", name]]


def remove_argvs(name: str) -> list[list[str]]:
    check_name(name)
    return [["rem_drv", name],
            ["rm", "-f", f"{MODULE_DIR}/{name}", f"{DRIVER_DIR}/{name}.conf", f"/dev/{name}"]]


def minors_argv(name: str) -> list[str]:
    """The driver's minor nodes; a pseudo driver's sit under /devices/pseudo."""
    return ["sh", "-c", 'ls -1d /devices/pseudo/"$1"@*:* 2>/dev/null', "sh", check_name(name)]


def pick_minor(listing: str, name: str) -> str | None:
    """The minor node /dev/<name> should point at: the one named after the
    driver, else the only one."""
    nodes = [line.strip() for line in listing.splitlines() if line.strip()]
    named = [n for n in nodes if n.endswith(f":{name}")]
    if len(named) == 1:
        return named[0]
    return nodes[0] if len(nodes) == 1 else None


def workload_argv(compiler: str, source: str, output: str, m32: bool,
                  include_dirs: list[str]) -> list[str]:
    return [compiler, "-m32" if m32 else "-m64", *WORKLOAD_CFLAGS,
            *(f"-I{d}" for d in include_dirs), "-o", output, source]


def parse_modinfo(text: str, name: str) -> int | None:
    """The module id of `name` in modinfo's output, or None if not loaded."""
    for line in text.splitlines():
        m = _MODINFO.match(line)
        if m and m.group(2) == name:
            return int(m.group(1))
    return None


def _out(r) -> str:
    return (r.stderr.strip() + "\n" + r.stdout.strip()).strip()


def compiler_version(ssh: GuestSSH, compiler: str) -> str:
    """The guest compiler's first --version line; ConfigError if the image
    has none."""
    r = ssh.run([compiler, "--version"], timeout=60)
    if not r.ok:
        raise ConfigError(f"the guest has no working C compiler {compiler!r}: "
                          f"{_out(r) or f'exit {r.exit_status}'}",
                          hint="install one into the image (OmniOS: `pkg install "
                               "developer/build-essential` on a copy of the image booted by "
                               "hand), or set [image] compiler to its path")
    return r.stdout.splitlines()[0].strip() if r.stdout else compiler


def upload(ssh: GuestSSH, files: list[Path], remote_dir: str) -> list[str]:
    """Copy `files` into `remote_dir` in the guest (made if absent); returns
    their paths there."""
    ssh.run(["mkdir", "-p", remote_dir], timeout=60, check=True)
    remote = []
    for f in files:
        ssh.put(f, f"{remote_dir}/{f.name}")
        remote.append(f"{remote_dir}/{f.name}")
    return remote


def upload_driver(ssh: GuestSSH, rendered: Path, name: str) -> str:
    """Copy a rendered driver (<name>.c, <name>.conf and headers) into the
    guest; returns its directory there."""
    d = driver_dir(name)
    files = [rendered / f"{name}.c", rendered / f"{name}.conf", *sorted(rendered.glob("*.h"))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"the rendered illumos driver {rendered} lacks {', '.join(missing)}")
    ssh.run(["rm", "-rf", d], timeout=60, check=True)
    upload(ssh, files, d)
    return d


def build_driver(ssh: GuestSSH, name: str, compiler: str, timeout: float) -> str:
    """Compile and link the uploaded driver with the guest's own compiler;
    returns the module's path in the guest. BuildError with the output."""
    for argv in (compile_argv(compiler, name), link_argv(name)):
        r = ssh.run(argv, timeout=timeout)
        if not r.ok:
            raise BuildError(f"driver {name} (illumos, `{shlex.join(argv)}`)", _out(r))
    return f"{driver_dir(name)}/{name}"


def install_driver(ssh: GuestSSH, name: str, timeout: float) -> str:
    """Install the built module and its driver.conf, add_drv it (which loads
    and attaches it) and make its /devices nodes; returns an error message,
    empty on success."""
    for argv in install_argvs(name):
        r = ssh.run(argv, timeout=timeout)
        if not r.ok:
            return f"`{shlex.join(argv)}` failed (exit {r.exit_status}): {_out(r)}"
    return ""


def link_device(ssh: GuestSSH, name: str) -> str:
    """/dev/<name> -> the driver's minor node (devfsadm makes /dev links only
    for drivers its link rules name); returns the /dev path. SSHError when
    there is no single node to link."""
    listing = ssh.run(minors_argv(name), timeout=30).stdout
    node = pick_minor(listing, name)
    if node is None:
        raise SSHError(f"driver {name} made no single minor node under /devices/pseudo "
                       f"to link as /dev/{name}: {listing.strip() or 'none'}")
    ssh.run(["ln", "-sf", node, f"/dev/{name}"], timeout=30, check=True)
    return f"/dev/{name}"


def module_id(ssh: GuestSSH, name: str) -> int | None:
    return parse_modinfo(ssh.run(["modinfo", "-w"], timeout=30, check=True).stdout, name)


def unload_module(ssh: GuestSSH, name: str, timeout: float) -> str:
    """modunload the driver (detaching it first), as rmmod does on Linux:
    refused with EBUSY while a process has it open or mapped. Returns an
    error message, empty on success or when it is not loaded."""
    mid = module_id(ssh, name)
    if mid is None:
        return ""
    r = ssh.run(["modunload", "-i", str(mid)], timeout=timeout)
    return "" if r.ok else f"modunload -i {mid} ({name}) failed: {_out(r)}"


def remove_driver(ssh: GuestSSH, name: str, timeout: float) -> str:
    """rem_drv the driver and delete its files; returns an error message,
    empty on success. rem_drv exits 0 even when the module stays loaded, so
    its message and modinfo are checked too."""
    rem, rm = remove_argvs(name)
    r = ssh.run(rem, timeout=timeout)
    problem = ""
    if not r.ok or _NOT_UNLOADED in r.stderr + r.stdout:
        problem = f"rem_drv {name} failed (exit {r.exit_status}): {_out(r)}"
    elif module_id(ssh, name) is not None:
        problem = f"rem_drv {name} left the module loaded"
    ssh.run(rm, timeout=60, check=True)
    return problem


def kernel_log(ssh: GuestSSH) -> str:
    """The kernel's message buffer. illumos's dmesg(8) is a script printing
    the last 200 lines of /var/adm/messages (usr/src/cmd/dmesg/dmesg.sh),
    which syslog fills when it gets to it; `mdb -ke ::msgbuf` reads the
    buffer itself, as kayak's bin/dmesg does. /var/adm/messages is the
    fallback when mdb cannot."""
    r = ssh.run(["mdb", "-ke", "::msgbuf"], timeout=60)
    if r.ok and r.stdout.strip():
        return r.stdout
    return ssh.run(["cat", "/var/adm/messages"], timeout=60).stdout


def build_workload(ssh: GuestSSH, compiler: str, source: str, output: str, m32: bool,
                   include_dirs: list[str], timeout: float) -> str:
    """Compile one uploaded workload in the guest (dynamically linked);
    returns its path there. BuildError with the compiler's output."""
    argv = workload_argv(compiler, source, output, m32, include_dirs)
    r = ssh.run(argv, timeout=timeout)
    if not r.ok:
        raise BuildError(f"workload {Path(output).name} (illumos, `{shlex.join(argv)}`)",
                         _out(r))
    return output
