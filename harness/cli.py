"""The command line: arguments become typed options here, and nowhere else.

Exit status: 0 everything passed, 1 something failed, 2 bad input or a host
problem, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

from . import (artifacts, bench, drivers, guests, history, images, interactive, kcidb, live,
               plan, report, results, session, snapshot, throughput)
from .illumos import command as illumos_check
from .cache import Cache, default_cache_dir
from .errors import ConfigError, HarnessError, HostError, Interrupted, why_stopped
from .guests import Flavour
from .procs import unwind_on_stop_signals
from .progress import Progress
from .results import PASS, table

EXIT_FAIL, EXIT_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmap-harness",
                                description="Boot real kernels in QEMU, build and load mmap "
                                            "drivers, run workloads, report results.")
    sub = p.add_subparsers(dest="command", required=True)

    def guest_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--guest", action="append", metavar="NAME",
                        help="guest definition from guest_images/ (repeatable; "
                             "default: the one marked default)")

    def common(sp: argparse.ArgumentParser) -> None:
        guest_option(sp)
        sp.add_argument("--flavour", choices=[f.value for f in Flavour], default="tiny",
                        help="tiny: initramfs guest (default); full: systemd on a disk")
        sp.add_argument("--cache-dir", type=Path, default=None,
                        help="image cache (default: $XDG_CACHE_HOME/mmap-harness)")

    def selection(sp: argparse.ArgumentParser) -> None:
        """What runs: the same options for `run` and `plan`."""
        sp.add_argument("--driver", action="append", metavar="NAME",
                        help="driver spec name from drivers/specs/ (repeatable; default: all)")
        sp.add_argument("--workload", action="append", default=[], type=Path, metavar="FILE.c",
                        help="extra workload, built static and run after each driver's own "
                             "(argument: the driver's device)")
        own_driver(sp)

    def own_driver(sp: argparse.ArgumentParser) -> None:
        """`--driver-dir` and its companions: `run`, `plan`, `shell`, `exec`."""
        byo = sp.add_argument_group("bring your own driver")
        byo.add_argument("--driver-dir", type=Path, metavar="DIR",
                         help="an out-of-tree module's source directory, built with its Makefile")
        byo.add_argument("--module-param", action="append", default=[], metavar="KEY=VALUE",
                         help="parameter for insmod of --driver-dir's module (repeatable)")
        byo.add_argument("--make-arg", action="append", default=[], metavar="VAR=VALUE",
                         help="extra make variable for --driver-dir (repeatable)")
        byo.add_argument("--source-tree", type=Path, metavar="DIR",
                         help="the tree around --driver-dir that its Makefile reaches into "
                              "(e.g. $(PWD)/../include): copied whole, make runs in --driver-dir")
        byo.add_argument("--device", metavar="/dev/NAME",
                         help="device node the --driver-dir module creates: checked after "
                              "insmod and given to each workload")

    def kernel_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--kernel", choices=list(images.KERNELS), default=images.STOCK,
                        help="stock: the suite's packaged kernel (default); debug: the same "
                             "source built with KASAN, KFENCE, DEBUG_VM, DEBUG_PAGEALLOC, "
                             "PAGE_TABLE_CHECK, lockdep, kmemleak, UBSAN (built once per "
                             "cache: ~15 min on 2 cores)")

    def cold_boot_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--cold-boot", action="store_true",
                        help="boot the guest's kernel: never start from the snapshot of "
                             "its first boot (tiny guests do by default), nor save one")

    def shard_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--shard", metavar="I/N",
                        help="only part I of N: each (guest, driver) with all its workloads "
                             "and checks belongs to one part; parts are disjoint, cover the "
                             "plan and depend only on the names (see `plan`)")

    run = sub.add_parser("run", help="build, boot, load, run workloads, report")
    common(run)
    kernel_option(run)
    run.add_argument("--image", type=Path, metavar="PATH",
                     help="the disk image an illumos guest boots (e.g. an OmniOS cloud "
                          "qcow2), overriding its definition's [image] path; opened "
                          "with snapshot=on, never written")
    run.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                     help="where run directories go (default: ./results)")
    run.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto",
                     help="auto probes KVM by booting and falls back to TCG (default)")
    selection(run)
    shard_option(run)
    run.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                     help="extra guest kernel command-line argument (repeatable)")
    run.add_argument("--no-debug-boot", action="store_true",
                     help="boot without slub_debug, page poisoning, panic_on_warn "
                          "(performance runs)")
    run.add_argument("--fuzz-seed", type=int, default=None, metavar="N",
                     help="seed of the fuzz workload (default: random; results.json has it)")
    run.add_argument("--fuzz-ops", type=int, default=10000, metavar="N",
                     help="calls the fuzz workload makes (default 10000)")
    run.add_argument("--workload-timeout", type=float, default=300.0, metavar="S",
                     help="seconds a workload may run before the guest counts as hung "
                          "(default 300, times --timeout-scale)")
    run.add_argument("--timeout-scale", type=float, default=1.0,
                     help="multiply every timeout (slow hosts)")
    cold_boot_option(run)
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="guests run at once (default 1; on 2 cores two TCG guests give "
                          "1.0-1.5x the throughput of one after the other: `bench --parallel "
                          "N` measures it)")
    run.add_argument("--strict-sparse", action="store_true",
                     help="a sparse finding in a module's own sources fails the run "
                          "(default: a 'warn' row that does not)")

    bn = sub.add_parser("bench", help="benchmark the drivers' mappings against anonymous "
                                      "memory, time the loop against its floor")
    common(bn)
    bn.add_argument("--driver", action="append", metavar="NAME",
                    help="driver spec (repeatable; default: every spec with benchmarks)")
    bn.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                    help="results root (default: results)")
    bn.add_argument("--repeat", type=int, default=bench.DEFAULT_REPEAT, metavar="N",
                    help=f"repetitions of each measurement (default {bench.DEFAULT_REPEAT}; "
                         "the median and the spread are reported)")
    bn.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto")
    bn.add_argument("--timeout-scale", type=float, default=1.0, metavar="F")
    bn.add_argument("--fail-on-regression", action="store_true",
                    help="exit 1 when a figure's latest change in the history is for the "
                         "worse (the history is DIR/history.sqlite)")
    bn.add_argument("--parallel", type=int, default=0, metavar="N",
                    help="also time the matrix `run` runs over these guests (two or more), "
                         "one after the other and N at once, and say why N at once gives "
                         "the throughput it gives")
    bn.add_argument("--rounds", type=int, default=throughput.DEFAULT_ROUNDS, metavar="R",
                    help=f"with --parallel: pairs of matrix runs, alternating which goes first "
                         f"(default {throughput.DEFAULT_ROUNDS})")
    cold_boot_option(bn)

    pl = sub.add_parser("plan", help="print the cases a run would run, one per line: "
                                     "GUEST DRIVER WORKLOAD")
    guest_option(pl)
    selection(pl)
    shard_option(pl)

    img = sub.add_parser("images", help="manage cached guest images")
    isub = img.add_subparsers(dest="action", required=True)
    build = isub.add_parser("build", help="build (or reuse) images")
    common(build)
    kernel_option(build)
    build.add_argument("--timeout-scale", type=float, default=1.0, metavar="F",
                       help="multiply the build steps' time limits (slow hosts)")
    isub.add_parser("list", help="list cached images").add_argument(
        "--cache-dir", type=Path, default=None)
    clean = isub.add_parser("clean", help="delete cached images, build roots and the "
                                          "modules and workloads built in them")
    clean.add_argument("--guest", action="append", metavar="NAME")
    clean.add_argument("--stale", action="store_true",
                       help="keep what the current definitions and recipes use")
    clean.add_argument("--cache-dir", type=Path, default=None)

    ill = sub.add_parser("illumos", help="illumos drivers, checked on this host")
    ilsub = ill.add_subparsers(dest="action", required=True)
    chk = ilsub.add_parser("check", help="compile, link, symbol and cstyle check against "
                                         "an illumos-gate tree")
    chk.add_argument("--gate", type=Path, default=None, metavar="PATH",
                     help="illumos-gate git checkout or bare repository "
                          f"(default: ${illumos_check.GATE_ENV})")
    chk.add_argument("--driver", action="append", metavar="NAME",
                     help="driver spec to render for illumos (repeatable; default: every "
                          "spec with an illumos template, unless --driver-dir is given)")
    chk.add_argument("--driver-dir", action="append", type=Path, default=[], metavar="DIR",
                     help="your own driver: every .c in DIR is one module (repeatable)")
    chk.add_argument("--cflag", action="append", default=[], metavar="FLAG",
                     help="gcc option after the gate's, as a driver's Makefile adds "
                          "`CERRWARN += -_gcc=FLAG` (repeatable; -_gcc= is accepted)")
    chk.add_argument("--platform", choices=["intel", "i86pc"], default="intel",
                     help="where --driver-dir's module would live in the gate: uts/intel "
                          "(default; pseudo and most device drivers) or uts/i86pc (PC "
                          "platform drivers such as xsvc: uts/i86pc is on their include path)")
    chk.add_argument("--no-cstyle-picky", dest="picky", action="store_false",
                     help="cstyle without -p, for gate code older than git-pbchk's rules")
    chk.add_argument("--cache-dir", type=Path, default=None,
                     help="where what is derived from the gate is kept "
                          "(default: $XDG_CACHE_HOME/mmap-harness)")
    chk.add_argument("--timeout-scale", type=float, default=1.0, metavar="F",
                     help="multiply each compiler and cstyle run's time limit")
    for name, what in (("shell", "boot a guest (with drivers loaded) and open a shell in it"),
                       ("exec", "boot a guest (with drivers loaded), run one command in it "
                                "and exit with its status")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("--guest", metavar="NAME",
                        help="guest definition from guest_images/ (default: the one marked "
                             "default)")
        sp.add_argument("--flavour", choices=[f.value for f in Flavour], default="tiny")
        sp.add_argument("--cache-dir", type=Path, default=None)
        sp.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto")
        sp.add_argument("--kernel-arg", action="append", default=[], metavar="ARG")
        sp.add_argument("--no-debug-boot", action="store_true",
                        help="boot without the debug arguments (slub_debug, panic_on_warn, ...)")
        sp.add_argument("--timeout-scale", type=float, default=1.0, metavar="F")
        sp.add_argument("--driver", action="append", default=[], metavar="NAME",
                        help="driver spec to build and load first (repeatable)")
        own_driver(sp)
        sp.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines on stderr")
        cold_boot_option(sp)
        kernel_option(sp)
    sub.choices["exec"].add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                                     help="the command and its arguments, after --")

    exp = sub.add_parser("export", help="write a finished run in another format")
    exp.add_argument("--kcidb", action="store_true", required=True,
                     help="KernelCI KCIDB JSON (schema v5.3): a checkout per run, a build "
                          "per guest and driver, a test per workload")
    exp.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                     help="a run directory (the one holding results.json), e.g. "
                          "results/latest")
    exp.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                     help="write here instead of standard output")

    rep = sub.add_parser("report", help="write the bench history as one HTML page: each "
                                        "figure over time with its changes, and the latest "
                                        "figures against their baselines")
    rep.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                     help=f"the results root holding {history.DB_NAME} (default: results)")
    rep.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                     help="where the page goes (default: DIR/report.html)")
    return p


def _read_run(run_dir: Path) -> dict:
    """A run directory's results.json, or a ConfigError saying what to give instead."""
    path = run_dir / "results.json"
    hint = "give a run directory under --results (default ./results), e.g. results/latest"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory", hint=hint)
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no results.json: not a run directory, or the run "
                          "never started", hint=hint)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} cannot be read as JSON: {e}",
                          hint="a run still writing it? wait for it to finish; "
                               "otherwise the file is damaged") from None
    if not isinstance(data, dict) or "run_id" not in data or not isinstance(
            data.get("guests", []), list):
        raise ConfigError(f"{path} is not an mmap-harness results.json (no run_id or guests)",
                          hint=hint)
    return data


