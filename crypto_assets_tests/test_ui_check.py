"""The browser check the stack test looks at the Dagster UI with (crypto_assets/ops/ui_check.py):
real headless Chromium against pages served here, so it is shown to pass a rendered page and to
fail a blank one, an error page, a page whose text is out of sight or drawn invisibly, and a
server that is not there. The stack test points it at a live Dagster webserver."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from pytest_httpserver import HTTPServer
from selenium.webdriver.remote.webdriver import WebDriver

from crypto_assets.ops import ui_check
from crypto_assets.ops.stack.procs import free_port
from crypto_assets.ops.ui_check import UICheckError, blank_problem, capture, page_problem

PAGE = """<!doctype html><html><head><style>body {{ font: 16px sans-serif; margin: 0; }}
.node {{ display: inline-block; margin: 20px; padding: 14px 28px; border: 2px solid #4f43dd;
border-radius: 8px; background: #eceafc; color: #202020; }}</style></head><body>{body}</body></html>"""
GRAPH = "".join(f'<div class="node">{name}</div>' for name in ("sources", "topics", "bronze", "silver", "gold")) + \
    "<p><span>Latest <span>materialization</span></span></p>"  # one text in two nodes, as React renders it
# Renders after a delay, as the Dagster UI does once its GraphQL answers arrive.
LATE = """<div id="root">loading</div><script>setTimeout(() => {{
  document.getElementById('root').innerHTML = {html!r}; }}, {ms});</script>"""


# ------------------------------------------------------------------------------- pure functions
def test_page_problem_names_error_pages_blank_pages_and_missing_text() -> None:
    assert page_problem("Global asset lineage\nbronze\nsilver", ["bronze", "Silver"]) is None
    assert page_problem("Assets\nNo assets\nNo assets were found", ["no_such_asset"]) == \
        "error page: 'No assets were found'"
    assert page_problem("  \n ", []) == "blank page: no visible text"
    assert page_problem("This site can\u2019t be reached\n\nERR_UNSAFE_PORT", ["bronze"]) == \
        "error page: \"This site can't be reached\""
    assert page_problem("Overview\nRuns", ["clean_ticks"]) == "missing ['clean_ticks'] on the page"
    problem = page_problem("Something went wrong\nTypeError: x is undefined", ["bronze"])
    assert problem is not None and problem.startswith("error page: 'Something went wrong")


def _png(draw: bool) -> bytes:
    img = Image.new("RGB", (400, 300), "white")
    if draw:
        d = ImageDraw.Draw(img)
        for i in range(12):
            d.rectangle((10 + 30 * i, 20, 30 + 30 * i, 60 + 15 * i), fill=(20 * i, 80, 255 - 20 * i))
            d.text((12 + 30 * i, 250), f"n{i}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_blank_problem_tells_a_one_colour_screenshot_from_a_drawn_one() -> None:
    problem = blank_problem(_png(draw=False))
    assert problem is not None and problem.startswith("blank screenshot: 1 colour(s)")
    assert blank_problem(_png(draw=True)) is None


# ------------------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with ui_check.browser() as d:
        yield d


def _serve(httpserver: HTTPServer, path: str, body: str) -> str:
    httpserver.expect_request(path).respond_with_data(PAGE.format(body=body), content_type="text/html")
    return httpserver.url_for(path)


def test_a_rendered_page_passes_and_is_saved(driver: WebDriver, httpserver: HTTPServer, tmp_path: Path) -> None:
    url = _serve(httpserver, "/graph", LATE.format(html=GRAPH, ms=800))
    shot = capture(driver, url, ["sources", "silver", "gold", "Latest materialization"], tmp_path / "graph.png",
                   timeout_s=20)
    assert shot.png.stat().st_size > 1000
    assert shot.colours >= ui_check.MIN_COLOURS and shot.ink >= ui_check.MIN_INK
    with Image.open(shot.png) as img:
        assert img.width >= 1000  # the window's size, not a thumbnail


def test_a_blank_page_fails(driver: WebDriver, httpserver: HTTPServer, tmp_path: Path) -> None:
    url = _serve(httpserver, "/blank", "")
    with pytest.raises(UICheckError, match="blank page: no visible text"):
        capture(driver, url, ["bronze"], tmp_path / "blank.png", timeout_s=3)
    assert (tmp_path / "blank.png").exists()  # kept to look at


def test_an_error_page_fails_at_once(driver: WebDriver, httpserver: HTTPServer, tmp_path: Path) -> None:
    html = "<h2>Something went wrong</h2><pre>GraphQL request failed</pre>"
    url = _serve(httpserver, "/error", LATE.format(html=html, ms=300))
    with pytest.raises(UICheckError, match="error page: 'Something went wrong'"):
        capture(driver, url, ["bronze"], tmp_path / "error.png", timeout_s=30)


def test_text_out_of_sight_fails(driver: WebDriver, httpserver: HTTPServer, tmp_path: Path) -> None:
    # in innerText, but drawn 5000 px below the window: what a zoomed-out graph looked like
    url = _serve(httpserver, "/offscreen", '<div class="node">topics</div>'
                 '<div class="node" style="position:absolute; top:5000px">bronze</div>')
    with pytest.raises(UICheckError, match=r"\['bronze'\] on the page but out of sight"):
        capture(driver, url, ["topics", "bronze"], tmp_path / "offscreen.png", timeout_s=3)


def test_text_drawn_invisibly_fails_on_the_pixels(driver: WebDriver, httpserver: HTTPServer,
                                                  tmp_path: Path) -> None:
    url = _serve(httpserver, "/white", '<p style="color:#fff">bronze silver gold</p>')
    with pytest.raises(UICheckError, match="blank screenshot"):
        capture(driver, url, ["bronze"], tmp_path / "white.png", timeout_s=3)


def test_a_server_that_is_not_there_fails(driver: WebDriver, tmp_path: Path) -> None:
    with pytest.raises(UICheckError, match="could not load it: .*ERR_CONNECTION_REFUSED"):
        capture(driver, f"http://127.0.0.1:{free_port()}/asset-groups", ["bronze"], tmp_path / "down.png",
                timeout_s=5)
