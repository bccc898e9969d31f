"""A run's results.json as KernelCI KCIDB JSON (schema v5.3, the newest kcidb-io knows).

Pure: `to_kcidb(results)` takes the results.json dict and returns a KCIDB dict;
nothing is read or written here (the CLI's `export --kcidb` does the files).

How a run is mapped (origin "mmap_harness"; every id starts "mmap_harness:"):

  checkout  one per run, id `mmap_harness:<run_id>`. The harness boots
            distribution kernels and builds drivers, not a kernel git tree, so
            there is no git_* field: `comment` names the run, the host and the
            guests' kernel releases; `start_time` is the run's start,
            `origin_tests_finish_time` its end; `misc` keeps the host record,
            the fuzz seed and the kernel releases. `valid` is always true.
  build     one per (guest, driver), id `<checkout>:<guest dir>:<driver>`:
            `compiler` is the guest's compiler, `config_name` the guest's
            kernel release, `duration` the guest's build time, `status` PASS
            (the module built: its tests exist). `misc` has guest, flavour,
            driver, kernel_release, kernel_compiler, taint and taint_flags.
            A guest that never reached its drivers has one build
            `<checkout>:<guest dir>`, FAIL with the compiler output as
            `log_excerpt` when the build failed (error_kind "build"), with no
            status otherwise.
  test      one per workload row, id `<build>:<workload>`, path
            `mmap.<driver>.<workload>` (characters other than letters, digits,
            "_" and "-" become "_"); one `mmap.<driver>.load` per driver (insmod
            and the device node), id `<build>.load`; and for a guest that never
            reached its drivers one `mmap.boot`, id `<build>.boot`.
            status:  pass -> PASS, fail -> FAIL, error -> ERROR,
                     kernel-crash -> FAIL (the kernel under test oopsed or
                       panicked: a finding about the tested code, not a harness
                       failure; `log_excerpt` has the trace and
                       misc.harness_status says "kernel-crash"),
                     skipped -> SKIP, anything else -> ERROR.
            mmap.boot: error_kind boot/kernel-crash -> FAIL, build -> SKIP,
                     infra/input/interrupted -> MISS (the harness failed).
            `duration` is the row's seconds, `log_excerpt` its message (at
            most 16 KiB), `misc` its metrics and harness_status.
            `environment`: `comment` "<guest>/<flavour> kernel <release>
            (<accel>)", `misc` {guest, flavour, kernel_release, accel,
            accel_reason, cpu_model, boot_attempts}.
"""

from __future__ import annotations

import re

ORIGIN = "mmap_harness"
VERSION = {"major": 5, "minor": 3}
STATUS = {"pass": "PASS", "warn": "PASS", "fail": "FAIL", "error": "ERROR", "kernel-crash": "FAIL",
          "skipped": "SKIP", "skip": "SKIP"}
BOOT_STATUS = {"boot": "FAIL", "kernel-crash": "FAIL", "build": "SKIP"}
EXCERPT_MAX = 16384  # the schema's maxLength of log_excerpt


