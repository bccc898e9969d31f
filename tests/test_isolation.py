"""Builds are isolated: each job runs in a throwaway layer over the read-only
build root, as an unprivileged user, the way a driver's author runs `make`.

The jobs run in the real cached build root (debootstrap'ed from Debian's
mirror); the third-party fixtures are real out-of-tree modules written the
way people write them, built and loaded in a real guest.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from harness import integrity, sandbox

FIXTURES = Path(__file__).parent / "fixtures"


def job(root, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return sandbox.run(sandbox.Job(str(root.tree), argv, **kw), timeout=120)


def processes_with(word: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and word in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def digest(tree: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of each file (following links inside the tree), or what is there instead."""
    out = {}
    for rel in paths:
        p = tree / rel.lstrip("/")
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel] = " ".join(sorted(x.name for x in p.iterdir()))
        else:
            out[rel] = "absent"
    return out


def critical_paths(root) -> list[str]:
    """What the hostile Makefile goes after: headers, config, the compiler."""
    headers = f"/usr/src/linux-headers-{root.kernel_release}"
    compilers = sorted("/" + str(p.relative_to(root.tree))
                       for p in (root.tree / "usr/bin").glob("x86_64-linux-gnu-gcc-*"))
    assert compilers
    return [f"{headers}/Makefile", f"{headers}/include/generated/autoconf.h",
            f"{headers}/include/config/auto.conf", "/usr/bin/gcc", *compilers,
            "/usr/src", f"/lib/modules/{root.kernel_release}"]


def test_a_job_runs_as_its_author_runs_make(guest_image):
    root = guest_image("debian-bookworm").root
    script = ('id -u; echo "$PWD"; echo "$HOME"; touch "$HOME/f" && echo home-writable; '
              'uname -r; uname -a; echo "$PATH"')
    r = job(root, ["sh", "-c", script], cwd="/tmp", kernel_release=root.kernel_release)
    assert r.returncode == 0, r.stdout
    uid, pwd, home, writable, release, everything, path = r.stdout.splitlines()
    assert uid != "0"                                   # not root
    assert pwd == "/tmp" and home.startswith("/home/") and writable == "home-writable"
    assert release == root.kernel_release != platform.release()
    assert root.kernel_release in everything and platform.release() not in everything
    assert path.split(":")[:2] == ["/usr/local/sbin", "/usr/local/bin"]


def test_a_32_bit_root_s_jobs_see_a_32_bit_machine(guest_image):
    root = guest_image("debian-bookworm-686").root
    assert root.arch == "i386"
    r = job(root, ["sh", "-c", "uname -m; uname -r; getconf LONG_BIT"],
            kernel_release=root.kernel_release, linux32=True)
    assert r.returncode == 0, r.stdout
    assert r.stdout.split() == ["i686", root.kernel_release, "32"]


def test_setuid_programs_give_the_build_user_nothing(guest_image):
    """The root's setuid-root programs (su, mount, ...) cannot raise a build."""
    root = guest_image("debian-bookworm").root
    setuid = [p for p in ("usr/bin/su", "usr/bin/mount", "usr/bin/passwd")
              if (root.tree / p).exists() and (root.tree / p).stat().st_mode & 0o4000]
    assert setuid, "the build root has no setuid program to try"
    r = job(root, ["sh", "-c", "grep NoNewPrivs /proc/self/status; "
                   "cat /proc/self/mountinfo | grep ' / / ' ; " + f"/{setuid[0]} --version"])
    assert "NoNewPrivs:\t1" in r.stdout and "nosuid" in r.stdout, r.stdout


def test_writes_outside_the_job_vanish_even_when_made_as_root(guest_image):
    """Run as root on purpose, so the writes succeed: the layer must drop them."""
    root = guest_image("debian-bookworm").root
    headers = f"/usr/src/linux-headers-{root.kernel_release}"
    before = digest(root.tree, critical_paths(root))
    damage = (f"echo 'all:; false' > {headers}/Makefile && "
              f"rm {headers}/include/generated/autoconf.h && "
              "rm /usr/bin/gcc && printf '#!/bin/sh\\nexit 1\\n' > /usr/bin/gcc && "
              f"echo planted > /usr/src/planted && echo planted > /lib/modules/planted && "
              "ls /usr/src/planted")
    r = job(root, ["sh", "-c", damage], as_root=True)
    assert r.returncode == 0 and "/usr/src/planted" in r.stdout, r.stdout  # it did happen...
    assert digest(root.tree, critical_paths(root)) == before                # ...elsewhere
    assert integrity.verify(root.dir) == []


