"""`mmap-harness illumos check`: the pure logic, the errors, and (with ILLUMOS_GATE
set to an illumos-gate checkout or bare repository) the real check against it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cache import Cache
from harness.illumos import csyms, cw, derived, flags
from harness.illumos.check import parse_nm
from harness.illumos.command import gcc_flag
from harness.illumos.gate import open_gate, text_loader
from harness.illumos.makevars import MakeVars

FIXTURES = Path(__file__).parent / "fixtures" / "illumos"
GATE = os.environ.get("ILLUMOS_GATE", "")
needs_gate = pytest.mark.skipif(not GATE, reason="set ILLUMOS_GATE to an illumos-gate "
                                "checkout or bare repository to run the real check")


def harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "illumos", "check", *args],
                          capture_output=True, text=True, timeout=600,
                          env=env if env is not None else os.environ.copy())


# --- pure logic -------------------------------------------------------------

MAKEFILE_UTS = """\
# Override the default, the kernel is squeaky clean
CERRWARN = -errtags=yes -errwarn=%all
CERRWARN += -_gcc=-Wno-missing-braces
CERRWARN += -_gcc=-Wno-sign-compare	\\
	-_gcc=-Wno-unknown-pragmas
$(RELEASE_BUILD)CERRWARN += -_gcc=-Wno-unused
CERRWARN += -_smatch=-p=illumos_kernel
$(OBJS_DIR)/foo.o := CERRWARN += -_gcc=-Wno-everything
OBJS_DIR_DBG64 = debug64
OBJS_DIR = $(OBJS_DIR_$(BUILD_TYPE))
OBJECTS = $(GENUNIX_OBJS:%=$(OBJS_DIR)/%)
GENUNIX_OBJS += a.o b.o
$(OBJS_DIR)/%.o:		$(UTSBASE)/common/os/%.c
	$(COMPILE.c) -o $@ $<
include $(UTSBASE)/Makefile.more
"""


def _vars(overrides: dict[str, str]) -> MakeVars:
    files = {"uts/Makefile.more": "$(OBJS_DIR)/bz2%.o:	$(UTSBASE)/../common/bzip2/%.c\n"}
    mv = MakeVars({"UTSBASE": "uts", "POUND_SIGN": "#", **overrides}, files.get)
    mv.set("RELEASE_BUILD", "$(POUND_SIGN)")     # Makefile.master's default
    mv.read(MAKEFILE_UTS)
    return mv


def test_cerrwarn_lines_as_the_gate_means_them():
    debug = _vars({"BUILD_TYPE": "DBG64"})
    assert debug.words("CERRWARN") == [
        "-errtags=yes", "-errwarn=%all", "-_gcc=-Wno-missing-braces",
        "-_gcc=-Wno-sign-compare", "-_gcc=-Wno-unknown-pragmas",
        "-_smatch=-p=illumos_kernel"]      # no RELEASE_BUILD line, no target's own
    release = _vars({"BUILD_TYPE": "OBJ64", "RELEASE_BUILD": ""})
    assert "-_gcc=-Wno-unused" in release.words("CERRWARN")
    assert debug.words("OBJECTS") == ["debug64/a.o", "debug64/b.o"]
    assert debug.pattern_rules == [("", "uts/common/os", "c"),
                                   ("bz2", "uts/../common/bzip2", "c")]


def test_cw_translates_as_cw_c_does():
    args = ["-m64", "-Ui386", "-xO3", "-xmodel=kernel", "-_gcc=-mno-mmx", "-v",
            "-errtags=yes", "-errwarn=%all", "-_gcc=-Wno-sign-compare", "-_gcc10=-gstrict-dwarf",
            "-_smatch=-p=illumos_kernel", "-Wu,-save_args", "-xc99=%all", "-D_KERNEL",
            "-I/g/uts/intel", "-Y", "I,/g/uts/common"]
    out = cw.translate(args, "gcc12")
    assert out[:len(cw.PROLOGUE)] == cw.PROLOGUE
    assert out[len(cw.PROLOGUE):] == [
        "-m64", "-mtune=opteron", "-Ui386", "-fno-strict-aliasing", "-fno-unit-at-a-time",
        "-fno-optimize-sibling-calls", "-O2", "-ffreestanding", "-mno-red-zone", "-mno-mmx",
        "-Wall", "-Wextra", "-Werror", "-Wno-sign-compare", "-msave-args", "-std=gnu99",
        "-D_KERNEL", "-ffreestanding", "-I/g/uts/intel", "-nostdinc", "-I/g/uts/common",
        "-mcmodel=kernel"]
    with pytest.raises(cw.CwError, match="mapping failed"):
        cw.translate(["-xspace"], "gcc12")


def test_c_definitions_are_told_from_declarations():
    source = """
