"""Look at the Dagster UI in a real browser: headless Chromium (Debian's chromium and
chromium-driver packages, driven by Selenium) opens a page, waits until the text a person would
look for has rendered, saves a screenshot and fails on a blank page or on one of Dagster's
error pages. The stack test runs it against its webserver (asset graph, one asset page);
`python -m crypto_assets.ops.ui_check URL TEXT...` runs it by hand."""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
# The machine's network is closed: without the background-networking flags Chromium keeps trying
# Google's hosts; a fresh profile per run so no state from an earlier run shows.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1000")
# What the Dagster UI (and a browser) shows instead of the page asked for. Matched on the page's
# visible text, case-insensitively.
ERROR_MARKERS = ("something went wrong", "unexpected error", "pythonerror", "graphql error",
                 "an error occurred", "no assets were found", "this graph is empty", "page not found",
                 "could not be loaded", "this site can't be reached", "err_connection_refused",
                 "failed to load", "code location not found")
# Texts (lower case) that, found on the page, are not offscreen: in the viewport with a size.
# innerText also holds what is scrolled or zoomed out of sight, which a person would not see.
UNSEEN_JS = """
const wanted = arguments[0], vw = window.innerWidth, vh = window.innerHeight;
const norm = (el) => (el.textContent || '').replace(/\\s+/g, ' ').toLowerCase();
const all = Array.from(document.body.querySelectorAll('*'));
return wanted.filter((w) => !all.some((el) => {
  // the smallest element holding the whole text (React splits "Latest {kind}" into two text nodes)
  if (!norm(el).includes(w) || Array.from(el.children).some((c) => norm(c).includes(w))) return false;
  const b = el.getBoundingClientRect();
  return b.width > 0 && b.height > 0 && b.right > 0 && b.bottom > 0 && b.left < vw && b.top < vh;
}));
"""
# Dagster's first-visit dialog ("Join the Dagster community") covers the page: a person skips it.
DISMISS_XPATH = "//*[@role='dialog']//button[normalize-space()='Skip']"
# A screenshot whose pixels are (almost) one colour: nothing rendered.
MIN_COLOURS = 16
MIN_INK = 0.005


class UICheckError(AssertionError):
    """The page is blank, an error page, or never showed what was expected."""


@dataclass(frozen=True)
class Shot:
    url: str
    png: Path
    seconds: float
    colours: int
    ink: float  # share of pixels that differ from the page's background colour


def find(candidates: Sequence[str], package: str) -> str:
    for c in candidates:
        path = shutil.which(c)
        if path:
            return path
    raise UICheckError(f"{candidates[0]} not found: install Debian's {package} package "
                       f"(apt-get install chromium chromium-driver; scripts/test.sh does)")


def page_problem(text: str, expect: Sequence[str]) -> str | None:
    """Why the visible `text` is not the page asked for, or None when it is (pure: unit-tested)."""
    text = text.replace("\u2019", "'")  # Chromium's own error pages: "This site can’t be reached"
    low = " ".join(text.split()).lower()
    for marker in ERROR_MARKERS:
        if marker in low:
            line = next((ln.strip() for ln in text.splitlines() if marker in ln.lower()), marker)
            return f"error page: {line[:200]!r}"
    if not text.strip():
        return "blank page: no visible text"
    missing = [e for e in expect if e.lower() not in low]
    return f"missing {missing} on the page" if missing else None


def image_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, share of pixels unlike the most common one) of a screenshot."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.resize((max(1, img.width // 4), max(1, img.height // 4)))
    counts = small.getcolors(maxcolors=small.width * small.height) or []
    total = small.width * small.height
    background = max((n for n, _ in counts), default=total)
    return len(counts), 1.0 - background / total


def blank_problem(png: bytes) -> str | None:
    colours, ink = image_stats(png)
    if colours < MIN_COLOURS or ink < MIN_INK:
        return f"blank screenshot: {colours} colour(s), {ink:.2%} of pixels off the background"
    return None


