"""The KPI report opened in headless Chromium: it renders, every plot decodes, no hostile text runs.

Chromium is Debian's ``chromium`` package, which ``make test`` installs when it is missing (as root, with
apt-get). Without it this test fails, naming what to install; a machine that cannot install it opts out
with ``KPI_SENTINEL_SKIP_BROWSER=1`` and says so in its test run.

The page is opened through a copy with two test-only scripts: one first in ``<head>`` counting calls to
``alert`` (the report's hostile fixture text would call it if it ever became markup), one on ``load``
writing into the title how many images decoded (``complete`` with a natural width) and how many
alerts ran. ``--dump-dom`` prints the DOM after the load event, title included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from kpi_sentinel.report.build import build_report, write_report

from tests.unit.report_fixture import DAY, SCRIPT, fixture_day

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=5000",
)  # fmt: skip
COUNT_ALERTS = "<script>window.__alerts = 0; window.alert = function () { window.__alerts += 1; };</script>"
REPORT_IMAGES = (
    "<script>window.addEventListener('load', function () {"
    " var all = Array.from(document.images);"
    " var ok = all.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;"
    " document.title = 'images ' + ok + '/' + all.length + ' alerts ' + window.__alerts; });</script>"
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("KPI_SENTINEL_SKIP_BROWSER") == "1":
        pytest.skip("KPI_SENTINEL_SKIP_BROWSER=1: the report is not opened in a browser on this machine")
    pytest.fail("chromium not found: `make test` installs Debian's chromium (apt-get install chromium)")


def test_the_report_renders_in_chromium_with_its_plots_and_runs_no_hostile_text(tmp_path: Path) -> None:
    browser = chromium()
    result = build_report(fixture_day().ports, DAY, DAY)
    write_report(result, folder=tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    images = len(re.findall(r"<img\b", page))
    assert images >= 5  # the fixture's plotted metrics
    harness = tmp_path / "harness.html"
    harness.write_text(
        page.replace("<head>", "<head>" + COUNT_ALERTS, 1).replace("</body>", REPORT_IMAGES + "</body>", 1),
        encoding="utf-8",
    )
    profile = tmp_path / "profile"

    dom = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", harness.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2400",
         (tmp_path / "report" / "index.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip

    title = re.search(r"<title>([^<]*)</title>", dom)
    assert title is not None, dom[:500]
    assert title.group(1) == f"images {images}/{images} alerts 0"
    # The hostile slice value is on the page as text, not as an element
    assert SCRIPT.replace("<", "&lt;").replace(">", "&gt;") in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