#pragma weak ddi_alias = ddi_real
static int hidden;
extern int elsewhere;
int hz, *hzp = &hz;
struct seg_ops segdev_ops = { .dup = segdev_dup, };
int ddi_proto(int, char *);
static void
hidden_fn(void)
{
}
int
ddi_umem_lock(caddr_t addr, size_t len, int flags)
{
	return ("}" == 0);
}
CMI_HDL_OPFUNC(vendor, uint_t)

void __NORETURN
__stack_chk_fail(void)
{
}
int
old_style(a, b)
	int a;
	char *b;
{
	return (a);
}
"""
    assert csyms.c_globals(source) == {"ddi_alias", "hz", "hzp", "segdev_ops",
                                       "ddi_umem_lock", "__stack_chk_fail", "old_style"}


def test_entry_macros_become_globals_through_cpp(tmp_path: Path):
    """ENTRY()/ALTENTRY() and macros made of them, read after the preprocessor."""
    source = tmp_path / "ml.S"
    source.write_text(
        "#define ENTRY(x) .text; .globl x; .type x, @function; x:\n"
        "#define ALTENTRY(x) .globl x; x:\n"
        "#define MKTHUNK(reg) ENTRY(__x86_indirect_thunk_##reg) ret\n"
        "ENTRY(bcopy)\nALTENTRY(ovbcopy)\n\tret\nMKTHUNK(rax)\nlocal:\n\tret\n")
    out = subprocess.run(["gcc", "-E", "-P", "-x", "assembler-with-cpp", str(source)],
                         capture_output=True, text=True, check=True).stdout
    assert csyms.asm_globals(out) == {"bcopy", "ovbcopy", "__x86_indirect_thunk_rax"}


def test_nm_and_cflags():
    defined, undefined = parse_nm("_init T 0 10\nhelper t 10 4\nkmalloc U\n_info D 0 8\n")
    assert defined == {"_init": "T", "_info": "D"} and undefined == {"kmalloc"}
    assert gcc_flag("-_gcc=-Wno-parentheses") == "-Wno-parentheses"
    for bad in ("Wall", "-_smatch=off"):
        with pytest.raises(Exception, match="not a gcc option"):
            gcc_flag(bad)


# --- errors: never a traceback ----------------------------------------------

def _plain_repo(path: Path) -> Path:
    path.mkdir()
    (path / "README").write_text("not illumos\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    return path


@pytest.mark.parametrize("what, words", [
    ("missing", "no such directory"),
    ("plain-dir", "not a git checkout or bare repository"),
    ("other-repo", "is a git repository but not illumos-gate"),
    ("none", "no illumos-gate to check against"),
])
def test_a_missing_or_wrong_gate_is_explained(what, words, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "ILLUMOS_GATE"}
    gate = {"missing": tmp_path / "nope", "plain-dir": tmp_path,
            "other-repo": _plain_repo(tmp_path / "repo") if what == "other-repo" else None,
            "none": None}[what]
    args = ["--driver-dir", str(FIXTURES / "good_umem"), "--cache-dir", str(tmp_path / "c")]
    r = harness(*(["--gate", str(gate)] if gate else []), *args, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and "what to do:" in r.stderr
    assert "Traceback" not in r.stderr


# --- against the real gate --------------------------------------------------

@pytest.fixture(scope="session")
def gate_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the gate is derived once."""
    return tmp_path_factory.mktemp("illumos-cache")