def _cmd_export(args: argparse.Namespace) -> int:
    data = _read_run(args.run_dir)
    try:
        text = json.dumps(kcidb.to_kcidb(data), indent=2) + "\n"
    except (KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{args.run_dir / 'results.json'} lacks what schema 1 has "
                          f"({type(e).__name__}: {e})",
                          hint="export a results.json written by mmap-harness") from None
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as e:
            raise ConfigError(f"cannot write {args.output}: {e.strerror}",
                              hint="choose a writable -o FILE") from None
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    out = args.output or args.results / "report.html"
    print(f"report: {report.write_html(args.results / history.DB_NAME, out)}")
    return 0


def _guests(names: list[str] | None) -> list[guests.GuestDefinition]:
    if not names:
        return [guests.default_guest()]
    return [guests.find(n) for n in names]


def _with_images(definitions: list[guests.GuestDefinition],
                 image: Path | None) -> list[guests.GuestDefinition]:
    """`--image` given to the one guest that boots a disk image; every such
    guest's image is checked now, before anything starts."""
    if image is not None:
        if len(definitions) != 1:
            raise ConfigError("--image names the disk image of one guest; "
                              f"{len(definitions)} guests were chosen",
                              hint="run each image-booted guest on its own: "
                                   "--guest NAME --image PATH")
        definitions = [guests.with_image(definitions[0], image)]
    for g in definitions:
        if g.image is not None:
            guests.image_path(g)
    return definitions


