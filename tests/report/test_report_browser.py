"""The report in headless Chromium (skipped without it, unless VOXCLUST_REQUIRE_BROWSER=1): it fits a 1,280 px
window, its metrics table sorts by a clicked column, and the 3D view draws a cluster member on its canvas, all
offline (any request leaving the page fails the test)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from lib.report.html import render_html
from tests.report.sample import rich_report
from tests.support import headless_chromium

pytestmark = pytest.mark.timeout(300)


def _column(page: Any, header: str) -> list[str]:
    """The data-sort values of the metrics table's column titled ``header``, top to bottom."""
    return list(
        page.evaluate(
            """(header) => {
                const table = document.querySelector("table.metrics");
                const col = [...table.tHead.rows[0].cells].findIndex((th) => th.textContent.trim() === header);
                return [...table.tBodies[0].rows].map((r) => r.cells[col].getAttribute("data-sort"));
            }""",
            header,
        )
    )


def test_the_report_fits_sorts_and_draws_in_3d(tmp_path: Path) -> None:
    rep, files = rich_report()
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(rep, files, report_url="s3://bucket/store/reports/compare-1"))
    requests: list[str] = []
    with headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto(page_file.as_uri())

        # the 3D view of the first method with previews has drawn its first central member
        canvas = page.locator("#m0-raw .view3d canvas")
        page.wait_for_function("() => document.querySelector('#m0-raw .view3d canvas').dataset.item", timeout=20_000)
        assert canvas.get_attribute("data-item") == "raw-box_0000"
        box = canvas.bounding_box()
        assert box is not None and box["width"] >= 200 and box["height"] >= 200
        assert int(canvas.get_attribute("data-faces") or 0) > 100
        colours = page.evaluate(
            """() => {
                const c = document.querySelector("#m0-raw .view3d canvas");
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                const seen = new Set();
                for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                return seen.size;
            }"""
        )
        assert colours > 3, "the canvas is blank"  # background plus shaded faces
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        canvas.screenshot(path=str(tmp_path / "view3d.png"))

        # another member, picked by its item id, replaces it; dragging turns it
        page.locator("#m0-raw .item.view", has_text="raw-ball_0005").click()
        page.wait_for_function(
            "() => document.querySelector('#m0-raw .view3d canvas').dataset.item === 'raw-ball_0005'"
        )
        before = canvas.screenshot()
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 100, box["y"] + 160)
        page.mouse.down()
        page.mouse.move(box["x"] + 220, box["y"] + 120, steps=5)
        page.mouse.up()
        page.wait_for_timeout(200)
        assert canvas.screenshot() != before, "dragging did not turn the view"

        # nothing wider than the window, the table included: it scrolls inside its own box
        sizes = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], sizes
        wrap = page.evaluate(
            "() => { const w = document.querySelector('.table-wrap'); return [w.scrollWidth, w.clientWidth]; }"
        )
        assert wrap[0] <= wrap[1], f"the key columns do not fit: {wrap}"
        page.locator("label[for=all-columns]").click()
        assert page.locator("th.extra").first.is_visible()
        sizes = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], f"with all columns the page overflows: {sizes}"
        page.screenshot(path=str(tmp_path / "all-columns.png"))

        # a click on a header sorts by that column: numbers highest first, missing values last; again reverses
        nmi = _column(page, "NMI")
        page.locator("table.metrics th", has_text="NMI").first.click()
        numbers = sorted((float(v) for v in nmi if v), reverse=True)
        assert _column(page, "NMI") == [*(repr(v) for v in numbers), *([""] * nmi.count(""))]
        assert _column(page, "NMI") != nmi
        page.locator("table.metrics th", has_text="NMI").first.click()
        assert _column(page, "NMI") == [*(repr(v) for v in sorted(numbers)), *([""] * nmi.count(""))]
        page.locator("table.metrics th", has_text="name").first.click()
        names = _column(page, "name")
        assert names == sorted(names, key=str.lower)
        assert page.locator("table.metrics th[aria-sort=ascending]").inner_text().startswith("name")
    assert not requests, f"the page asked the network for {requests}"
    keep = os.environ.get("VOXCLUST_SCREENSHOTS")
    if keep:
        for name in ("report.png", "view3d.png", "all-columns.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