def to_kcidb(results: dict) -> dict:
    """The KCIDB v5.3 document of one run's results.json dict."""
    run_id = str(results["run_id"])
    checkout_id = f"{ORIGIN}:{run_id}"
    guests = results.get("guests", [])
    host = results.get("host", {})
    releases = sorted({g.get("kernel_release", "") for g in guests} - {""})
    checkout = {
        "id": checkout_id, "origin": ORIGIN, "valid": True,
        "comment": _text(f"mmap-harness run {run_id} on {host.get('hostname', '?')}, "
                         f"kernels {', '.join(releases) or 'unknown'}"),
        "misc": {"host": host, "fuzz": results.get("fuzz", {}), "kernel_releases": releases,
                 "status": results.get("status", "")},
    }
    _time(checkout, "start_time", results.get("started"))
    _time(checkout, "origin_tests_finish_time", results.get("finished"))
    builds: list[dict] = []
    tests: list[dict] = []
    for g in guests:
        env = _environment(g)
        drivers = g.get("drivers", [])
        if not drivers:
            build = _build(checkout_id, g, None)
            if g.get("error_kind") == "build":
                build["status"] = "FAIL"
                build["log_excerpt"] = _excerpt(g.get("error", ""))
            builds.append(build)
            kind = g.get("error_kind", "")
            tests.append(_test(build["id"] + ".boot", build["id"], "mmap.boot",
                               BOOT_STATUS.get(kind, "MISS" if g.get("error") else "PASS"),
                               g.get("error", ""), g.get("timings", {}).get("boot_to_ssh_s"),
                               env, {"error_kind": kind}))
            continue
        for d in drivers:
            build = _build(checkout_id, g, d)
            build["status"] = "PASS"
            builds.append(build)
            base = f"mmap.{_part(d['name'])}"
            loaded = d.get("loaded") and not d.get("error")
            tests.append(_test(build["id"] + ".load", build["id"], f"{base}.load",
                               "PASS" if loaded else "FAIL", d.get("error", ""),
                               g.get("timings", {}).get("load_s"), env,
                               {"error_kind": d.get("error_kind", "")}))
            for w in d.get("workloads", []):
                status = w.get("status", "")
                misc = {"harness_status": status, "metrics": w.get("metrics", {})}
                tests.append(_test(f"{build['id']}:{w['name']}", build["id"],
                                   f"{base}.{_part(w['name'])}", STATUS.get(status, "ERROR"),
                                   w.get("message", ""), w.get("seconds"), env, misc))
    return {"version": dict(VERSION), "checkouts": [checkout], "builds": builds,
            "tests": tests}


def _build(checkout_id: str, g: dict, d: dict | None) -> dict:
    guest_dir = g.get("dir") or f"{g['name']}-{g.get('flavour', '')}"
    build_id = f"{checkout_id}:{guest_dir}" + (f":{d['name']}" if d else "")
    misc = {"guest": g["name"], "flavour": g.get("flavour", ""),
            "kernel_release": g.get("kernel_release", ""),
            "kernel_compiler": g.get("kernel_compiler", "")}
    build = {"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN, "misc": misc}
    if d:
        misc.update(driver=d["name"], taint=d.get("taint", 0),
                    taint_flags=d.get("taint_flags", []))
        build["comment"] = _text(f"{d['name']} for {g['name']}/{g.get('flavour', '')}")
    if g.get("compiler"):
        build["compiler"] = _text(g["compiler"])
    if g.get("kernel_release"):
        build["config_name"] = _text(g["kernel_release"])
    seconds = g.get("timings", {}).get("build_s")
    if isinstance(seconds, (int, float)):
        build["duration"] = float(seconds)
    return build


def _test(test_id: str, build_id: str, path: str, status: str, message: str,
          seconds: float | None, env: dict, misc: dict) -> dict:
    test = {"id": test_id, "build_id": build_id, "origin": ORIGIN, "path": path,
            "status": status, "environment": env, "misc": misc}
    if message:
        test["log_excerpt"] = _excerpt(message)
    if isinstance(seconds, (int, float)):
        test["duration"] = float(seconds)
    return test


def _environment(g: dict) -> dict:
    release = g.get("kernel_release") or "unknown"
    return {"comment": _text(f"{g['name']}/{g.get('flavour', '')} kernel {release} "
                             f"({g.get('accel') or 'no accel'})"),
            "misc": {"guest": g["name"], **{key: g[key] for key in
                     ("flavour", "kernel_release", "accel", "accel_reason", "cpu_model",
                      "boot_attempts") if key in g}}}


def _part(name: str) -> str:
    """One component of a KCIDB test path: [a-zA-Z0-9_-]+."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


def _text(s: str) -> str:
    return s.replace("\0", "")


def _excerpt(s: str) -> str:
    """The end of a message (where a trace ends), within the schema's 16 KiB."""
    s = _text(s)
    return s if len(s) <= EXCERPT_MAX else "...\n" + s[-(EXCERPT_MAX - 4):]


def _time(obj: dict, key: str, value: str | None) -> None:
    if value:
        obj[key] = value
