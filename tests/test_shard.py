"""`plan --shard i/n` and `run --shard i/n`: shards are deterministic, disjoint
and together cover the plan; no guest boots here."""

import itertools
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness import cli, plan, session

GUESTS = [["debian-bookworm"], ["debian-trixie", "debian-bookworm"]]
DRIVERS = [["mmap_remap"], ["mmap_umem", "mmap_fault"],
           ["mmap_fault", "mmap_dmabuf", "mmap_remap"],
           ["mmap_umem", "mmap_remap", "mmap_dmabuf", "mmap_fault"]]
COUNTS = range(1, 6)


def _args(guests: list[str], drivers: list[str]) -> list[str]:
    return [*(a for g in guests for a in ("--guest", g)),
            *(a for d in drivers for a in ("--driver", d))]


def _plan(capsys, *args: str) -> list[str]:
    assert cli.main(["plan", *args]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("guests, drivers", list(itertools.product(GUESTS, DRIVERS)))
def test_shards_are_disjoint_and_cover_the_plan(capsys, guests, drivers):
    whole = _plan(capsys, *_args(guests, drivers))
    assert len(whole) == len(set(whole)) > 0
    assert {tuple(line.split())[:2] for line in whole} == set(itertools.product(guests, drivers))
    for n in COUNTS:
        parts = [_plan(capsys, *_args(guests, drivers), "--shard", f"{i}/{n}")
                 for i in range(1, n + 1)]
        seen = [line for part in parts for line in part]
        assert sorted(seen) == sorted(whole), n            # cover, each case once
        units = [{tuple(line.split())[:2] for line in part} for part in parts]
        for a, b in itertools.combinations(units, 2):       # a unit is never split
            assert not a & b
        sizes = [len(u) for u in units]
        assert max(sizes) - min(sizes) <= 1                 # round-robin: balanced


def test_shard_ignores_argument_order(capsys):
    a = _plan(capsys, *_args(["debian-bookworm", "debian-trixie"],
                             ["mmap_remap", "mmap_umem", "mmap_fault"]), "--shard", "2/3")
    b = _plan(capsys, *_args(["debian-trixie", "debian-bookworm"],
                             ["mmap_fault", "mmap_remap", "mmap_umem"]), "--shard", "2/3")
    assert sorted(a) == sorted(b) and a


_EVERY_SHARD = """
import contextlib, io, itertools, json, sys
from harness import cli
guests, drivers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for g, d in itertools.product(guests, drivers):
    for n in range(1, 6):
        for i in range(1, n + 1):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cli.main(["plan", *(a for x in g for a in ("--guest", x)),
                                 *(a for x in d for a in ("--driver", x)),
                                 "--shard", f"{i}/{n}"]) == 0
            out[f"{g} {d} {i}/{n}"] = buf.getvalue()
print(json.dumps(out, sort_keys=True))
"""


def test_shards_are_the_same_under_another_hash_seed():
    def every_shard(seed: str) -> dict:
        r = subprocess.run([sys.executable, "-c", _EVERY_SHARD, json.dumps(GUESTS),
                            json.dumps(DRIVERS)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    first, second = every_shard("1"), every_shard("4242")
    assert first == second
    assert len(first) == len(GUESTS) * len(DRIVERS) * sum(COUNTS)


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("value", ["0/4", "5/4", "1/0", "2", "a/b", "-1/3", "1/2/3", ""])
def test_bad_shard_is_explained(command, value, tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", command, f"--shard={value}",
                        *(["--results", str(tmp_path)] if command == "run" else [])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--shard" in r.stderr and "what to do:" in r.stderr
    assert "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())


def test_run_shard_runs_the_drivers_plan_lists(capsys, monkeypatch, tmp_path):
    """The RunOptions `run --shard` builds hold exactly the plan's (guest,
    driver) units; a guest with none is not booted."""
    captured = []

    def fake_run(opts, _progress):
        captured.append(opts)
        raise SystemExit(0)
    monkeypatch.setattr(session, "run", fake_run)
    args = _args(["debian-bookworm", "debian-trixie"], ["mmap_remap", "mmap_fault"])
    for n in (3, 4):
        for i in range(1, n + 1):
            listed = {tuple(line.split())[:2]
                      for line in _plan(capsys, *args, "--shard", f"{i}/{n}")}
            with pytest.raises(SystemExit):
                cli.main(["run", *args, "--shard", f"{i}/{n}", "--results", str(tmp_path)])
            opts = captured.pop()
            capsys.readouterr()
            ran = {(g.name, p.key) for g in opts.guests for p in opts.drivers_for(g)}
            assert ran == listed, (i, n)
            assert {g.name for g in opts.guests} == {g for g, _ in listed}


def test_run_shard_with_nothing_exits_0(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(session, "run", lambda *_: pytest.fail("nothing should run"))
    assert cli.main(["run", "--driver", "mmap_remap", "--shard", "2/2",
                     "--results", str(tmp_path)]) == 0
    assert "shard 2/2: no (guest, driver)" in capsys.readouterr().out


def test_no_shard_keeps_one_driver_list_for_every_guest():
    g1, g2 = SimpleNamespace(name="g1"), SimpleNamespace(name="g2")
    opts = session.RunOptions(guests=[g1, g2], drivers=["a", "b"])  # type: ignore[list-item]
    assert opts.drivers_for(g1) == opts.drivers_for(g2) == ["a", "b"]
    sharded = session.RunOptions(guests=[g1], drivers=["a", "b"],  # type: ignore[list-item]
                                 guest_drivers={"g1": ["b"]})  # type: ignore[dict-item]
    assert sharded.drivers_for(g1) == ["b"] and sharded.drivers_for(g2) == []


def test_shard_owns_round_robin_over_sorted_units():
    units = [("g2", "b"), ("g1", "b"), ("g1", "a"), ("g2", "a")]
    assert plan.Shard(1, 2).owns(units) == {("g1", "a"), ("g2", "a")}
    assert plan.Shard(2, 2).owns(units) == {("g1", "b"), ("g2", "b")}
    assert plan.Shard(3, 3).owns(units) == {("g2", "a")}