def _specs(names: list[str] | None, default_all: bool) -> list[drivers.DriverSpec]:
    if names:
        return drivers.find_specs(names)
    return drivers.all_specs() if default_all else []


def _own_driver_given(args: argparse.Namespace) -> bool:
    """Whether --driver-dir was given; its companions alone are an error."""
    if args.driver_dir is None and (args.module_param or args.make_arg or args.device
                                    or args.source_tree):
        raise ConfigError("--module-param, --make-arg, --device and --source-tree go with "
                          "--driver-dir", hint="add --driver-dir DIR, or drop those options")
    return args.driver_dir is not None


def _plans(args: argparse.Namespace) -> list[plan.DriverPlan]:
    """--driver-dir alone runs only that module; otherwise the harness's drivers."""
    extra = plan.extra_workloads(args.workload)
    byo = _own_driver_given(args)
    plans = [plan.template_plan(s, extra) for s in _specs(args.driver, default_all=not byo)]
    if byo:
        if not extra:
            raise ConfigError("--driver-dir needs at least one --workload FILE.c to run",
                              hint="add --workload path/to/test.c (pass = exit status 0)")
        ext = plan.external_driver(args.driver_dir, args.module_param, args.make_arg,
                                   args.device, args.source_tree)
        plans.append(plan.external_plan(ext, extra))
    return plans


