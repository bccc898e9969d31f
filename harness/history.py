"""The history of bench figures: an SQLite file in the results root, and the
changes found in it.

    db = results_root / DB_NAME
    record(db, run_id, started, context, figures)  # after each bench run
    for ctx in contexts(db):
        for c in regressions(db, ctx): ...

One row per metric per bench run, with the run's comparability context (guest,
flavour, kernel release, CPU model, accelerator, host, harness version). Unlike
runs are never compared: a series is the values of one metric under one
identical Context, in the order the runs started. A metric name is unique
within a run and context (the bench code names it, e.g. "mmap_remap/
device_write_mib_s").

Changes are found by Apache Otava (the successor of Datastax's Hunter): e-divisive
means over sliding windows, each candidate kept only if Student's t-test between
the segments on either side gives p < MAX_PVALUE and the change is at least the
series' floor (`min_change`). On top of Otava, so that a shared 2-core machine
does not cry wolf:
  - the floor is MIN_CHANGE (5 %) or NOISE_FACTOR times the series' run-to-run
    noise, whichever is larger (figures here move 3-5 % between runs);
  - a change needs MIN_RUNS runs on each side: one slow or fast run, in the
    middle or the latest, is an outlier until more runs confirm it;
  - `before` and `after` are the medians of the segments between the changes
    kept, and a change whose medians differ by less than the floor is dropped.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import ConfigError, HarnessError, InfraError

DB_NAME = "history.sqlite"
SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 30.0   # a second process writing waits this long for the lock
BETTER = ("higher", "lower")

# Ten times stricter than Otava's default (0.001): e-divisive picks the split
# that best separates a window, so its t-test is optimistic; at 0.001 about 1 in
# 100 series of 25 runs with a real step and 4 % noise grew a second, false
# change in the few runs after it; at 0.0001 1 in 1000 did, and no step of 15 %
# or more was missed more often.
MAX_PVALUE = 0.0001
MIN_CHANGE = 0.05       # relative: below 5 % is noise on these machines
NOISE_FACTOR = 2.0      # ... and so is anything within twice the run-to-run noise
MIN_RUNS = 3            # runs on each side of a change


@dataclass(frozen=True)
class Context:
    """What must be equal for two figures to be compared."""
    guest: str
    flavour: str
    kernel: str
    cpu_model: str
    accel: str
    host: str
    harness_version: str

    def describe(self) -> str:
        return (f"{self.guest}/{self.flavour}, kernel {self.kernel}, cpu {self.cpu_model}, "
                f"{self.accel}, host {self.host}, harness {self.harness_version}")


@dataclass(frozen=True)
class Figure:
    """One metric of one run: the value (e.g. a median of repeats), its unit,
    which way is better, and the repeats' spread (e.g. min, q1, q3, max)."""
    metric: str
    value: float
    unit: str
    better: str
    spread: dict


@dataclass(frozen=True)
class Point:
    run_id: str
    started: str
    value: float


@dataclass(frozen=True)
class Change:
    """A change of level starting at run `run_id`: `before` and `after` are the
    medians of the segments on either side, `size_pct` the signed relative
    change (after/before - 1, in %); `regression`: worse in the metric's
    `better` direction."""
    metric: str
    run_id: str
    started: str
    before: float
    after: float
    size_pct: float
    regression: bool


CONTEXT_COLUMNS = tuple(f.name for f in fields(Context))
_COLUMNS = (*CONTEXT_COLUMNS, "metric", "run_id", "started", "started_s", "value", "unit",
            "better", "spread")
_WHERE_CONTEXT = " AND ".join(f"{c} = ?" for c in CONTEXT_COLUMNS)
_SCHEMA = (f"""
CREATE TABLE figures (
    {", ".join(f"{c} TEXT NOT NULL" for c in CONTEXT_COLUMNS)},
    metric TEXT NOT NULL,
    run_id TEXT NOT NULL,
    started TEXT NOT NULL,     -- ISO 8601, as the run wrote it
    started_s REAL NOT NULL,   -- the same in seconds since the epoch: a series' order
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    better TEXT NOT NULL CHECK (better IN ('higher', 'lower')),
    spread TEXT NOT NULL,      -- JSON object
    PRIMARY KEY ({", ".join(CONTEXT_COLUMNS)}, metric, run_id)
)""", f"PRAGMA user_version = {SCHEMA_VERSION}")


def harness_version() -> str:
    """The installed mmap-harness's version, for Context.harness_version."""
    try:
        return version("mmap-harness")
    except PackageNotFoundError:
        return "unknown"