def test_two_jobs_at_once_never_see_each_others_files(guest_image):
    root = guest_image("debian-bookworm").root
    seen: dict[int, str] = {}

    def one(i: int) -> None:
        # Each writes its mark, waits until the other has surely written, looks.
        r = job(root, ["sh", "-c", f"touch /tmp/mark-{i}; sleep 2; ls /tmp"])
        seen[i] = r.stdout
    threads = [threading.Thread(target=one, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "mark-1" in seen[1] and "mark-2" not in seen[1]
    assert "mark-2" in seen[2] and "mark-1" not in seen[2]


def test_every_process_a_job_starts_dies_with_it(guest_image):
    root = guest_image("debian-bookworm").root
    r = job(root, ["sh", "-c", "sleep 7771 & setsid sleep 7772 & echo started"])
    assert r.returncode == 0 and "started" in r.stdout
    assert processes_with("sleep 777") == []


def test_a_broken_sandbox_is_the_harness_s_error_not_the_command_s(guest_image):
    from harness.errors import InfraError
    root = guest_image("debian-bookworm").root
    with pytest.raises(InfraError, match="cannot run no-such-compiler"):
        job(root, ["no-such-compiler", "x.c"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args],
                          capture_output=True, text=True, timeout=900)


def only_results(results: Path) -> dict:
    (run_dir,) = [d for d in results.iterdir() if d.is_dir() and not d.is_symlink()]
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.integration
@pytest.mark.parametrize("driver, device, workload", [
    # KVER ?= $(shell uname -r), M=$(PWD); the test program lives in another
    # directory and includes the driver's header and one of its own.
    ("vendor_ring", "/dev/vendor_ring", "vendor_checks/ring_check.c"),
    # The LDD3 two-pass Makefile: PWD := $(shell pwd), KERNELDIR ?= ... uname -r,
    # and $(PWD)/../include: the tree around the module comes along.
    ("ldd_tree/scullpage", "/dev/scullpage", "ldd_tree/scullpage/scull_check.c"),
])
def test_real_world_makefiles_build_and_load(driver, device, workload, tmp_path: Path):
    tree = ["--source-tree", str(FIXTURES / "ldd_tree")] if driver.startswith("ldd") else []
    r = run_cli("--driver-dir", str(FIXTURES / driver), *tree, "--device", device,
                "--workload", str(FIXTURES / workload), "--results", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    (guest,) = only_results(tmp_path)["guests"]
    (d,) = guest["drivers"]
    # sparse's findings in someone else's code warn; they do not fail the run
    assert d["loaded"] and all(w["status"] == "pass" or (w["name"], w["status"]) ==
                               ("harness:sparse", "warn") for w in d["workloads"])
    if driver == "ldd_tree/scullpage":   # its header has a comment gcc warns about
        assert d["workloads"][0]["message"].startswith(
            "sparse: 1 finding(s), first ldd_compat.h:4:30: warning: \"/*\" within comment")
    if driver == "vendor_ring":  # the module says which kernel it was compiled for
        (check,) = [w for w in d["workloads"] if w["name"] == "ring_check"]
        assert check["metrics"]["built_for"] == guest["kernel_release"]


@pytest.mark.integration
def test_a_makefile_that_reaches_outside_its_directory_is_told_about_source_tree(
        tmp_path: Path):
    r = run_cli("--driver-dir", str(FIXTURES / "ldd_tree" / "scullpage"),
                "--workload", str(FIXTURES / "ldd_tree" / "scullpage" / "scull_check.c"),
                "--results", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "ldd_compat.h" in r.stderr and "--source-tree" in r.stderr
    (guest,) = only_results(tmp_path)["guests"]
    assert guest["error_kind"] == "build"


@pytest.mark.integration
def test_hostile_makefile_leaves_the_build_root_exactly_as_it_was(guest_image,
                                                                  tmp_path: Path):
    root = guest_image("debian-bookworm").root
    before = digest(root.tree, critical_paths(root))
    # A copy with a per-run nonce: the artifact cache must not answer for it,
    # or its Makefile would never run on a warm cache.
    driver = tmp_path / "evil_build"
    shutil.copytree(FIXTURES / "evil_build", driver)
    with (driver / "evil_build.c").open("a") as source:
        source.write(f"/* run {uuid.uuid4()} */\n")
    results = tmp_path / "results"
    r = run_cli("--driver-dir", str(driver),
                "--workload", str(driver / "evil_loaded.c"),
                "--results", str(results))
    assert r.returncode == 0, r.stdout + r.stderr
    (guest,) = only_results(results)["guests"]
    log = (results / "latest" / guest["dir"] / "build" / "logs" / "evil_build.log").read_text()
    assert "Permission denied" in log   # the attempts were made, by an unprivileged user
    assert digest(root.tree, critical_paths(root)) == before
    assert integrity.verify(root.dir) == []
    assert processes_with("sleep 31337") == []   # its background process died with it
