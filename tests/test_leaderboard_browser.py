"""The leaderboard in headless Chromium: sorting, tabs, hardware/precision filters, model pages, charts,
escaping of markup in names, no console errors, no request leaving the machine, file:// viewing.

Chromium is Debian's (``shutil.which("chromium")``) driven by the Python ``playwright`` package. Without
either the tests skip, unless the environment variable CI is set: then they fail. Screenshots go to
``$GLOCAL_TEST_ARTIFACTS`` or ``test-artifacts/`` under the repository root.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from leaderboard_samples import A100, H100, XSS_NAME, XSS_NOTE, sample_card_dicts, sample_records

from glocal.leaderboard import charts, data, tables
from glocal.leaderboard.site import build_site, make_server

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000
LOCAL_SCHEMES = ("data", "blob", "about")


def _require(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required for the browser tests in CI")
    pytest.skip(f"{what} is not installed (browser tests skip outside CI)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _require("chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("playwright (pip install playwright)")
    pw = sync_playwright().start()
    profile = tmp_path_factory.mktemp("chromium-profile")
    context = pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=chromium,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1440, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()
    pw.stop()


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory):
    pytest.importorskip("altair")
    out = tmp_path_factory.mktemp("lb-browser") / "site"
    build_site(sample_records(), sample_card_dicts(), out)
    return out


@pytest.fixture(scope="module")
def base_url(site_dir):
    server = make_server(site_dir, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = os.environ.get("GLOCAL_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts"
    path = Path(root) / "leaderboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Monitor:
    """Console errors, page errors, dialogs and every request of one page."""

    def __init__(self, page, allow_file: bool = False):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.allow_file = allow_file
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def foreign_requests(self) -> list[str]:
        bad = []
        for url in self.requests:
            u = urlparse(url)
            local = (
                u.scheme in LOCAL_SCHEMES
                or (u.scheme == "http" and u.hostname == "127.0.0.1")
                or (self.allow_file and u.scheme == "file")
            )
            if not local:
                bad.append(url)
        return bad

    def assert_clean(self) -> None:
        assert self.errors == []
        assert self.dialogs == []
        assert self.foreign_requests() == []
        assert self.requests, "no requests were seen at all"


@pytest.fixture
def page(browser):
    """A fresh page and its monitor; each test ends with ``mon.assert_clean()``."""
    p = browser.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    mon = Monitor(p)
    yield p, mon
    p.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready='1']")


def _visible_rows(page, table: str = "#results"):
    return page.locator(f"{table} tbody tr[data-row]:not([hidden])")


def _column_values(page, label: str, table: str = "#results") -> list[str | None]:
    """The data-v of one column over the visible rows, in page order (None where a cell has none)."""
    return page.evaluate(
        """([table, label]) => {
            const t = document.querySelector(table);
            const col = [...t.tHead.rows[0].cells].findIndex(th => th.textContent.trim() === label);
            if (col < 0) throw new Error('no column ' + label);
            return [...t.tBodies[0].rows].filter(tr => tr.hasAttribute('data-row') && !tr.hidden)
                .map(tr => tr.cells[col].hasAttribute('data-v') ? tr.cells[col].getAttribute('data-v') : null);
        }""",
        [table, label],
    )


def _latest(tab: str) -> list[dict]:
    return [r for r in data.latest_per_cell(sample_records()) if data.tab_of(r) == tab]


def _wait_charts(page) -> int:
    """Wait until every visible chart is drawn; return how many there are."""
    figs = page.locator("figure.chart:not([hidden])")
    n = figs.count()
    page.wait_for_function(
        "n => document.querySelectorAll('figure.chart:not([hidden])[data-state=\"drawn\"]').length === n", arg=n
    )
    assert page.locator("figure.chart[data-state='error']").count() == 0
    return n


# ---------------------------------------------------------------------------------------------------------


def test_overview_lists_models_and_tabs(page, base_url, artifacts):
    p, mon = page
    _open(p, base_url + "index.html")
    assert _visible_rows(p, "#models").count() == 7
    assert p.locator("nav.tabs a").all_inner_texts() == [
        "Overview",
        "Classification 15",
        "Dehazing 2",
        "Super-resolution 2",
        "Structure sensitivity 1",
        "Generation 6",
    ]
    assert p.locator("#models a", has_text=XSS_NAME).count() == 1  # the markup is text
    assert p.locator("img").count() == 0
    p.fill("input[data-filter='q']", "neighborhood")
    assert _visible_rows(p, "#models").all_inner_texts()[0].startswith("DiNAT")
    assert _visible_rows(p, "#models").count() == 1
    p.fill("input[data-filter='q']", "")
    p.screenshot(path=str(artifacts / "overview.png"), full_page=True)
    mon.assert_clean()


def test_sorting_a_column_matches_python(page, base_url):
    p, mon = page
    _open(p, base_url + "task-classification.html")
    recs = _latest("classification")
    latencies = [data.measured(r, "latency.median") for r in recs]
    known = sorted(v for v in latencies if v is not None)
    missing = [None] * (len(latencies) - len(known))

    p.click("th[data-key='latency'] button")
    assert p.get_attribute("th[data-key='latency']", "aria-sort") == "ascending"
    got = [None if v is None else float(v) for v in _column_values(p, "Latency (ms)")]
    assert got == known + missing  # failed runs sort last either way
    p.click("th[data-key='latency'] button")
    assert p.get_attribute("th[data-key='latency']", "aria-sort") == "descending"
    got = [None if v is None else float(v) for v in _column_values(p, "Latency (ms)")]
    assert got == known[::-1] + missing

    # a text column, and the shown text follows the sort value
    p.click("th[data-key='variant'] button")
    assert _column_values(p, "Variant") == sorted(r["model"]["variant"].lower() for r in recs)
    # top-1 sorts best first on the first click
    p.click("th[data-key='top1'] button")
    top1 = [float(v) for v in _column_values(p, "Top-1 (%)") if v is not None]
    assert top1 == sorted((data.quality(r, "top1") for r in recs if data.quality(r, "top1") is not None), reverse=True)
    assert p.locator("#results tbody tr[data-row] td[data-col='top1']").first.inner_text() == "83.40"
    mon.assert_clean()


def test_switching_tabs(page, base_url):
    p, mon = page
    _open(p, base_url + "index.html")
    p.click("a.task-card[data-tab='dehazing']")
    p.wait_for_url("**/task-dehazing.html")
    p.wait_for_selector("html[data-ready='1']")
    assert p.locator("h1").inner_text() == "Dehazing"
    assert p.get_attribute("nav a[data-tab='dehazing']", "aria-current") == "page"
    assert _visible_rows(p).count() == len(_latest("dehazing")) == 2
    p.click("nav a[data-tab='structure']")
    p.wait_for_url("**/task-structure.html")
    p.wait_for_selector("html[data-ready='1']")
    assert _visible_rows(p).count() == 1
    assert "0.620" in _visible_rows(p).first.inner_text()
    mon.assert_clean()


def test_filters_by_hardware_and_precision(page, base_url, artifacts):
    p, mon = page
    _open(p, base_url + "task-classification.html")
    recs = _latest("classification")
    assert p.locator("select[data-filter='device'] option").all_inner_texts() == ["All hardware", A100, H100]

    p.select_option("select[data-filter='device']", A100)
    rows = _visible_rows(p)
    assert rows.count() == sum(data.device_name(r) == A100 for r in recs) == 3
    assert set(_column_values(p, "Hardware")) == {A100.lower()}
    assert p.locator("[data-count-for='results']").inner_text() == f"3 of {len(recs)} rows"
    figs = p.locator("figure.chart:not([hidden])")
    assert figs.count() >= 1
    assert all(f.get_attribute("data-device") == A100 for f in figs.all())
    assert _wait_charts(p) == figs.count()
    assert "device=" in p.url

    p.select_option("select[data-filter='device']", "")
    p.select_option("select[data-filter='precision']", "bf16")
    assert _visible_rows(p).count() == sum(r["settings"]["precision"] == "bf16" for r in recs)
    p.fill("input[data-filter='q']", "dinat_mini")
    assert (
        _visible_rows(p).count()
        == sum(r["settings"]["precision"] == "bf16" and r["model"]["variant"] == "dinat_mini" for r in recs)
        == 4
    )

    # the hardware filter follows a tab switch
    p.fill("input[data-filter='q']", "")
    p.select_option("select[data-filter='precision']", "")
    p.select_option("select[data-filter='device']", A100)
    p.click("nav a[data-tab='super_resolution']")
    p.wait_for_url("**/task-super_resolution.html#*")
    p.wait_for_selector("html[data-ready='1']")
    assert p.input_value("select[data-filter='device']") == A100
    assert _visible_rows(p).count() == 1
    assert "error" in _visible_rows(p).first.inner_text()
    p.select_option("select[data-filter='device']", H100)
    assert _visible_rows(p).count() == 1 and "32.80" in _visible_rows(p).first.inner_text()
    p.screenshot(path=str(artifacts / "super-resolution-h100.png"), full_page=True)
    mon.assert_clean()


def test_charts_render_with_the_python_frontier(page, base_url, artifacts):
    p, mon = page
    _open(p, base_url + "task-classification.html")
    assert _wait_charts(p) == 4
    groups = charts.quality_groups(_latest("classification"), tables.TABS["classification"], lambda r: "")
    for g, fig in zip(groups, p.locator("figure.chart[data-chart='quality']").all(), strict=True):
        assert fig.locator("svg").count() == 1
        assert fig.locator("g.points_marks path").count() == len(g.points)
        assert fig.locator("g.pareto_marks path").count() == len(g.frontier)
        assert fig.locator("g.frontier_marks path").count() == 1  # the step line
        assert g.device in fig.locator("figcaption").inner_text()
    lines = p.locator("figure.chart[data-chart='latency'] g.lines_marks path")
    assert lines.count() >= 2  # one line per model with several resolutions
    p.locator("#classification-q-2").screenshot(path=str(artifacts / "chart-quality-latency.png"))
    p.locator("#classification-s-1").screenshot(path=str(artifacts / "chart-latency-scaling.png"))
    pages = ("task-dehazing.html", "task-super_resolution.html", "task-structure.html", "models/gcvit.html",
             "models/dea-net.html")
    for path in pages:
        _open(p, base_url + path)
        n = _wait_charts(p)
        assert n >= 1, path
        assert p.locator("figure.chart svg .role-mark path").count() > n, path
    mon.assert_clean()


def test_model_page_from_a_record_link(page, base_url, artifacts):
    p, mon = page
    _open(p, base_url + "task-classification.html")
    first = _visible_rows(p).first
    record_id = first.locator("td.record a").inner_text()
    rec = next(r for r in _latest("classification") if r["id"].startswith(record_id))
    first.locator("td.record a").click()
    p.wait_for_url("**/models/*.html#r-*")
    p.wait_for_selector("html[data-ready='1']")
    details = p.locator(f"details#r-{rec['id']}")
    assert details.get_attribute("open") is not None
    assert details.locator(".command code").inner_text() == rec["command"]
    assert details.locator("table.kv").first.is_visible()
    assert rec["environment"]["git_commit"] in details.inner_text()
    assert p.locator("h1").inner_text() == "GC ViT"
    assert p.get_attribute("a.arxiv", "href") == "https://arxiv.org/abs/2206.09959"
    paper = p.locator("#paper-metrics")
    assert "83.5" in paper.inner_text() and "83.40" not in paper.inner_text()
    assert "83.40" in p.locator("#measured-classification").text_content()  # in the collapsed rows
    assert p.locator("#summary").is_visible() and "83.5" in p.locator("#summary").inner_text()
    p.screenshot(path=str(artifacts / "model-gcvit.png"), full_page=True)

    # back to the table through the crumbs, then another model by its name
    p.click(".crumbs a:has-text('Classification')")
    p.wait_for_url("**/task-classification.html")
    p.click("#results a:has-text('DiNAT')")
    p.wait_for_url("**/models/dinat.html")
    p.wait_for_selector("html[data-ready='1']")
    assert p.locator("a[href^='javascript']").count() == 0
    mon.assert_clean()


def test_markup_in_names_is_shown_as_text(page, base_url, artifacts):
    p, mon = page
    _open(p, base_url + "task-classification.html")
    _wait_charts(p)
    assert p.locator("#results a", has_text=XSS_NAME).count() == 1
    assert p.locator("img").count() == 0
    # the Vega tooltip escapes it too: move the mouse onto the point whose label names the markup model
    points = p.locator("#classification-q-2 g.points_marks path")
    labels = points.evaluate_all("els => els.map(e => e.getAttribute('aria-label') || '')")
    assert sum(XSS_NAME in label for label in labels) == 1
    point = points.nth(next(i for i, label in enumerate(labels) if XSS_NAME in label))
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    p.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = p.locator("#vg-tooltip-element")
    tip.wait_for(state="visible")
    assert XSS_NAME in tip.inner_text() and tip.locator("img").count() == 0
    p.click(f"#results a:has-text('{XSS_NAME}')")
    p.wait_for_url("**/models/xss-*.html")
    p.wait_for_selector("html[data-ready='1']")
    assert p.locator("h1").inner_text() == XSS_NAME
    p.locator("details#records > summary").click()
    p.locator("details.record summary").first.click()
    assert XSS_NOTE in p.locator("ul.notes").inner_text()
    assert p.locator("img, u").count() == 0
    p.screenshot(path=str(artifacts / "model-markup-name.png"), full_page=True)
    assert mon.dialogs == []
    mon.assert_clean()


def test_random_weights_and_failed_runs(page, base_url):
    p, mon = page
    _open(p, base_url + "task-classification.html")
    rnd = p.locator("#results tr.row-random")
    assert rnd.count() == 1
    cells = dict(
        zip(p.locator("#results thead th").all_inner_texts(), rnd.locator("td").all_inner_texts(), strict=True)
    )
    assert cells["Weights"] == "random weights" and cells["Top-1 (%)"] == "—" and cells["Latency (ms)"] == "12.5"
    oom = p.locator("#results tr.row-oom")
    assert oom.count() == 1
    cells = dict(
        zip(p.locator("#results thead th").all_inner_texts(), oom.locator("td").all_inner_texts(), strict=True)
    )
    assert cells["Latency (ms)"] == "OOM" and cells["GPU peak alloc. (MiB)"] == "OOM" and cells["Res. (px)"] == "2048"
    assert "out of memory" in oom.locator("td.st-oom").first.get_attribute("title")
    mon.assert_clean()


def test_site_works_from_file_urls(browser, site_dir, artifacts):
    p = browser.new_page()
    mon = Monitor(p, allow_file=True)
    try:
        _open(p, (site_dir / "index.html").as_uri())
        assert _visible_rows(p, "#models").count() == 7
        p.screenshot(path=str(artifacts / "overview-file.png"), full_page=True)
        p.click("nav a[data-tab='classification']")
        p.wait_for_url("**/task-classification.html")
        p.wait_for_selector("html[data-ready='1']")
        assert _wait_charts(p) == 4
        p.click("th[data-key='latency'] button")
        assert _visible_rows(p).count() == 15
        assert all(urlparse(u).scheme in ("file", "data", "about", "blob") for u in mon.requests)
    finally:
        p.close()
    mon.assert_clean()


def test_content_security_policy_blocks_injected_scripts(browser, base_url):
    p = browser.new_page()
    mon = Monitor(p)
    try:
        _open(p, base_url + "index.html")
        p.evaluate("""() => { const s = document.createElement('script');
                              s.textContent = 'window.__injected = 1'; document.body.appendChild(s); }""")
        assert p.evaluate("window.__injected") is None
    finally:
        p.close()
    assert len(mon.errors) == 1 and "Content Security Policy" in mon.errors[0]
    assert mon.foreign_requests() == []


# ---------------------------------------------------------------------------------------------------------
# reading the site: phones, sticky headers, downloads, noise, colours


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


def _page_scroll_width(page) -> int:
    return page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")


def test_phone_layout_and_screenshots_at_both_widths(page, base_url, artifacts):
    p, mon = page
    for size, name in ((DESKTOP, "1440"), (PHONE, "390")):
        p.set_viewport_size(size)
        for path, shot in (("index.html", "overview"), ("task-classification.html", "classification")):
            _open(p, base_url + path)
            _wait_charts(p)
            assert _page_scroll_width(p) <= size["width"], (path, name)  # the page never scrolls sideways
            p.screenshot(path=str(artifacts / f"{shot}-{name}.png"), full_page=True)
    # on a phone the table scrolls inside its box and the model column stays pinned at its left edge
    wrap = p.locator("#results").locator("xpath=..")
    left = wrap.bounding_box()["x"]
    wrap.evaluate("el => { el.scrollLeft = 400; }")
    assert wrap.evaluate("el => el.scrollLeft") > 0
    cell = p.locator("#results tbody tr[data-row] td.model").first
    assert abs(cell.bounding_box()["x"] - left) <= 2 and cell.is_visible()
    mon.assert_clean()


def test_headers_stay_visible_when_a_long_table_scrolls(page, base_url):
    p, mon = page
    p.set_viewport_size({"width": 1440, "height": 360})
    _open(p, base_url + "task-classification.html")
    wrap = p.locator("#results").locator("xpath=..")
    assert wrap.evaluate("el => el.scrollHeight > el.clientHeight + 100")  # long enough to scroll
    wrap.scroll_into_view_if_needed()
    wrap.evaluate("el => { el.scrollTop = 250; }")
    top = wrap.bounding_box()["y"]
    th = p.locator("#results thead th[data-key='latency']")
    assert abs(th.bounding_box()["y"] - top) <= 2  # still at the top of the scrolled box
    first = _visible_rows(p).first
    assert first.bounding_box()["y"] < top  # while the first rows went up out of view
    hit = p.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('th') !== null",
                     [th.bounding_box()["x"] + 5, top + 5])
    assert hit  # the header is on top, not hidden under the rows
    mon.assert_clean()


def _shown_table(page, table: str) -> list[list[str]]:
    return page.evaluate(
        """(sel) => {
            const t = document.querySelector(sel);
            const cols = [...t.tHead.rows[0].cells].map((th, i) => th.hidden ? -1 : i).filter(i => i >= 0);
            const head = cols.map(i => t.tHead.rows[0].cells[i].textContent.trim());
            const rows = [...t.tBodies[0].rows].filter(tr => tr.hasAttribute('data-row') && !tr.hidden)
                .map(tr => cols.map(i => tr.cells[i].textContent.trim()));
            return [head, ...rows];
        }""",
        table,
    )


def test_csv_and_json_downloads_equal_the_rows_shown(page, base_url, tmp_path):
    import csv
    import json

    p, mon = page
    _open(p, base_url + "task-classification.html")
    p.select_option("select[data-filter='device']", A100)
    p.click("th[data-key='latency'] button")
    shown = _shown_table(p, "#results")
    assert len(shown) == 4 and "Top-1 (%)" in shown[0]
    with p.expect_download() as dl:
        p.click("button[data-download='csv'][data-table='results']")
    path = tmp_path / "view.csv"
    dl.value.save_as(path)
    assert list(csv.reader(path.open(encoding="utf-8", newline=""))) == shown
    with p.expect_download() as dl:
        p.click("button[data-download='json'][data-table='results']")
    dl.value.save_as(tmp_path / "view.json")
    rows = json.loads((tmp_path / "view.json").read_text())
    assert [r["variant"] for r in rows] == [row[shown[0].index("Variant")] for row in shown[1:]]
    # the view has a stable URL: opened afresh it shows the same rows in the same order
    link = p.get_attribute("a[data-view-link]", "href")
    assert "device=" in link and "sort-results=latency" in link
    _open(p, base_url + link)
    assert _shown_table(p, "#results") == shown
    mon.assert_clean()


def test_noisy_cells_are_marked_and_kept_out_of_the_ranking(page, base_url):
    p, mon = page
    _open(p, base_url + "index.html")
    table = "#rank-classification-efficiency"
    rows = p.locator(f"{table} tbody tr[data-row]:not([hidden])")
    ranks = dict(zip(rows.locator("td[data-col='variant']").all_inner_texts(),
                     rows.locator("td[data-col='rank']").all_inner_texts(), strict=True))
    assert ranks == {"gcvit_xxtiny": "1", "dinat_mini": "2", "gcvit_tiny": "3", "xss_tiny": "4", "dinat_tiny": "—"}
    noisy = p.locator(f"{table} tr[data-noisy]:not([hidden]) td[data-col='latency']")
    assert noisy.count() == 1 and "noisy" in noisy.get_attribute("class")
    assert noisy.evaluate("td => getComputedStyle(td, '::after').content") == '"≈"'
    assert "IQR is 40% of the median" in noisy.get_attribute("title")
    p.check("input[data-filter='noisy']")  # the visitor asks for noisy measurements too
    ranks = dict(zip(rows.locator("td[data-col='variant']").all_inner_texts(),
                     rows.locator("td[data-col='rank']").all_inner_texts(), strict=True))
    assert ranks["dinat_tiny"] == "4" and ranks["xss_tiny"] == "5" and "noisy=1" in p.url
    # on the task page the same measurement is hollow in the chart and off the Pareto front
    _open(p, base_url + "task-classification.html")
    _wait_charts(p)
    fig = p.locator("figure.chart[data-chart='quality'][data-device='" + H100 + "']")
    point = fig.locator("g.points_marks path[aria-label*='dinat_tiny']")
    assert point.count() == 1 and point.get_attribute("fill-opacity") == "0"
    mon.assert_clean()


def _colours(page) -> dict[str, set[str]]:
    """variant -> the colours of its marks in every chart drawn on the page."""
    return page.evaluate(
        """() => {
            const out = {};
            const marks = 'figure.chart g.points_marks path, figure.chart g.dots_marks path';
            for (const el of document.querySelectorAll(marks)) {
                const m = /variant: ([^;]+)/.exec(el.getAttribute('aria-label') || '');
                if (!m) continue;
                (out[m[1].trim()] ||= []).push(el.getAttribute('stroke'));
            }
            return out;
        }"""
    )


def test_a_variant_has_one_colour_in_every_chart(page, base_url):
    p, mon = page
    seen: dict[str, set[str]] = {}
    charts_seen = 0
    for path in ("index.html", "task-classification.html", "models/gcvit.html", "task-generation.html"):
        _open(p, base_url + path)
        charts_seen += _wait_charts(p)
        for variant, colours in _colours(p).items():
            seen.setdefault(variant, set()).update(colours)
    assert charts_seen >= 8 and {"gcvit_tiny", "dinat_mini", "gcvit_xxtiny"} <= set(seen)
    assert {v: c for v, c in seen.items() if len(c) != 1} == {}
    assert len({next(iter(c)) for c in seen.values()}) == len(seen)  # and no two variants share one
    mon.assert_clean()


def test_malformed_fragments_do_not_throw(page, base_url):
    p, mon = page
    for path in ("index.html#%", "models/gcvit.html#q=%E0%A4%A&%"):
        _open(p, base_url + path)
    mon.assert_clean()