def started_s(started: str) -> float:
    """Seconds since the epoch of an ISO 8601 time; one without a zone is UTC."""
    try:
        t = datetime.fromisoformat(started)
    except (TypeError, ValueError):
        raise ConfigError(f"run start {started!r} is not an ISO 8601 time",
                          hint="give the run's `started` from results.json") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def record(db: Path, run_id: str, started: str, context: Context,
           figures: list[Figure]) -> None:
    """Add one run's figures under `context`. Recording the same run again
    replaces its rows. Raises ConfigError for a bad figure or time, InfraError
    when the file cannot be written (or stays locked LOCK_TIMEOUT_S)."""
    if not run_id:
        raise ConfigError("a bench run needs a run_id to be recorded")
    for name, value in zip(CONTEXT_COLUMNS, astuple(context)):
        if not isinstance(value, str):
            raise ConfigError(f"context field {name} must be a string, not {value!r}")
    at_s = started_s(started)
    rows = [(*astuple(context), f.metric, run_id, started, at_s, *_checked(f))
            for f in figures]
    with _connect(db, write=True) as conn:
        conn.execute("BEGIN IMMEDIATE")   # take the write lock before reading the schema
        try:
            if _version(conn, db) == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
            conn.executemany(
                f"INSERT INTO figures ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))}) "
                f"ON CONFLICT DO UPDATE SET started = excluded.started, "
                f"started_s = excluded.started_s, value = excluded.value, "
                f"unit = excluded.unit, better = excluded.better, spread = excluded.spread",
                rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def contexts(db: Path) -> list[Context]:
    """Every context with figures, sorted."""
    rows = _query(db, f"SELECT DISTINCT {', '.join(CONTEXT_COLUMNS)} FROM figures "
                      f"ORDER BY {', '.join(CONTEXT_COLUMNS)}")
    return [Context(*r) for r in rows]


def metrics(db: Path, context: Context) -> list[str]:
    """The metrics recorded under `context`, sorted."""
    rows = _query(db, f"SELECT DISTINCT metric FROM figures WHERE {_WHERE_CONTEXT} "
                      "ORDER BY metric", astuple(context))
    return [r[0] for r in rows]


def series(db: Path, context: Context, metric: str) -> list[Point]:
    """The metric's values under `context`, oldest run first."""
    return [Point(r, s, v) for r, s, v, _ in _series_rows(db, context, metric)]


def run_figures(db: Path, context: Context, run_id: str) -> list[Figure]:
    """What one run recorded under `context` (none: [])."""
    rows = _query(db, f"SELECT metric, value, unit, better, spread FROM figures "
                      f"WHERE {_WHERE_CONTEXT} AND run_id = ? ORDER BY metric",
                  (*astuple(context), run_id))
    return [Figure(m, v, u, b, json.loads(s)) for m, v, u, b, s in rows]


def changes(db: Path, context: Context, metric: str) -> list[Change]:
    """The changes of level in the metric's series under `context`, oldest first."""
    rows = _series_rows(db, context, metric)
    if not rows:
        return []
    better = rows[-1][3]
    return find_changes([Point(r, s, v) for r, s, v, _ in rows], metric, better)


def regressions(db: Path, context: Context) -> list[Change]:
    """Every change for the worse under `context`, in any metric, oldest first
    (a regression later undone is still listed; Change.run_id says where it began)."""
    found = [c for m in metrics(db, context) for c in changes(db, context, m) if c.regression]
    return sorted(found, key=lambda c: (started_s(c.started), c.metric))


def find_changes(points: list[Point], metric: str, better: str) -> list[Change]:
    """The changes of level in `points` (oldest first), as `changes` finds them."""
    values = [p.value for p in points]
    starts = change_starts(values, [int(started_s(p.started)) for p in points])
    bounds = [0, *starts, len(values)]
    levels = [statistics.median(values[a:b]) for a, b in zip(bounds, bounds[1:])]
    found = []
    for i, start in enumerate(starts):
        before, after = levels[i], levels[i + 1]
        size = _relative(before, after)
        found.append(Change(metric, points[start].run_id, points[start].started, before, after,
                            100 * size, size < 0 if better == "higher" else size > 0))
    return found


def change_starts(values: list[float], times: list[int]) -> list[int]:
    """Indexes of `values` where a change of level starts (see the module's
    docstring for the method and the thresholds)."""
    if len(values) < 2 * MIN_RUNS:
        return []
    floor = min_change(values)
    # Imported here: numpy and scipy cost ~0.7 s, which recording and the rest
    # of the command line do not need.
    from otava.series import AnalysisOptions, Metric, Series
    options = AnalysisOptions()
    options.max_pvalue, options.min_magnitude = MAX_PVALUE, floor
    analysed = Series("bench", None, times, {"m": Metric()}, {"m": list(values)}, {}).analyze(
        options)
    starts = sorted(int(cp.index) for cp in analysed.change_points["m"])
    bounds = [0, *starts, len(values)]
    starts = [s for a, s, b in zip(bounds, bounds[1:], bounds[2:])
              if s - a >= MIN_RUNS and b - s >= MIN_RUNS]
    return _drop_small(values, starts, floor)


def min_change(values: list[float]) -> float:
    """The smallest relative change reported in this series: MIN_CHANGE, or
    NOISE_FACTOR times its run-to-run noise if larger. The noise is the
    normal-scaled median absolute deviation of successive differences over
    sqrt(2), relative to the median: a step moves one difference only, so the
    noise of a series with a change is still measured right."""
    if len(values) < 3:
        return MIN_CHANGE
    import numpy as np
    from scipy.stats import median_abs_deviation
    level = abs(statistics.median(values))
    if level == 0:
        return MIN_CHANGE
    noise = float(median_abs_deviation(np.diff(values), scale="normal")) / math.sqrt(2)
    return max(MIN_CHANGE, NOISE_FACTOR * noise / level)


def _drop_small(values: list[float], starts: list[int], floor: float) -> list[int]:
    """Without the changes whose segment medians differ by less than `floor`,
    smallest first (dropping one merges two segments, so the rest are remeasured)."""
    while starts:
        bounds = [0, *starts, len(values)]
        levels = [statistics.median(values[a:b]) for a, b in zip(bounds, bounds[1:])]
        sizes = [abs(_relative(a, b)) for a, b in zip(levels, levels[1:])]
        smallest = min(range(len(sizes)), key=sizes.__getitem__)
        if sizes[smallest] >= floor:
            break
        starts = starts[:smallest] + starts[smallest + 1:]
    return starts


def _relative(before: float, after: float) -> float:
    if before == 0:
        return 0.0 if after == 0 else math.copysign(math.inf, after)
    return (after - before) / abs(before)


def _checked(f: Figure) -> tuple[float, str, str, str]:
    if not f.metric:
        raise ConfigError("a bench figure has no metric name")
    if f.better not in BETTER:
        raise ConfigError(f"figure {f.metric!r}: better must be 'higher' or 'lower', "
                          f"not {f.better!r}")
    if not isinstance(f.value, (int, float)) or not math.isfinite(f.value):
        raise ConfigError(f"figure {f.metric!r}: value {f.value!r} is not a finite number")
    try:
        spread = json.dumps(f.spread, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"figure {f.metric!r}: spread cannot be kept as JSON: {e}") from None
    return float(f.value), f.unit, f.better, spread


def _series_rows(db: Path, context: Context, metric: str) -> list[tuple]:
    return _query(db, f"SELECT run_id, started, value, better FROM figures "
                      f"WHERE {_WHERE_CONTEXT} AND metric = ? ORDER BY started_s, run_id",
                  (*astuple(context), metric))


def _query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a read; a history not yet written has none (and is not created)."""
    if not db.exists():
        return []
    with _connect(db, write=False) as conn:
        return conn.execute(sql, args).fetchall() if _version(conn, db) else []


def _version(conn: sqlite3.Connection, db: Path) -> int:
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise ConfigError(f"{db} was written by a newer mmap-harness (history schema "
                          f"{found}, this one knows {SCHEMA_VERSION})",
                          hint="upgrade mmap-harness, or use another --results directory")
    return found


@contextmanager
def _connect(db: Path, write: bool) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (transactions are explicit), waiting
    LOCK_TIMEOUT_S for another process's lock; closed afterwards. A reader
    never creates the file (mode=rw), but may roll back a crashed writer's
    journal, which a read-only connection could not."""
    target = db.resolve().as_uri() + ("?mode=rwc" if write else "?mode=rw")
    try:
        conn = sqlite3.connect(target, timeout=LOCK_TIMEOUT_S, isolation_level=None, uri=True)
    except sqlite3.Error as e:
        raise _error(db, e) from None
    try:
        yield conn
    except sqlite3.Error as e:
        raise _error(db, e) from None
    finally:
        conn.close()


def _error(db: Path, e: sqlite3.Error) -> HarnessError:
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return InfraError(f"{db} stayed locked for {LOCK_TIMEOUT_S:.0f}s: {e}",
                          hint="another mmap-harness is writing it; try again")
    if isinstance(e, sqlite3.OperationalError):
        return InfraError(f"cannot use {db}: {e}", hint="check the results directory's "
                          "permissions and free space")
    return ConfigError(f"{db} is not a bench history ({e})",
                       hint=f"move it away; `mmap-harness bench` starts a new {DB_NAME}")
