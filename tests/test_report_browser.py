"""The HTML report opened in a real browser: headless Chromium driven by Selenium.

The page of the zoo's GPT-2 block must load without a console error, hold the graph drawing
and every kernel's source, open each collapsible section, and draw no box over another nor
text outside its box. A screenshot of the whole page is kept in the test's temporary directory.
"""

import base64
import os
import shutil
import warnings

import pytest

import mlc
from mlc.testing.models import MODELS

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
CHROMEDRIVER = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and os.path.exists(p)),
                    None)

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Chromium and its driver (Debian: apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver  # the dev extra's; only needed where Chromium is
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def gpt2_page(tmp_path_factory):
    model, inputs = MODELS["gpt2_block"].build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # attention runs through ATen on purpose
        report = mlc.explain(model, *inputs, mode="reduce-overhead")
    path = tmp_path_factory.mktemp("report") / "gpt2_block.html"
    report.save_html(path)
    return report, path


# Every box of the drawing and every text in it, in page coordinates.
_GEOMETRY = """
return Array.from(document.querySelectorAll('svg g.node')).map(g => {
  const r = g.querySelector('rect').getBoundingClientRect();
  const texts = Array.from(g.querySelectorAll(':scope > text')).map(t => {
    const b = t.getBoundingClientRect(); return [t.textContent, b.left, b.top, b.right, b.bottom]; });
  return {cls: g.getAttribute('class'), box: [r.left, r.top, r.right, r.bottom], texts: texts};
});
"""


# Edges that cross a box: each edge sampled along its length, in the drawing's coordinates.
_EDGES_THROUGH_BOXES = """
const svg = arguments[0];
const boxes = Array.from(svg.querySelectorAll('g.node')).map(g => [g.querySelector('rect').getBBox(),
    g.querySelector('text').textContent]).concat([[svg.querySelector(':scope > rect').getBBox(), 'return']]);
const crossed = [];
for (const path of svg.querySelectorAll(':scope > path')) {
  const length = path.getTotalLength();
  for (let k = 1; k < 40; k++) {
    const p = path.getPointAtLength(length * k / 40);
    for (const [b, name] of boxes) {
      if (p.x > b.x + 1 && p.x < b.x + b.width - 1 && p.y > b.y + 1 && p.y < b.y + b.height - 1) {
        crossed.push([path.getAttribute('d'), name]); break;
      }
    }
  }
}
return crossed;
"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_gpt2_report_in_chromium(browser, gpt2_page):
    report, path = gpt2_page
    browser.get(path.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    # The drawing: one SVG per graph, with a box per node, none over another, each text inside its box.
    svgs = browser.find_elements("css selector", "div.graph > svg")
    assert len(svgs) == len(report.graphs) and all(s.size["width"] > 0 and s.size["height"] > 0 for s in svgs)
    nodes = browser.execute_script(_GEOMETRY)
    assert sum(n["cls"] == "node kernel" for n in nodes) == len(report.kernels)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not _overlap(a["box"], b["box"]), (a["texts"][0][0], b["texts"][0][0])
        left, top, right, bottom = a["box"]
        for text, *t in a["texts"]:
            assert left <= t[0] and t[2] <= right + 0.5 and top <= t[1] and t[3] <= bottom + 0.5, (text, a["box"])

    assert not browser.execute_script(_EDGES_THROUGH_BOXES, svgs[0])

    # Each kernel's Triton source, as the browser shows it.
    for i, k in enumerate(report.kernels):
        pre = browser.find_element("css selector", f"#kernel-{i} details pre")
        assert pre.get_property("textContent") == k.source and pre.is_displayed()

    # The settings the mode gave, and the CUDA graphs it asked for and did not get.
    settings = browser.find_element("xpath", "//h2[text()='Settings']/following-sibling::p[@class='note']").text
    assert "CUDA graphs: not applied" in settings

    # Every collapsible section opens, and shows what it holds.
    closed = [d for d in browser.find_elements("css selector", "details") if not d.get_property("open")]
    assert len(closed) >= len(report.graphs[0].passes) + len(report.kernels)
    for d in closed:
        summary = d.find_element("css selector", "summary")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", summary)
        summary.click()
        assert d.get_property("open") and d.size["height"] > summary.size["height"] + 4, summary.text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

    # The whole page and the whole drawing, for a person to look at.
    browser.execute_script("window.scrollTo(0, 0)")
    page = path.with_suffix(".png")
    _screenshot(browser, page, "document.documentElement")
    graph = path.with_name(path.stem + "_graph.png")
    browser.execute_script("arguments[0].parentElement.style.overflow = 'visible'; "  # the whole width
                           "arguments[0].parentElement.style.border = 'none'", svgs[0])
    _screenshot(browser, graph, "arguments[0]", svgs[0])
    assert page.stat().st_size > 10_000 and graph.stat().st_size > 10_000
    print(f"screenshots: {page}, {graph}")


def _screenshot(browser, path, element: str, *args):
    """A PNG of ``element`` (a JavaScript expression) whole, beyond the window if it is larger."""
    x, y, w, h = browser.execute_script(
        f"const r = {element}.getBoundingClientRect(); "
        "return [r.left + window.scrollX, r.top + window.scrollY, "
        f"Math.max(r.width, {element}.scrollWidth || 0), Math.max(r.height, {element}.scrollHeight || 0)]", *args)
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