def _shard(args: argparse.Namespace) -> plan.Shard | None:
    return None if args.shard is None else plan.Shard.parse(args.shard)


def _cmd_plan(args: argparse.Namespace) -> int:
    shard = _shard(args)
    names = [g.name for g in _guests(args.guest)]
    for case in plan.cases(names, _plans(args), shard):
        print(" ".join(case))
    return 0


def _cmd_run(args: argparse.Namespace, progress: Progress) -> int:
    shard = _shard(args)
    seed = secrets.randbits(32) if args.fuzz_seed is None else args.fuzz_seed
    if not 0 <= seed < 2**32 or args.fuzz_ops < 1:
        raise ConfigError("--fuzz-seed must be 0..4294967295 and --fuzz-ops at least 1",
                          hint="take the seed from the fuzz row of results.json")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: at least one guest must run",
                          hint="give --jobs 1 (one guest after the other) or more")
    if args.timeout_scale <= 0 or args.workload_timeout <= 0:
        raise ConfigError("--timeout-scale and --workload-timeout must be positive",
                          hint="use a factor such as 2 on a slow host")
    definitions, plans = _with_images(_guests(args.guest), args.image), _plans(args)
    per_guest = None
    if shard is not None:
        per_guest = plan.shard_drivers([g.name for g in definitions], plans, shard)
        definitions = [g for g in definitions if g.name in per_guest]
        if not definitions:
            print(f"shard {shard}: no (guest, driver) of this plan falls in it; nothing to run")
            return 0
        for name, chosen in per_guest.items():
            progress.say("shard", f"{shard}: {name} runs {', '.join(p.key for p in chosen)}")
    opts = session.RunOptions(
        guests=definitions, drivers=plans, guest_drivers=per_guest,
        flavour=Flavour(args.flavour), results_root=args.results,
        cache_dir=args.cache_dir or default_cache_dir(), accel=args.accel,
        kernel_args=args.kernel_arg, debug_boot=not args.no_debug_boot,
        fuzz_seed=seed, fuzz_ops=args.fuzz_ops, cold_boot=args.cold_boot, kernel=args.kernel,
        strict_static=args.strict_sparse, jobs=args.jobs,
        timeouts=session.Timeouts(workload_s=args.workload_timeout, scale=args.timeout_scale))
    result, run_dir = session.run(opts, progress)
    print(table(result))
    print(f"results: {run_dir / 'results.json'}")
    return 0 if result.status == PASS else EXIT_FAIL


