"""The HTML report of the bench history (harness/report.py) and `mmap-harness
report`: what the page says, that it stands alone, and that a real browser
(Debian's headless Chromium, installed by ci/bootstrap.sh) draws it: every
plot decodes, nothing is logged to the console, the screenshot is no blank page."""

from __future__ import annotations

import base64
import html
import io
import random
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from harness import history, report
from harness.errors import ConfigError
from harness.history import Figure

from test_history import BANDWIDTH, CTX, noisy, run_id, started

MUNMAP = "mmap_remap/device_mmap_munmap_us"
HOSTILE = 'ratio_<script>alert("x")</script>_&_$x$'   # a metric name that must stay text
TRIXIE = replace(CTX, guest="debian-trixie", kernel="6.12.9-cloud-amd64")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two contexts of 25 runs: bookworm's bandwidth drops 20 % at run 15
    (a regression), trixie's munmap time drops 20 % (an improvement)."""
    rng = random.Random(5)
    path = tmp_path / history.DB_NAME
    for context, bw_step, us_step in ((CTX, 0.8, 1.0), (TRIXIE, 1.0, 0.8)):
        bws = noisy(rng, 1000, 15) + noisy(rng, 1000 * bw_step, 10)
        uss = noisy(rng, 12, 15) + noisy(rng, 12 * us_step, 10)
        ratios = noisy(rng, 1.4, 25)
        for i, (bw, us, ratio) in enumerate(zip(bws, uss, ratios)):
            history.record(path, run_id(i), started(i), context, [
                Figure(BANDWIDTH, bw, "MiB/s", "higher",
                       {"min": 0.9 * bw, "q1": 0.97 * bw, "q3": 1.02 * bw, "max": 1.1 * bw}),
                Figure(MUNMAP, us, "us", "lower", {}),
                Figure(HOSTILE, ratio, "<ratio>", "higher", {})])
    return path


def _rows(page: str) -> dict[str, str]:
    """Each table row's text (tags dropped), by its first cell, per context."""
    rows: dict[str, str] = {}
    for section in page.split("<section")[1:]:
        guest = re.search(r"<dd>([^<]*)</dd>", section).group(1)
        for row in re.findall(r"<tr class=.*?</tr>", section):
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
            rows[f"{guest} {re.sub('<[^>]+>', ' ', cells[0])}"] = re.sub("<[^>]+>", " ", row)
    return rows


def test_the_page_shows_changes_and_baselines(db: Path, tmp_path: Path):
    page = report.write_html(db, tmp_path / "r.html").read_text()
    rows = _rows(page)
    bw = rows[f"debian-bookworm {BANDWIDTH}"]
    assert re.search(r"regression of -(1[6-9]|2[0-4])\.\d % since run " + run_id(15), bw), bw
    assert "median of the 15 runs before the change" in bw
    assert "improvement of -" in rows[f"debian-trixie {MUNMAP}"]
    assert "median of the 24 runs before" in rows[f"debian-bookworm {MUNMAP}"]
    assert "no change beyond" in rows[f"debian-bookworm {MUNMAP}"]
    assert "Regressions in force: 1" in page
    assert page.count("<section") == 2 and page.count("<img ") == 6


def test_the_page_stands_alone_and_escapes_every_string(db: Path, tmp_path: Path):
    page = report.write_html(db, tmp_path / "r.html", title="<b>nightly</b>").read_text()
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)=\"(?!data:image/png;base64,|#ctx)", page)
    assert "<b>nightly</b>" not in page and "&lt;b&gt;nightly&lt;/b&gt;" in page
    assert html.escape(HOSTILE) in page and "&lt;ratio&gt;" in page
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        plot = Image.open(io.BytesIO(base64.b64decode(data)))
        assert plot.format == "PNG" and plot.size == (700, 260)


