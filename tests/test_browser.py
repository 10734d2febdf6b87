"""The built smoke book read in a real browser, as a reader would (headless Chromium, selenium).

The book is served the way `make all` and the reproduce page say (`python -m http.server -d
book/_build/html`). Every page is opened at 1280 px and at 420 px and screenshotted into
book/_build/screenshots/; the tests then check what a reader meets: images that load and are
tall enough to read, a caption under every figure, glued values in the weight of their
sentence, no JavaScript errors, no stray nan, NaN, -0.00, 0-0% or theta_ (in prose), a
reason of its own for every claim, and a search that finds.
The reading functions take a driver and a URL: tests/test_publish.py runs them on a small
hand-made page. Chromium and its driver come from the system (`make browser`); without
them the tests skip.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOAD_TIMEOUT_S = 60
WIDTHS = (1280, 420)  # a laptop and a phone, in CSS pixels
READING_WIDTH = WIDTHS[0]  # where image heights are measured
MIN_IMAGE_HEIGHT = 300  # px at READING_WIDTH: a figure a reader can read without zooming
MAX_SCREENSHOT_HEIGHT = 16_000  # px: Chromium's limit for one capture; longer pages are cut
# Anywhere in the visible text, tables and outputs included: a missing value printed as such,
# a negative zero, an empty range, a crash.
BAD_TEXT = re.compile(
    r"\b(?:nan|NaN|None|Traceback)\b"
    r"|(?<![\w.])[-−]0\.0+(?![\d])"  # -0.00: a rounded value whose sign says nothing
    r"|(?<![\w.])0[-–]0%"  # "range 0-0%"
)
# In prose only (code and outputs in monospace may name a Python identifier): one notation.
BAD_PROSE = re.compile(r"theta_")
# Pages whose tables quote the metrics files verbatim, keys (`final_margin.theta_S`) included.
QUOTING_PAGES = frozenset({"executed/09_provenance.html"})
SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
MAX_SENTENCE = 300  # characters of context a finding quotes


# ----------------------------------------------------------------------------- reading a page


@dataclass(frozen=True)
class Image:
    """One image in the page's main content, measured as laid out."""

    src: str
    height: float  # rendered, CSS px
    visible: bool  # laid out (not inside a closed toggle)
    caption: str | None  # its figure's caption; None when it is in no figure

    def name(self) -> str:
        """The file, and the caption's start when there is one (what a stage owner looks for)."""
        file = self.src.rsplit("/", 1)[-1]
        return f"{file} ({self.caption[:60]})" if self.caption else file


@dataclass(frozen=True)
class PageVisit:
    """What one page showed at READING_WIDTH, and where its screenshots went."""

    page: str
    n_images: int
    broken_images: list[str]
    severe_logs: list[str]
    images: list[Image]
    bold_glue: list[str]  # glued values set bolder than the sentence around them
    text: str  # the main content's visible text, outputs included, quoted code left out
    prose: str  # the same without any monospace block
    screenshots: list[Path]

    def bad_text(self) -> list[str]:
        prose = [] if self.page in QUOTING_PAGES else text_faults(self.prose, BAD_PROSE)
        return text_faults(self.text, BAD_TEXT) + prose

    def short_images(self) -> list[str]:
        return [f"{i.name()} is {i.height:.0f} px tall at {READING_WIDTH} px"
                for i in self.images if i.visible and i.height < MIN_IMAGE_HEIGHT]

    def uncaptioned(self) -> list[str]:
        return [f"{i.name()}: " + ("in no figure" if i.caption is None else "an empty caption")
                for i in self.images if not i.caption]