def _cmd_bench(args: argparse.Namespace, progress: Progress) -> int:
    if not 3 <= args.repeat <= 1000:
        raise ConfigError("--repeat must be 3..1000", hint="the default is "
                          f"{bench.DEFAULT_REPEAT}: enough for a stable median")
    if args.timeout_scale <= 0:
        raise ConfigError("--timeout-scale must be positive")
    definitions = _guests(args.guest)
    _check_parallel(args, definitions)
    plans = bench.bench_plans(_specs(args.driver, default_all=True))
    opts = session.RunOptions(
        guests=definitions, drivers=plans, flavour=Flavour(args.flavour),
        results_root=args.results, cache_dir=args.cache_dir or default_cache_dir(),
        accel=args.accel, debug_boot=False,   # the debug options change the figures
        workload_env=(("MH_BENCH_REPEAT", str(args.repeat)),), cold_boot=args.cold_boot,
        timeouts=session.Timeouts(scale=args.timeout_scale))
    result, run_dir = session.run(opts, progress)
    result.bench = bench.summarize(result, args.repeat)
    if args.parallel:
        # `run`'s matrix as `run` runs it: every driver, debug options on.
        matrix = dataclasses.replace(
            opts, drivers=[plan.template_plan(s, []) for s in drivers.all_specs()],
            debug_boot=True, workload_env=(), results_root=run_dir / "parallel")
        result.bench["parallel"] = throughput.summarize(
            throughput.measure(matrix, args.parallel, args.rounds, progress), os.cpu_count() or 1)
    results.write_json(result, run_dir / "results.json")
    print(bench.table(result.bench))
    regressed = bench.record(args.results, result)
    for c in regressed:
        print(f"regression: {c.metric} {c.size_pct:+.1f}% ({c.before:.4g} -> {c.after:.4g}) "
              f"since run {c.run_id}")
    page = report.write_html(args.results / history.DB_NAME, run_dir / "report.html",
                             run_id=result.run_id)
    print(f"run {result.run_id}: {result.status.upper()}; "
          f"{len(regressed) or 'no'} regression(s) in the history")
    print(f"results: {run_dir / 'results.json'}\nreport: {page}")
    failed_matrix = (result.bench.get("parallel") or {}).get("status", PASS) != PASS
    if result.status != PASS or failed_matrix or (regressed and args.fail_on_regression):
        return EXIT_FAIL
    return 0


def _check_parallel(args: argparse.Namespace, definitions: list[guests.GuestDefinition]) -> None:
    """Before anything boots: --parallel needs a matrix to split."""
    if args.parallel and (args.parallel < 2 or len(definitions) < 2):
        raise ConfigError(f"--parallel {args.parallel} with {len(definitions)} guest(s): "
                          "nothing to run at once",
                          hint="give --parallel 2 (or more) and at least two --guest, e.g. "
                               "--guest debian-bookworm --guest debian-trixie")
    if args.parallel and not 1 <= args.rounds <= 50:
        raise ConfigError("--rounds must be 1..50", hint=f"the default is "
                          f"{throughput.DEFAULT_ROUNDS}")