def test_the_report_of_one_run_stops_at_it(db: Path, tmp_path: Path):
    page = report.write_html(db, tmp_path / "r.html", run_id=run_id(12)).read_text()
    assert f"the report of bench run <b>{run_id(12)}</b>" in page
    assert "Regressions in force: 0" in page     # the drop came at run 15
    assert "median of the 12 runs before" in _rows(page)[f"debian-bookworm {BANDWIDTH}"]
    with pytest.raises(ConfigError, match="has no figures"):
        report.write_html(db, tmp_path / "r.html", run_id="20990101-000000-dead")


def test_one_bad_latest_run_is_shown_unconfirmed(tmp_path: Path):
    path = tmp_path / history.DB_NAME
    for i, v in enumerate([1000, 1010, 990, 1005, 995, 1000, 700]):
        history.record(path, run_id(i), started(i), CTX,
                       [Figure(BANDWIDTH, v, "MiB/s", "higher", {})])
    row = _rows(report.write_html(path, tmp_path / "r.html").read_text())
    assert "-30.0 % (worse) in this run only" in row[f"debian-bookworm {BANDWIDTH}"]


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_report_beside_the_history(db: Path):
    r = harness("report", "--results", str(db.parent))
    assert r.returncode == 0, r.stderr
    assert (db.parent / "report.html").is_file()
    assert str(db.parent / "report.html") in r.stdout


@pytest.mark.parametrize("history_file", [None, b""])
def test_cli_without_history_says_to_run_bench(tmp_path: Path, history_file: bytes | None):
    if history_file is not None:
        (tmp_path / history.DB_NAME).write_bytes(history_file)
    r = harness("report", "--results", str(tmp_path), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2, r.stderr
    assert "no bench history" in r.stderr and "run `mmap-harness bench` first" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.html").exists()


# Chromium: run as root it needs --no-sandbox; its own profile per test.
CHROMIUM_TIMEOUT_S = 60
# After the page (and its images) loaded: how many images decoded.
CHECKER = ("<script>addEventListener('load', () => { const i = [...document.images]; "
           "document.body.dataset.decoded = i.filter(x => x.complete && x.naturalWidth > 0)"
           ".length + '/' + i.length; });</script>")


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `bash ci/bootstrap.sh` installs it")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--enable-logging=stderr", "--v=0", *args, page.as_uri()],
        capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=True)


def decoded_in_chromium(tmp_path: Path, page: str) -> tuple[str, list[str]]:
    """("decoded/images", console lines) of the page in Chromium."""
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECKER + "</body>"))
    r = chromium(tmp_path, checked, "--dump-dom")
    found = re.search(r'data-decoded="(\d+/\d+)"', r.stdout)
    assert found, r.stdout[:2000] + r.stderr[-2000:]
    return found.group(1), [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def test_chromium_draws_the_page(db: Path, tmp_path: Path):
    page = report.write_html(db, tmp_path / "report.html")
    decoded, console = decoded_in_chromium(tmp_path, page.read_text())
    assert decoded == "6/6" and console == []

    # The check itself sees a broken plot and a script error.
    text = page.read_text()
    broken = text.replace("base64,iVBOR", "base64,AAAA", 1).replace(
        "</body>", "<script>nothing();</script></body>")
    decoded, console = decoded_in_chromium(tmp_path, broken)
    assert decoded == "5/6" and any("nothing is not defined" in c for c in console)

    shot = tmp_path / "shot.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1500,1400")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1500, 1400)
    counts = {rgb: n for n, rgb in image.getcolors(maxcolors=1500 * 1400)}
    assert sum(counts.values()) - counts.get((255, 255, 255), 0) > 0.05 * 1500 * 1400
    assert len(counts) > 200
    # The series' line and the regression's marker are drawn in their colours.
    for colour in (report.COLOURS["value"], report.COLOURS["regression"]):
        want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        near = sum(n for rgb, n in counts.items()
                   if all(abs(a - b) < 30 for a, b in zip(rgb, want)))
        assert near > 300, (colour, near)