@contextmanager
def browser() -> Iterator[WebDriver]:
    """A headless Chromium session through chromedriver (both Debian's: their versions match)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = find(CHROMIUM, "chromium")
    profile = Path(tempfile.mkdtemp(prefix="ui-check-profile-"))
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    # explicit paths: Selenium Manager (which downloads drivers) never runs
    service = Service(executable_path=find(CHROMEDRIVER, "chromium-driver"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _look(d: WebDriver, expect: Sequence[str]) -> str | None:
    """One look at the page: skip Dagster's first-visit dialog, then what is wrong, if anything."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for button in d.find_elements(By.XPATH, DISMISS_XPATH):
        try:
            button.click()
        except WebDriverException:
            pass  # gone between finding and clicking: the next look tries again
    problem = page_problem(d.execute_script("return document.body ? document.body.innerText : ''") or "", expect)
    if problem is None:
        unseen = d.execute_script(UNSEEN_JS, [" ".join(e.split()).lower() for e in expect])
        if unseen:
            problem = f"{unseen} on the page but out of sight (offscreen or zero-size)"
    return problem


def capture(d: WebDriver, url: str, expect: Sequence[str], png: Path, *, timeout_s: float = 60.0,
            settle_s: float = 1.5) -> Shot:
    """Open `url`, wait until every `expect` text is in sight (or an error page shows), screenshot it.

    Raises UICheckError for an error page, a page that stays blank, or one that never shows
    what was expected within `timeout_s`; the screenshot is saved either way, to look at."""
    from selenium.common.exceptions import WebDriverException

    t0 = time.monotonic()
    try:
        d.get(url)
    except WebDriverException as exc:
        first = (exc.msg or str(exc)).splitlines()[0]
        raise UICheckError(f"{url}: the browser could not load it: {first}") from exc
    problem = _look(d, expect)
    while problem is not None and not problem.startswith("error page") and time.monotonic() - t0 < timeout_s:
        time.sleep(0.5)
        problem = _look(d, expect)
    if problem is None:
        time.sleep(settle_s)  # the graph lays itself out after its text has arrived: look again then
        problem = _look(d, expect)
    png.parent.mkdir(parents=True, exist_ok=True)
    data = d.get_screenshot_as_png()
    png.write_bytes(data)
    if problem is None:
        problem = blank_problem(data)
    if problem is not None:
        raise UICheckError(f"{url}: {problem} (screenshot: {png})")
    colours, ink = image_stats(data)
    return Shot(url, png, round(time.monotonic() - t0, 1), colours, round(ink, 3))


def look_at_dagster(base: str, out: Path, *, location: str = "crypto_assets",
                    row_count: int | None = None) -> list[Shot]:
    """The Dagster webserver at `base` as a person opens it: the silver group's asset graph
    (clean_ticks between raw_ticks and the gold tables) and clean_ticks' asset page with its
    columns as the table registry describes them; with `row_count` (what the warehouse holds once
    a run has finished), also its latest materialization's row count. The page of an asset that
    does not exist must be caught as an error page, so the check is seen to fail. Screenshots go
    to `out`."""
    from crypto_assets.warehouse.tables import TABLES

    page = ["clean_ticks", "Latest materialization", "coin_id", TABLES["clean_ticks"].description("coin_id")]
    if row_count is not None:
        page += ["Row count", f"{row_count:,}"]
    with browser() as d:
        shots = [capture(d, f"{base}/locations/{location}/asset-groups/silver/lineage",
                         ["raw_ticks", "clean_ticks", "market_features", "ohlcv_1m"], out / "asset_graph.png"),
                 capture(d, f"{base}/assets/clean_ticks", page, out / "asset_clean_ticks.png")]
        try:
            capture(d, f"{base}/assets/no_such_asset", ["no_such_asset"], out / "missing_asset.png", timeout_s=30)
        except UICheckError as exc:
            if "error page" not in str(exc):
                raise
        else:
            raise UICheckError("the UI check passed the page of an asset that does not exist")
    return shots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crypto_assets.ops.ui_check", description=__doc__)
    p.add_argument("url")
    p.add_argument("expect", nargs="*", help="texts the rendered page must show")
    p.add_argument("--png", default="var/ui/screenshot.png")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    try:
        with browser() as d:
            shot = capture(d, args.url, args.expect, Path(args.png), timeout_s=args.timeout)
    except UICheckError as exc:
        print(f"ui check FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"ok {shot.url} in {shot.seconds}s: {shot.png} ({shot.colours} colours, {shot.ink:.1%} ink)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
