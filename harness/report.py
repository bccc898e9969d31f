"""The bench history as one self-contained HTML page: no script, no external
resource; each plot is a PNG drawn by matplotlib's Agg canvas, embedded as base64.

    write_html(results_root / history.DB_NAME, results_root / "report.html")

Per context (harness.history.Context): a table of the latest figures against
their baselines, then a plot per metric over the runs, with a line where each
change found by harness.history starts, labelled with its size. With a run_id,
the page is that run's report: the history up to that run, the run marked.

The baseline of a figure is the median of the segment before the metric's last
change when it has one (the change is then the status), otherwise the median of
the runs before the latest; the table says which.
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import history
from .errors import ConfigError
from .history import Change, Context, Figure, Point

PLOT_INCHES, PLOT_DPI = (7.0, 2.6), 100
COLOURS = {"value": "#1f5fa8", "level": "#8a8a8a", "regression": "#c0392b",
           "improvement": "#1e8449", "run": "#e67e22"}


@dataclass(frozen=True)
class MetricView:
    """One metric of one context as the page shows it."""
    figure: Figure            # the figure of the reported (latest) run
    points: list[Point]       # the series up to that run
    changes: list[Change]
    baseline: float | None
    baseline_of: str          # which runs the baseline is the median of
    status: str
    kind: str                 # "regression", "improvement", "unconfirmed", "steady", "first"


def write_html(db: Path, out: Path, run_id: str | None = None,
               title: str = "mmap-harness bench history") -> Path:
    """Write the report of the history in `db` (of one run with `run_id`) to
    `out`; returns `out`. ConfigError: no history, an unknown run, or `out`
    cannot be written."""
    sections = []
    for context in history.contexts(db):
        views = _views(db, context, run_id)
        if views:
            sections.append((context, views))
    if not sections:
        if run_id is None:
            raise ConfigError(f"no bench history in {db}",
                              hint="run `mmap-harness bench` first: each bench run adds "
                                   "its figures to the history")
        raise ConfigError(f"run {run_id!r} has no figures in {db}",
                          hint="give the run_id of a bench run (its results directory's name)")
    page = _page(title, run_id, sections)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)   # a browser reloading never sees half a page
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}",
                          hint="choose a writable -o FILE") from None
    return out


def _views(db: Path, context: Context, run_id: str | None) -> list[MetricView]:
    views = []
    for metric in history.metrics(db, context):
        points = history.series(db, context, metric)
        last = points[-1].run_id if run_id is None else run_id
        upto = next((i for i, p in enumerate(points) if p.run_id == last), None)
        if upto is None:
            continue   # the reported run did not measure this metric here
        figure = next(f for f in history.run_figures(db, context, last) if f.metric == metric)
        views.append(_view(figure, points[:upto + 1]))
    return views


def _view(figure: Figure, points: list[Point]) -> MetricView:
    changes = history.find_changes(points, figure.metric, figure.better)
    values = [p.value for p in points]
    latest = values[-1]
    if changes:
        last = changes[-1]
        n_before = _index(points, last.run_id) - (
            _index(points, changes[-2].run_id) if len(changes) > 1 else 0)
        word = "regression" if last.regression else "improvement"
        return MetricView(figure, points, changes, last.before,
                          f"median of the {n_before} runs before the change at {last.run_id}",
                          f"{word} of {_pct(last.size_pct)} since run {last.run_id}", word)
    if len(points) == 1:
        return MetricView(figure, points, changes, None, "none: the first run", "first run",
                          "first")
    baseline = statistics.median(values[:-1])
    floor = history.min_change(values)
    off = (latest - baseline) / baseline if baseline else 0.0
    if abs(off) >= floor:
        worse = off < 0 if figure.better == "higher" else off > 0
        return MetricView(figure, points, changes, baseline,
                          f"median of the {len(values) - 1} runs before",
                          f"{_pct(100 * off)} ({'worse' if worse else 'better'}) in this "
                          f"run only: a change once {history.MIN_RUNS} runs show it",
                          "unconfirmed")
    return MetricView(figure, points, changes, baseline,
                      f"median of the {len(values) - 1} runs before",
                      f"no change beyond {_pct(100 * floor, signed=False)}", "steady")


def _page(title: str, run_id: str | None,
          sections: list[tuple[Context, list[MetricView]]]) -> str:
    e = html.escape
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    scope = (f"the report of bench run <b>{e(run_id)}</b> (the history up to it; the run is "
             f"marked in the plots)" if run_id else "the whole history")
    bad = [(i, c, v) for i, (c, views) in enumerate(sections) for v in views
           if v.kind == "regression"]
    summary = "".join(f'<li><a href="#ctx{i}">{e(c.guest)}/{e(c.flavour)}</a> '
                      f'{e(v.figure.metric)}: {e(v.status)}</li>' for i, c, v in bad)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p>{scope}; written {e(made)}. {len(sections)} context(s). Changes are found "
             f"by Apache Otava (e-divisive means, p &lt; {history.MAX_PVALUE}); a change is "
             f"at least {history.MIN_CHANGE:.0%} and twice the series' run-to-run noise, with "
             f"{history.MIN_RUNS} runs or more on each side. Figures of unlike contexts are "
             "never compared.</p>",
             f"<h2>Regressions in force: {len(bad)}</h2>",
             f"<ul>{summary}</ul>" if bad else "<p>none</p>"]
    for i, (context, views) in enumerate(sections):
        parts.append(_section(i, context, views, run_id))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _section(i: int, context: Context, views: list[MetricView], run_id: str | None) -> str:
    e = html.escape
    latest = max((v.points[-1] for v in views), key=lambda p: history.started_s(p.started))
    rows = []
    for v in views:
        f = v.figure
        spread = ", ".join(f"{k} {_num(x)}" for k, x in f.spread.items())
        if v.points[-1].run_id != latest.run_id:    # not measured in the latest run
            spread = f"run {v.points[-1].run_id}; {spread}"
        delta = (_pct(100 * (f.value - v.baseline) / v.baseline)
                 if v.baseline not in (None, 0) else "")
        rows.append(
            f'<tr class="{e(v.kind)}"><td>{e(f.metric)}</td><td>{e(f.unit)}</td>'
            f'<td>{e(f.better)}</td><td class="n">{e(_num(f.value))}'
            f'<div class="spread">{e(spread)}</div></td>'
            f'<td class="n">{e(_num(v.baseline)) if v.baseline is not None else "–"}</td>'
            f'<td class="n">{e(delta)}</td><td>{e(v.baseline_of)}</td>'
            f'<td class="status">{e(v.status)}</td></tr>')
    plots = "\n".join(
        f'<figure><img alt="{e(v.figure.metric)} over {len(v.points)} runs" '
        f'src="data:image/png;base64,{_plot(v, run_id)}"></figure>' for v in views)
    fields = "".join(f"<dt>{e(k.replace('_', ' '))}</dt><dd>{e(getattr(context, k))}</dd>"
                     for k in history.CONTEXT_COLUMNS)
    head = "".join(f"<th>{h}</th>" for h in ("metric", "unit", "better", "this run",
                                               "baseline", "this run vs baseline",
                                               "baseline is the", "status"))
    return (f'<section id="ctx{i}"><h2>{e(context.describe())}</h2><dl>{fields}</dl>'
            f"<table><caption>the figures of run {e(latest.run_id)} against their baselines"
            f"</caption><tr>{head}</tr>{''.join(rows)}</table>"
            f'<div class="plots">{plots}</div></section>')


def _plot(v: MetricView, run_id: str | None) -> str:
    """The metric over the runs as a base64 PNG: values, segment medians, a
    line where each change starts with its size, the reported run marked."""
    # Imported here: matplotlib costs ~0.5 s that the rest of the command line
    # does not need. The Figure/Agg canvas pair keeps no global state (no pyplot).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as PlotFigure

    fig = PlotFigure(figsize=PLOT_INCHES, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(v.points)))
    ax.plot(xs, [p.value for p in v.points], marker="o", markersize=3.5, linewidth=1,
            color=COLOURS["value"])
    starts = [0, *(_index(v.points, c.run_id) for c in v.changes), len(xs)]
    for a, b in zip(starts, starts[1:]):
        level = statistics.median(p.value for p in v.points[a:b])
        ax.hlines(level, a - 0.4, b - 0.6, colors=COLOURS["level"], linestyles="dashed",
                  linewidth=1)
    for c in v.changes:
        x = _index(v.points, c.run_id) - 0.5
        colour = COLOURS["regression" if c.regression else "improvement"]
        ax.axvline(x, color=colour, linewidth=1.5)
        ax.annotate(_pct(c.size_pct), (x, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", color=colour,
                    fontsize=9, fontweight="bold")
    if run_id is not None:
        ax.plot([xs[-1]], [v.points[-1].value], marker="o", markersize=10, fillstyle="none",
                markeredgewidth=2, color=COLOURS["run"], linestyle="none")
    step = max(1, len(xs) // 8)
    ax.set_xticks(xs[::step], [p.started[5:10] for p in v.points[::step]])
    ax.set_xlim(-0.7, len(xs) - 0.3)
    arrow = "↑" if v.figure.better == "higher" else "↓"
    ax.set_title(_plain(f"{v.figure.metric} ({v.figure.unit}, {arrow} better)"), fontsize=10)
    ax.set_ylabel(_plain(v.figure.unit))
    ax.set_xlabel("runs by start (month-day)", fontsize=8)
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plain(text: str) -> str:
    """Text matplotlib draws as it is: a "$" would start its math mode."""
    return text.replace("$", r"\$")


def _index(points: list[Point], run_id: str) -> int:
    return next(i for i, p in enumerate(points) if p.run_id == run_id)


def _pct(value: float, signed: bool = True) -> str:
    return f"{value:+.1f} %" if signed else f"{value:.1f} %"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


_CSS = """
body { font: 14px/1.4 sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.n { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.spread { color: #777; font-size: 11px; }
tr.regression td.status { color: #c0392b; font-weight: bold; }
tr.improvement td.status { color: #1e8449; font-weight: bold; }
tr.unconfirmed td.status { color: #b9770e; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1em; }
dt { color: #555; } dd { margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 0.5em; }
figure { margin: 0; }
section { border-top: 2px solid #ddd; margin-top: 1.5em; }
"""