def sentence_at(text: str, start: int, end: int) -> str:
    """The sentence (or line) of `text` around [start, end), cut to MAX_SENTENCE characters."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    left = max((e for e in ends if e <= start), default=0)
    right = min((e for e in ends if e >= end), default=len(text))
    sentence = " ".join(text[left:right].split())
    return sentence if len(sentence) <= MAX_SENTENCE else sentence[: MAX_SENTENCE - 1] + "…"


def text_faults(text: str, pattern: re.Pattern) -> list[str]:
    """Each match of `pattern` in `text`, quoted with the sentence it sits in (once each)."""
    found = (f"{m.group()!r} in: {sentence_at(text, m.start(), m.end())}"
             for m in pattern.finditer(text))
    return list(dict.fromkeys(found))


def shared_reasons(rows: list[list[str]], column: int) -> dict[str, list[str]]:
    """Reasons (column `column`) given for more than one claim (column 0), with those claims."""
    claims: dict[str, list[str]] = {}
    for row in rows:
        if len(row) > column and row[column] and row[0] not in claims.get(row[column], []):
            claims.setdefault(row[column], []).append(row[0])
    return {why: names for why, names in claims.items() if len(names) > 1}


IMAGES_JS = """
const main = document.querySelector('main') || document.body;
return Array.from(main.querySelectorAll('img')).map(i => {
  const figure = i.closest('figure');
  const caption = figure && figure.querySelector('figcaption');
  return [i.currentSrc || i.src, i.getBoundingClientRect().height, i.checkVisibility(),
          figure ? (caption ? caption.innerText.trim() : '') : null];
});
"""
BOLD_GLUE_JS = """
const weight = (e) => parseInt(getComputedStyle(e).fontWeight);
return Array.from(document.querySelectorAll('main span.pasted-text'))
  .filter(s => weight(s) > weight(s.parentElement)).map(s => s.innerText);
"""
# What the text checks read: the main content's visible text with some elements hidden for
# the read. Inline literals and code blocks quote code; cell outputs (.output) stay in
# `text`. `prose` also drops every monospace block, outputs included.
QUOTED = 'code, div[class*="highlight-"]:not(.output)'
MONOSPACE = "code, pre, div[class*='highlight']"
TEXTS_JS = """
const read = (hidden) => {
  const style = document.createElement('style');
  style.textContent = hidden + ' { display: none !important; }';
  document.head.appendChild(style);
  const text = (document.querySelector('main') || document.body).innerText;
  style.remove();
  return text;
};
return [read(arguments[0]), read(arguments[1])];
"""


def set_width(driver, width: int) -> None:
    """Lay the page out `width` CSS pixels wide (the viewport, not the window's frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 1000, "deviceScaleFactor": 1,
                            "mobile": False})


def screenshot(driver, path: Path) -> Path:
    """The whole page as wide as the window, down to MAX_SCREENSHOT_HEIGHT px, as a PNG."""
    size = driver.execute_script("return [window.innerWidth,"
                                 " document.documentElement.scrollHeight];")
    clip = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], MAX_SCREENSHOT_HEIGHT),
            "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def screenshot_name(page: str, width: int) -> str:
    return f"{page.removesuffix('.html').replace('/', '__')}-{width}.png"


def visit(driver, url: str, page: str, shots: Path) -> PageVisit:
    """Open `url` at READING_WIDTH, read it, and screenshot it at every width in WIDTHS."""
    set_width(driver, READING_WIDTH)
    driver.get(url)
    loaded = driver.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.naturalWidth]);"
    )
    images = [Image(*row) for row in driver.execute_script(IMAGES_JS)]
    bold_glue = driver.execute_script(BOLD_GLUE_JS)
    text, prose = driver.execute_script(TEXTS_JS, QUOTED, MONOSPACE)
    paths = []
    for width in WIDTHS:
        if width != READING_WIDTH:  # loaded again at this width, as a phone would lay it out
            set_width(driver, width)
            driver.refresh()
        paths.append(screenshot(driver, shots / screenshot_name(page, width)))
    logs = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return PageVisit(page, len(loaded), [src for src, width in loaded if not width], logs,
                     images, bold_glue, text, prose, paths)


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


