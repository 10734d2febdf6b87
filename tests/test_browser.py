"""The built smoke book in a real browser (headless Chromium through selenium).

Every page is opened once over a local HTTP server; the tests then check what a reader would
meet: images that load, no JavaScript errors, no stray nan/None/Traceback, a reason for every
claim, and a search that works. Chromium and its driver come from the system (.ci/run
installs them); without them the tests skip.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BAD_TEXT = re.compile(r"\b(?:nan|None|Traceback)\b")  # as written: "NaN" or "none" are prose
LOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class PageVisit:
    """What one page showed: its images (and the broken ones), SEVERE console entries, bad words."""

    page: str
    n_images: int
    broken_images: list[str]
    severe_logs: list[str]
    bad_text: list[str]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def html(smoke_repo) -> Path:
    root = smoke_repo / "book" / "_build" / "html"
    assert (root / "index.html").is_file(), "the smoke book was not built"
    return root


@pytest.fixture(scope="module")
def base_url(html) -> Iterator[str]:
    """The book over HTTP on 127.0.0.1 (a free port), as a reader's browser would fetch it."""
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with its console log kept; the system's binaries, nothing downloaded."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = next(filter(None, map(shutil.which, BROWSERS)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no chromium/chromedriver on PATH (.ci/run installs them with apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1600")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    yield driver
    driver.quit()


def book_pages(html: Path) -> list[str]:
    """Every HTML page of the book, relative to its root (the theme's assets left out)."""
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if not p.relative_to(html).parts[0].startswith("_")
    )


def visit(driver, url: str, page: str) -> PageVisit:
    driver.get(url)
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.naturalWidth]);"
    )
    logs = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    text = driver.find_element("tag name", "body").text  # visible text only
    bad = [
        text[max(0, m.start() - 60) : m.end() + 20].replace("\n", " ")
        for m in BAD_TEXT.finditer(text)
    ]
    return PageVisit(page, len(images), [src for src, width in images if not width], logs, bad)


@pytest.fixture(scope="module")
def visits(browser, base_url, html) -> list[PageVisit]:
    pages = book_pages(html)
    assert {"index.html", "claims.html", "search.html"} <= set(pages), pages
    return [visit(browser, f"{base_url}/{page}", page) for page in pages]


def report(found: dict[str, list[str]]) -> str:
    """Every finding in full, page by page (pytest would shorten a dict's repr)."""
    return "\n".join(f"{page}: {item}" for page, items in found.items() for item in items)


def test_every_image_loads(visits):
    broken = {v.page: v.broken_images for v in visits if v.broken_images}
    assert not broken, report(broken)
    assert sum(v.n_images for v in visits) > 0, "no page has an image: nothing was checked"


def test_no_severe_console_errors(visits):
    severe = {v.page: v.severe_logs for v in visits if v.severe_logs}
    assert not severe, report(severe)


def test_no_nan_none_or_traceback_in_visible_text(visits):
    bad = {v.page: v.bad_text for v in visits if v.bad_text}
    assert not bad, report(bad)


def table_with_column(driver, word: str) -> tuple[list[str], list[list[str]]] | None:
    """The first table with a header containing `word` (any case): its headers and rows."""
    tables = driver.execute_script(
        """
        return Array.from(document.querySelectorAll('table')).map(t => [
          Array.from(t.querySelectorAll('thead tr:last-child th')).map(c => c.innerText.trim()),
          Array.from(t.querySelectorAll('tbody tr')).map(r =>
            Array.from(r.querySelectorAll('th, td')).map(c => c.innerText.trim())),
        ]);
        """
    )
    for headers, rows in tables:
        if any(word in h.lower() for h in headers):
            return headers, rows
    return None


def test_every_claim_says_why(browser, base_url):
    browser.get(f"{base_url}/claims.html")
    table = table_with_column(browser, "why")
    if table is None:
        pytest.fail("the claims page has no table with a 'why' column")
    headers, rows = table
    column = next(i for i, h in enumerate(headers) if "why" in h.lower())
    assert rows, "the claims table has no rows"
    empty = [row[0] for row in rows if len(row) <= column or not row[column]]
    assert not empty, f"claims without a why: {empty}"


def test_search_finds_v_rev(browser, base_url):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base_url}/search.html?q=v_rev")
    finished = "return document.querySelector('#search-results p.search-summary') !== null;"
    WebDriverWait(browser, LOAD_TIMEOUT_S).until(lambda d: d.execute_script(finished))
    hits = browser.execute_script(
        "return Array.from(document.querySelectorAll('#search-results ul.search li a'))"
        ".map(a => a.getAttribute('href'));"
    )
    assert hits, "the book's search found nothing for v_rev"