def _cmd_images(args: argparse.Namespace, progress: Progress) -> int:
    cache = Cache(args.cache_dir or default_cache_dir())
    if args.action == "list":
        for row in images.list_images(cache):
            print(f"{row['kind']:<7} {row['name']:<48} {row['size_mib']:>6} MiB  {row['path']}")
        count, size = artifacts.usage(cache)
        print(f"{'built':<7} {f'{count} modules and workloads':<48} {size // 2**20:>6} MiB  "
              f"{cache.root / artifacts.KIND}")
        return 0
    if args.action == "clean":
        keep = frozenset(images.current_keys(list(guests.all_definitions().values()), cache)
                         if args.stale else ())
        for name in args.guest or [None]:
            done = images.clean(cache, name, keep)
            more = [artifacts.clean(cache, name, keep), snapshot.clean(cache, name, keep)]
            done = images.Cleaned(done.removed + [p for m in more for p in m.removed],
                                  done.in_use + [p for m in more for p in m.in_use])
            for path in done.removed:
                print(f"removed {path}")
            for path in done.in_use:
                print(f"kept {path}: in use by a running harness")
        return 0
    if args.timeout_scale <= 0:
        raise ConfigError("--timeout-scale must be positive")
    for g in _guests(args.guest):
        image = images.ensure(g, Flavour(args.flavour), cache, progress, args.kernel,
                              args.timeout_scale)
        print(f"{g.name} {args.flavour}: {image.dir} (kernel {image.kernel_release})")
    return 0


def _cmd_illumos(args: argparse.Namespace) -> int:
    if args.timeout_scale <= 0:
        raise ConfigError("--timeout-scale must be positive")
    results = illumos_check.run(illumos_check.Request(
        gate=args.gate, drivers=args.driver, driver_dirs=args.driver_dir,
        cflags=args.cflag, picky=args.picky,
        cache_dir=args.cache_dir or default_cache_dir(),
        timeout_scale=args.timeout_scale, platform=args.platform), print)
    return 0 if all(r.ok for r in results) else EXIT_FAIL


def _cmd_guest(args: argparse.Namespace, progress: Progress) -> int:
    """`shell` and `exec`: one guest, kept for as long as the person needs it."""
    argv = args.argv[1:] if getattr(args, "argv", [])[:1] == ["--"] else getattr(args, "argv", [])
    if args.command == "exec" and not argv:
        raise ConfigError("exec needs a command", hint="mmap-harness exec -- uname -r")
    if args.timeout_scale <= 0:
        raise ConfigError("--timeout-scale must be positive")
    _own_driver_given(args)
    (definition,) = _guests([args.guest] if args.guest else None)
    drivers.find_specs(args.driver)     # a typo is an error before anything boots
    options = live.LiveOptions(
        args.cache_dir or default_cache_dir(), Flavour(args.flavour), args.accel,
        tuple(([] if args.no_debug_boot else session.DEBUG_KERNEL_ARGS) + args.kernel_arg),
        session.Timeouts(scale=args.timeout_scale), args.cold_boot, args.kernel)
    progress.quiet = args.quiet
    with tempfile.TemporaryDirectory(prefix="mmap-harness-guest-") as tmp, \
            live.LiveGuest(definition, options, Path(tmp), progress) as guest:
        for name in args.driver:
            guest.load_module(name)
        if args.driver_dir is not None:
            guest.load_module(args.driver_dir, args.module_param, args.device, args.make_arg,
                              args.source_tree)
        if args.command == "exec":
            return interactive.execute(guest, Path(tmp), argv)
        progress.say("shell", f"{definition.name}: `exit` or ^D ends the shell and the guest")
        return interactive.shell(guest, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unwind_on_stop_signals()
    progress = Progress()
    try:
        if args.command == "run":
            return _cmd_run(args, progress)
        if args.command == "bench":
            return _cmd_bench(args, progress)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "illumos":
            return _cmd_illumos(args)
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command in ("shell", "exec"):
            return _cmd_guest(args, progress)
        return _cmd_images(args, progress)
    except (KeyboardInterrupt, Interrupted) as e:
        what = why_stopped(e)
        print(f"mmap-harness: {what}; QEMU stopped, results and logs kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, HostError) as e:
        print(f"mmap-harness: {e}", file=sys.stderr)
        return EXIT_INPUT
    except HarnessError as e:
        print(f"mmap-harness: {e}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