def check(gate_cache: Path, *args: str) -> subprocess.CompletedProcess:
    return harness("--gate", GATE, "--cache-dir", str(gate_cache), *args)


@needs_gate
def test_good_driver_passes(gate_cache: Path):
    r = check(gate_cache, "--driver-dir", str(FIXTURES / "good_umem"))
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if "good_umem" in x][0]
    assert line.startswith("PASS good_umem: compile ok")
    for step in ("link ok", "symbols ok", "entry points ok (_init _info _fini)",
                 "cstyle ok (cstyle -p -P -c)"):
        assert step in line


@needs_gate
@pytest.mark.parametrize("fixture, failed, evidence", [
    ("bad_ddi_args", "compile FAILED",
     "error: too few arguments to function 'ddi_umem_alloc'"),   # gcc runs with LC_ALL=C
    ("bad_linux_symbol", "symbols FAILED (1 undefined symbol(s) that neither unix nor "
     "genunix defines)", "kmalloc  (debug and non-debug builds)"),
    ("bad_cstyle", "cstyle FAILED", "bad_cstyle.c: 33: missing space between keyword and paren"),
    ("bad_no_fini", "entry points FAILED (_fini not defined", "debug build: missing _fini"),
])
def test_broken_drivers_fail_for_their_reason(gate_cache: Path, fixture: str, failed: str,
                                              evidence: str):
    r = check(gate_cache, "--driver-dir", str(FIXTURES / fixture))
    assert r.returncode == 1, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith(("PASS", "FAIL"))][0]
    assert line.startswith(f"FAIL {fixture}:") and failed in line, r.stdout
    assert line.count("FAILED") == 1, line      # only for that reason
    assert evidence in r.stdout


@needs_gate
def test_several_modules_one_run(gate_cache: Path):
    r = check(gate_cache, "--driver-dir", str(FIXTURES / "good_umem"),
              "--driver-dir", str(FIXTURES / "bad_no_fini"))
    assert r.returncode == 1
    assert "PASS good_umem" in r.stdout and "FAIL bad_no_fini" in r.stdout


@needs_gate
def test_winlockio_from_the_gate_passes_with_its_makefile_flags(gate_cache: Path,
                                                               tmp_path: Path):
    """The gate's own devmap_umem_setup driver, with the CERRWARN of
    uts/intel/winlock/Makefile. It predates git-pbchk's picky continuation rule
    (cstyle -p), which the gate applies only to files a change touches."""
    gate = open_gate(Path(GATE))
    src = tmp_path / "winlock"
    src.mkdir()
    path = "usr/src/uts/common/io/winlockio.c"
    (src / "winlockio.c").write_bytes(gate.read_files([path])[path])
    own = flags.module_cerrwarn(text_loader(gate), "usr/src/uts/intel/winlock/Makefile")
    assert own == ["-Wno-parentheses"]
    cflags = [f"--cflag={f}" for f in own]
    r = check(gate_cache, "--driver-dir", str(src), *cflags, "--no-cstyle-picky")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS winlock:" in r.stdout and "cstyle ok (cstyle -P -c)" in r.stdout
    picky = check(gate_cache, "--driver-dir", str(src), *cflags)
    complaints = [x for x in picky.stdout.splitlines() if "winlockio.c: " in x]
    assert picky.returncode == 1 and complaints
    assert all(x.endswith("continuation line should be indented by 4 spaces")
               for x in complaints)
    bare = check(gate_cache, "--driver-dir", str(src), "--no-cstyle-picky")
    assert bare.returncode == 1 and "[-Werror=parentheses]" in bare.stdout