def search_hits(driver, base_url: str, query: str) -> list[str]:
    """The links the book's own search page lists for `query`."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/search.html?q={query}")
    finished = "return document.querySelector('#search-results p.search-summary') !== null;"
    WebDriverWait(driver, LOAD_TIMEOUT_S).until(lambda d: d.execute_script(finished))
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#search-results ul.search li a'))"
        ".map(a => a.getAttribute('href'));"
    )


# ----------------------------------------------------------------------------- serving, Chromium


def serve_command() -> list[str]:
    """The module and flags `make all` tells a reader to serve the book with (its last line)."""
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"python (-m http\.server -d) book/_build/html \d+", makefile)
    assert found, "the Makefile's all target no longer prints how to serve the book"
    return found.group(1).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(html: Path) -> Iterator[str]:
    """The book served by the documented command on a free local port; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, *serve_command(), str(html), "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "the documented server command exited"
                assert time.monotonic() < deadline, "the documented server never answered"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def chromium() -> Iterator:
    """Headless Chromium with its console log kept; the system's binaries, nothing downloaded.
    Skips the calling test when Chromium, its driver or selenium is missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = next(filter(None, map(shutil.which, BROWSERS)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no chromium/chromedriver on PATH (`make browser` installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={READING_WIDTH},1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def report(found: dict[str, list[str]]) -> str:
    """Every finding in full, page by page (pytest would shorten a dict's repr)."""
    return "\n".join(f"{page}: {item}" for page, items in found.items() for item in items)


# ----------------------------------------------------------------------------- the smoke book


@pytest.fixture(scope="module")
def html(smoke_repo) -> Path:
    root = smoke_repo / "book" / "_build" / "html"
    assert (root / "index.html").is_file(), "the smoke book was not built"
    return root


@pytest.fixture(scope="module")
def base_url(html) -> Iterator[str]:
    yield from serve(html)


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def book_pages(html: Path) -> list[str]:
    """Every HTML page of the book, relative to its root (the theme's assets left out)."""
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if not p.relative_to(html).parts[0].startswith("_")
    )


@pytest.fixture(scope="module")
def visits(browser, base_url, html) -> list[PageVisit]:
    pages = book_pages(html)
    assert {"index.html", "claims.html", "search.html"} <= set(pages), pages
    shots = html.parent / "screenshots"
    return [visit(browser, f"{base_url}/{page}", page, shots) for page in pages]


def test_every_image_loads(visits):
    broken = {v.page: v.broken_images for v in visits if v.broken_images}
    assert not broken, report(broken)
    assert sum(v.n_images for v in visits) > 0, "no page has an image: nothing was checked"


def test_every_image_is_tall_enough_to_read(visits):
    short = {v.page: v.short_images() for v in visits if v.short_images()}
    assert not short, report(short)


def test_every_figure_has_a_caption(visits):
    bare = {v.page: v.uncaptioned() for v in visits if v.uncaptioned()}
    assert not bare, report(bare)


def test_glued_text_has_the_weight_of_its_sentence(visits):
    bold = {v.page: v.bold_glue for v in visits if v.bold_glue}
    assert not bold, report(bold)


def test_no_severe_console_errors(visits):
    severe = {v.page: v.severe_logs for v in visits if v.severe_logs}
    assert not severe, report(severe)


def test_no_missing_values_negative_zeros_or_code_names_in_visible_text(visits):
    bad = {v.page: v.bad_text() for v in visits if v.bad_text()}
    assert not bad, report(bad)


def test_every_page_is_screenshotted_at_both_widths(visits):
    missing = {v.page: [str(p) for p in v.screenshots if not p.is_file()] for v in visits}
    missing = {page: paths for page, paths in missing.items() if paths}
    assert not missing, report(missing)
    assert all(len(v.screenshots) == len(WIDTHS) for v in visits)


def test_every_claim_has_a_reason_of_its_own(browser, base_url):
    browser.get(f"{base_url}/claims.html")
    table = table_with_column(browser, "why")
    if table is None:
        pytest.fail("the claims page has no table with a 'why' column")
    headers, rows = table
    column = next(i for i, h in enumerate(headers) if "why" in h.lower())
    assert rows, "the claims table has no rows"
    empty = [row[0] for row in rows if len(row) <= column or not row[column]]
    assert not empty, f"claims without a why: {empty}"
    shared = shared_reasons(rows, column)
    assert not shared, "\n".join(f"{', '.join(c)} share: {why}" for why, c in shared.items())


def test_search_finds_v_rev(browser, base_url):
    assert search_hits(browser, base_url, "v_rev"), "the book's search found nothing for v_rev"