@needs_gate
def test_a_pc_platform_driver_from_the_gate_passes_as_an_i86pc_module(gate_cache: Path,
                                                                     tmp_path: Path):
    """xsvc, the gate's devmap driver of uts/i86pc, includes <sys/xsvc.h> from
    uts/i86pc: it compiles with --platform i86pc (that directory on its include
    path, as uts/i86pc/Makefile.files puts it), and not as a uts/intel module.
    Its CERRWARN comes from its own Makefile, read from the gate."""
    gate = open_gate(Path(GATE))
    src = tmp_path / "xsvc"
    src.mkdir()
    path = "usr/src/uts/i86pc/io/xsvc/xsvc.c"
    (src / "xsvc.c").write_bytes(gate.read_files([path])[path])
    own = flags.module_cerrwarn(text_loader(gate), "usr/src/uts/i86pc/xsvc/Makefile")
    assert "-Wno-maybe-uninitialized" in own
    cflags = [f"--cflag={f}" for f in own]
    r = check(gate_cache, "--driver-dir", str(src), "--platform", "i86pc", *cflags)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^PASS xsvc: .*symbols ok .*cstyle ok", r.stdout, re.M), r.stdout
    intel = check(gate_cache, "--driver-dir", str(src), *cflags)
    assert intel.returncode == 1 and "sys/xsvc.h: No such file or directory" in intel.stdout


@needs_gate
def test_kernel_symbols_are_the_kernels(gate_cache: Path):
    gate = open_gate(Path(GATE))
    data = derived.derive(gate, Cache(gate_cache))
    for ddi in ("devmap_umem_setup", "ddi_umem_alloc", "ddi_soft_state_zalloc", "cmn_err",
                "hz", "_pagesize", "mod_driverops", "getminor", "ptob",
                "__stack_chk_guard", "bcopy", "__x86_indirect_thunk_rax"):
        assert ddi in data.symbols, ddi
    for linux in ("kmalloc", "remap_pfn_range", "vm_insert_page", "printk"):
        assert linux not in data.symbols, linux
    # bcopy and the retpoline thunks exist only in assembly (uts/intel/ml):
    # a list read from C alone would miss them.
    c_only = set()
    for path in ("usr/src/uts/intel/ml/copy.S", "usr/src/uts/intel/ml/retpoline.S"):
        c_only |= csyms.c_globals(gate.read_files([path])[path].decode())
    assert "bcopy" not in c_only and "__x86_indirect_thunk_rax" not in c_only
    assert 5000 < len(data.symbols) < 50000


@needs_gate
def test_second_run_uses_the_cache(gate_cache: Path):
    gate = open_gate(Path(GATE))
    derived.derive(gate, Cache(gate_cache))
    again = derived.derive(gate, Cache(gate_cache))
    assert again.built_s == 0.0
    assert (again.dir / "derived.json").is_file() and again.headers.is_dir()


@needs_gate
def test_a_checkout_is_a_gate_too(tmp_path: Path):
    """A clone with a .git directory (sharing the objects: no copy) opens as
    the same commit as the bare repository."""
    clone = tmp_path / "illumos-gate"
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", GATE, str(clone)],
                   check=True)
    assert open_gate(clone).commit == open_gate(Path(GATE)).commit
    (clone / "usr").mkdir()
    r = harness("--gate", str(clone / "usr"), "--driver-dir", str(FIXTURES / "good_umem"),
                "--cache-dir", str(tmp_path / "c"))
    assert r.returncode == 2 and "inside a git tree, not at its top" in r.stderr
    assert f"--gate {clone}" in r.stderr


@needs_gate
def test_the_template_drivers_and_their_workloads_pass(gate_cache: Path):
    """Every spec with an illumos template, rendered, and every workload those
    specs run (-m32 ones too) compiled against the gate's userland headers."""
    r = check(gate_cache)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("mmap_umem", "mmap_remap", "mmap_fault", "mmap_dmabuf"):
        assert re.search(rf"^PASS {name}: .*symbols ok .*cstyle ok", r.stdout, re.M), r.stdout
    for workload in ("umem_compat-m32", "refusals-m32", "fuzz", "dmabuf_vma"):
        assert f"PASS workload {workload}: compile ok" in r.stdout


def test_the_shared_api_header_is_cstyle_checked_with_the_templates(tmp_path: Path):
    """mmap_harness.h is compiled into every illumos template: the gate's
    cstyle reads it too (a `#define X` with a space would fail the check)."""
    from harness import drivers
    from harness.illumos import sources

    (module,) = sources.rendered(drivers.find_specs(["mmap_umem"]), tmp_path)
    assert drivers.INCLUDE_DIR / drivers.API_HEADER in module.style_files


@needs_gate
def test_the_warning_policy_and_include_paths_come_from_the_gate_s_makefiles(gate_cache: Path):
    """Makefile.uts's CERRWARN, read from the real gate: -Wall -Wextra -Werror
    less its exceptions in both builds; the non-DEBUG build's RELEASE_BUILD
    lines add -Wno-unused and -Wno-empty-body. A PC platform module's include
    path has uts/i86pc; an ISA-wide one's does not."""
    data = derived.derive(open_gate(Path(GATE)), Cache(gate_cache))
    for platform in ("intel", "i86pc"):
        debug, release = (data.flags[platform][b].gate_args for b in ("debug", "non-debug"))
        for args in (debug, release):
            assert {"-Wall", "-Wextra", "-Werror", "-Wno-missing-braces",
                    "-Wno-unused-parameter"} <= set(args)
        assert "-Wno-unused" not in debug and "-Wno-empty-body" not in debug
        assert {"-Wno-unused", "-Wno-empty-body"} <= set(release)
    assert "usr/src/uts/i86pc" in data.flags["i86pc"]["debug"].include_dirs()
    assert "usr/src/uts/i86pc" not in data.flags["intel"]["debug"].include_dirs()


# Upstream illumos-gate's "17116 devmgmt: impossible condition" (2025-02-03):
# the commit the issue names, carried by the r1mikey/illumos-gate fork.
ISSUE_COMMIT = "367731f049bfcb9d9d460279bdeece464fbd5ef9"


@needs_gate
def test_the_template_drivers_pass_at_the_upstream_commit_too(gate_cache: Path,
                                                               tmp_path: Path):
    """The same check at another commit of the same repository: a shared bare
    clone (objects borrowed, nothing copied) with HEAD at ISSUE_COMMIT."""
    has = subprocess.run(["git", "-C", GATE, "cat-file", "-e", f"{ISSUE_COMMIT}^{{commit}}"],
                         capture_output=True)
    if has.returncode != 0:
        pytest.skip(f"ILLUMOS_GATE has no commit {ISSUE_COMMIT[:12]} (fetch r1mikey/illumos-gate)")
    gate = tmp_path / "gate.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--shared", GATE, str(gate)], check=True)
    subprocess.run(["git", "-C", str(gate), "update-ref", "--no-deref", "HEAD", ISSUE_COMMIT],
                   check=True)
    r = harness("--gate", str(gate), "--cache-dir", str(gate_cache))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"illumos-gate {ISSUE_COMMIT[:12]} ")
    for name in ("mmap_umem", "mmap_remap", "mmap_fault", "mmap_dmabuf"):
        assert re.search(rf"^PASS {name}: .*symbols ok .*cstyle ok", r.stdout, re.M), r.stdout


@needs_gate
def test_a_linux_only_workload_fails_the_illumos_compile(gate_cache: Path, tmp_path: Path):
    """mremap(2) is Linux's: unguarded, the illumos compile refuses it."""
    from harness.cache import Cache
    from harness.illumos import derived
    from harness.illumos.gate import open_gate
    from harness.illumos.userland import check_workloads
    from harness.plan import Workload

    source = tmp_path / "grow.c"
    source.write_text('#define _GNU_SOURCE\n#include <sys/mman.h>\n'
                      'int main(void) { return mremap(0, 1, 2, MREMAP_MAYMOVE) != 0; }\n')
    data = derived.derive(open_gate(Path(GATE)), Cache(gate_cache))
    (result,) = check_workloads([Workload("grow", source)], data, tmp_path / "work")
    assert not result.ok
    assert "mremap" in "\n".join(result.steps[0].details)
