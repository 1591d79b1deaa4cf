"""The built book, as a reader sees it: every page in headless Chromium, served over HTTP.

Each page of `_toc.yml` is opened once at 1366x900 (desktop) and once at 390x844 (a
phone), in a fresh profile (a first visit), and measured; the tests below then check
one promise each and name, per page, what breaks it:

* no console error, no uncaught exception, no failed request (a 404 is a failure);
* math typeset within 3 s of navigation, no raw TeX left anywhere (tab titles,
  navigation, search results);
* code: no block wider than the column on a desktop, nothing scrolling sideways on a
  phone, nothing cut off in print; chapter code lines <= 80 characters in the sources;
* figures: loaded, captioned, with real alt text, readable on a phone (>= 60% of the
  drawn size); explorers switch figures without a kernel; no control label cut short;
* <= 3 MiB transferred per chapter page;
* phone: the table of contents drawer and "On this page" open; desktop: the sidebar
  collapses and comes back;
* each chapter with an exercise links its notebook; the .ipynb downloads exist and
  start with a harmless install cell; every chapter has a next page; the roadmap
  lists every chapter; social meta tags;
* launch: without BOOK_REPOSITORY_URL no repository or launch buttons; with it (a
  second build, which reuses this build's executed notebooks) Colab, Binder,
  repository, issue and edit buttons and Colab links for the exercises.

Needs `_build/html` (scripts/test builds it first) and Debian's chromium. Outside CI
the tests are skipped when either is missing; in CI (CI=true) that is a failure.
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BOOK_HTML", REPO / "_build" / "html"))  # BOOK_HTML: a build elsewhere
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}
BUDGET_BYTES = 3 * 2**20
MATH_SECONDS = 3.0
MIN_PHONE_SCALE = 0.6
CODE_LINE = 80
TEX_LEFT = re.compile(r"\\[A-Za-z]+|\$\$|\\\(|\\\[")
EXAMPLE_REPOSITORY = "https://github.com/example-org/attention-from-scratch"


CHAPTER = re.compile(r"book/\d\d-[\w-]+")


def toc_entries():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [*toc.get("chapters", []), *(c for part in toc.get("parts", []) for c in part.get("chapters", []))]


def toc_pages():
    """Every page of the table of contents: the root, the chapters and their sections."""
    def walk(entries):
        for entry in entries:
            yield entry["file"]
            yield from walk(entry.get("sections", []))

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [toc["root"], *walk(toc_entries())]


def chapters():
    """The chapters themselves (top-level entries), without their section pages."""
    return [e["file"] for e in toc_entries() if CHAPTER.fullmatch(e["file"])]


def chapter_pages():
    """Every page of every chapter: the chapters and their section pages."""
    return [p for p in toc_pages() if CHAPTER.fullmatch(p)]


def exercise_notebooks(page):
    folder = REPO / "exercises" / Path(page).name
    return sorted(folder.glob("*.ipynb")) if folder.is_dir() else []


def require(condition, reason):
    if not condition:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


# --------------------------------------------------------------------- serving
class Site:
    """A built book served over HTTP on localhost, as GitHub Pages would serve it."""

    def __init__(self, root):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM, "chromium is not installed (apt-get install chromium)")
    require((HTML / "index.html").is_file(), "the book is not built: run `bash scripts/build-book`")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site():
    served = Site(HTML)
    yield served
    served.close()


# Hook MathJax's startup promise as early as possible, to time the typesetting.
MATH_TIMER = """
(() => {
  const poll = () => {
    const startup = window.MathJax && window.MathJax.startup;
    if (startup && startup.promise) {
      startup.promise.then(() => { window.__mathDone = performance.now(); });
    } else { requestAnimationFrame(poll); }
  };
  poll();
})();
"""


class Visit:
    """One page in a fresh profile: what went wrong while it loaded, and the page."""

    def __init__(self, browser, url, device):
        self.context = browser.new_context(**device)
        self.page = self.context.new_page()
        self.problems, self.requests = [], []
        self.page.add_init_script(MATH_TIMER)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.on("requestfinished", lambda r: self.requests.append(r))
        self.page.goto(url, wait_until="load")

    def settle(self):
        self.page.wait_for_load_state("networkidle")

    def close(self):
        self.context.close()


def typeset(page, timeout_ms=30_000):
    """Seconds from navigation until MathJax finished typesetting the page."""
    page.wait_for_function("() => window.__mathDone !== undefined", timeout=timeout_ms)
    return page.evaluate("() => window.__mathDone") / 1000


MEASURE = """
() => {
  const main = document.querySelector("main");
  const text = (el) => (el ? el.innerText : "");
  const prose = (el) => {  // the text a reader reads, without code and program output
    if (!el) return "";
    const copy = el.cloneNode(true);
    copy.querySelectorAll("pre, code, script, style, .highlight").forEach((c) => c.remove());
    document.body.appendChild(copy);
    const t = copy.innerText;
    copy.remove();
    return t;
  };
  const overflowing = (selector) => [...document.querySelectorAll(selector)]
    .filter((el) => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
    .map((el) => `${el.scrollWidth - el.clientWidth}px too wide: ` + el.innerText.split("\\n").find((l) => l.length > 0).slice(0, 90));
  const figures = [...document.querySelectorAll("article div.cell_output img, article figure.attnlab-explorer img")]
    .map((img) => {
      const figure = img.closest("figure");
      const caption = figure && figure.querySelector("figcaption");
      const code = img.closest(".cell") && img.closest(".cell").querySelector(".cell_input pre");
      return {src: img.getAttribute("src").slice(0, 80), alt: img.getAttribute("alt") || "",
              cell: code ? code.innerText.split("\\n").find((l) => l.trim()).trim().slice(0, 50) : "?",
              caption: caption ? caption.innerText.trim() : "", natural: img.naturalWidth,
              shown: img.getBoundingClientRect().width, loaded: img.complete && img.naturalWidth > 0};
    });
  return {
    title: document.title,
    mainText: prose(main),
    headerLinks: [...document.querySelectorAll(".article-header-buttons a")].map((a) => [a.className, a.href]),
    exerciseBox: (() => {
      const box = document.querySelector("#exercise-notebook");
      return box && {text: box.innerText, downloads: [...box.querySelectorAll("a[download]")].map((a) => a.href),
                     colab: [...box.querySelectorAll("a[href*='colab.research.google.com']")].map((a) => a.href)};
    })(),
    nextPages: document.querySelectorAll("a.right-next").length,
    navText: text(document.querySelector(".bd-sidebar-primary")),
    pageWidth: document.scrollingElement.scrollWidth,
    viewportWidth: window.innerWidth,
    mathErrors: document.querySelectorAll("mjx-merror").length,
    mathCount: document.querySelectorAll("mjx-container").length,
    brokenImages: [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.src),
    figures,
    cutLabels: [...document.querySelectorAll(".widget-label, .attnlab-explorer-controls label")]
      .filter((el) => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1).map((el) => el.innerText),
    wideCode: overflowing("article div.highlight pre, article div.cell_output pre"),
    stickingOut: (() => {  // content that runs off the screen instead of wrapping or scrolling
      const limit = document.documentElement.clientWidth, out = [];
      for (const el of document.querySelectorAll("article *")) {
        const box = el.getBoundingClientRect();
        if (box.width === 0 || box.right <= limit + 1) continue;
        let held = false;
        for (let a = el.parentElement; a && a.tagName !== "ARTICLE"; a = a.parentElement) {
          if (["auto", "scroll", "hidden"].includes(getComputedStyle(a).overflowX)) { held = true; break; }
        }
        if (!held) out.push(`<${el.tagName.toLowerCase()}> ${Math.round(box.right - limit)}px past the edge: `
                            + (el.innerText || "").trim().slice(0, 60));
      }
      return out.slice(0, 10);
    })(),
    unswappedIcons: [...document.querySelectorAll("i[class*='fa-'], span[class*='fa-']")].map((e) => e.className),
  };
}
"""

EXPLORE = """
async (root) => {
  // Move each control away from its starting value and back: each move must show a new
  // figure (and alt text), each return the starting one again.
  const image = root.querySelector("img");
  const start = image.src;
  const moved = [];
  const fire = (el) => el.dispatchEvent(new Event("input", {bubbles: true}));
  for (const control of root.querySelectorAll("[data-control]")) {
    if (control.type === "range") {
      const before = control.value;
      control.value = String((Number(before) + 1) % (Number(control.max) + 1));
      fire(control);
      moved.push(image.src !== start);
      control.value = before;
      fire(control);
    } else if (control.type === "checkbox") {
      control.click();
      moved.push(image.src !== start);
      control.click();
    } else {
      const radios = [...control.querySelectorAll("input")];
      const before = radios.find((r) => r.checked);
      radios.find((r) => !r.checked).click();
      moved.push(image.src !== start);
      before.click();
    }
  }
  return {moved, back: image.src === start, alt: image.alt};
}
"""


# Code keeps its lines on a desktop (program output may wrap, like a terminal's)
FORCE_CODE_ON_ONE_LINE = ("article div.highlight pre { white-space: pre !important; } "
                          "article div.cell_output pre { white-space: pre-wrap !important; }")


@functools.lru_cache(maxsize=None)
def measure(browser, site_url, page_file, device_name):
    """Load one page once per device and measure everything the tests check."""
    device = DESKTOP if device_name == "desktop" else PHONE
    visit = Visit(browser, f"{site_url}{page_file}.html", device)
    page = visit.page
    result = {"math_seconds": None}
    try:
        source = (REPO / f"{page_file}.md").read_text()
        if "$" in source:
            result["math_seconds"] = typeset(page)
        visit.settle()
        result.update(page.evaluate(MEASURE))
        if device_name == "desktop":
            result["bytes"] = sorted(((r.sizes()["responseBodySize"], r.url) for r in visit.requests), reverse=True)
            # Chapter code must fit the desktop column without wrapping.
            forced = page.add_style_tag(content=FORCE_CODE_ON_ONE_LINE)
            result["codeTooWideOnDesktop"] = page.evaluate(MEASURE)["wideCode"]
            forced.evaluate("(style) => style.remove()")
            # Printed to PDF (paper width), nothing may be cut off.
            page.set_viewport_size({"width": 700, "height": 900})
            page.emulate_media(media="print")
            result["codeCutInPrint"] = page.evaluate(MEASURE)["wideCode"]
        else:
            result["explorers"] = [page.locator("figure.attnlab-explorer").nth(n).evaluate(EXPLORE)
                                   for n in range(page.locator("figure.attnlab-explorer").count())]
            result["navigation"] = phone_navigation(page)
        result["problems"] = list(visit.problems)
    finally:
        visit.close()
    return result


def phone_navigation(page):
    """Open the contents drawer and 'On this page' the way a reader does; what failed."""
    failures = []
    page.locator(".primary-toggle:visible").first.tap()
    drawer = page.locator("#pst-primary-sidebar-modal[open]")
    try:
        drawer.wait_for(state="visible", timeout=3_000)
    except Exception:
        return ["tapping the menu button does not open the table of contents"]
    links = drawer.locator("nav a.reference:visible").count()
    if links < len(chapters()):
        failures.append(f"the table of contents shows {links} links, fewer than the {len(chapters())} chapters")
    page.keyboard.press("Escape")
    drawer.wait_for(state="hidden", timeout=3_000)
    if page.locator("#pst-secondary-sidebar nav a").count():
        page.locator(".secondary-toggle:visible").first.tap()
        on_this_page = page.locator("#pst-secondary-sidebar-modal[open]")
        try:
            on_this_page.wait_for(state="visible", timeout=3_000)
            if not on_this_page.locator("a:visible").count():
                failures.append("'On this page' opens empty")
        except Exception:
            failures.append("tapping the 'On this page' button does not open it")
    return failures


def check(failures):
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------- every page, loaded
@pytest.mark.parametrize("device_name", ["desktop", "phone"])
@pytest.mark.parametrize("page_file", toc_pages())
def test_page_loads_without_errors(browser, site, page_file, device_name):
    """No console error, uncaught exception or failed request, on a first visit."""
    result = measure(browser, site.url, page_file, device_name)
    check([f"{page_file} ({device_name}): {p}" for p in result["problems"]]
          + [f"{page_file} ({device_name}): image did not load: {src}" for src in result["brokenImages"]]
          + [f"{page_file} ({device_name}): icon left unrendered: {c}" for c in result["unswappedIcons"]])


@pytest.mark.parametrize("page_file", toc_pages())
def test_math_is_typeset_quickly_and_no_tex_is_left(browser, site, page_file):
    result = measure(browser, site.url, page_file, "desktop")
    failures = []
    if result["math_seconds"] is not None:
        if result["mathCount"] == 0 or result["mathErrors"]:
            failures.append(f"MathJax typeset {result['mathCount']} formulas with {result['mathErrors']} errors")
        if result["math_seconds"] > MATH_SECONDS:
            failures.append(f"math typeset {result['math_seconds']:.1f} s after navigation (limit {MATH_SECONDS} s)")
    for where in ("title", "mainText", "navText"):
        for tex in set(TEX_LEFT.findall(result[where])):
            failures.append(f"raw TeX {tex!r} in the page's {where}")
    check([f"{page_file}: {f}" for f in failures])


@pytest.mark.parametrize("page_file", toc_pages())
def test_code_fits_the_column(browser, site, page_file):
    """Desktop: no code line wraps or scrolls; phone: nothing scrolls sideways; print: nothing cut."""
    desktop = measure(browser, site.url, page_file, "desktop")
    phone = measure(browser, site.url, page_file, "phone")
    failures = [f"desktop, code block wider than the column ({line})" for line in desktop["codeTooWideOnDesktop"]]
    failures += [f"phone, block scrolls sideways ({line})" for line in phone["wideCode"]]
    failures += [f"print, block cut off ({line})" for line in desktop["codeCutInPrint"]]
    for result, name in ((desktop, "desktop"), (phone, "phone")):
        failures += [f"{name}: {what}" for what in result["stickingOut"]]
        if result["pageWidth"] > result["viewportWidth"]:
            failures.append(f"{name}: the page scrolls sideways ({result['pageWidth']} > {result['viewportWidth']} px)")
    check([f"{page_file}: {f}" for f in failures])


@pytest.mark.parametrize("page_file", toc_pages())
def test_chapter_code_lines_are_at_most_80_characters(page_file):
    """The convention behind the rendered check: code lines fit 80 columns (cell metadata aside)."""
    lines, state = [], "prose"
    for number, line in enumerate((REPO / f"{page_file}.md").read_text().splitlines(), 1):
        if state == "prose" and line.startswith("```{code-cell}"):
            state = "cell-start"
        elif state == "cell-start" and line == "---":
            state = "metadata"
        elif state == "metadata":
            state = "code" if line == "---" else "metadata"
        elif state in ("cell-start", "code") and line.startswith("```"):
            state = "prose"
        elif state in ("cell-start", "code"):
            state = "code"
            if len(line) > CODE_LINE:
                lines.append(f"{page_file}.md:{number}: {len(line)} characters: {line.strip()[:60]}...")
    check(lines)


@pytest.mark.parametrize("page_file", toc_pages())
def test_figures_have_captions_alt_text_and_are_readable_on_a_phone(browser, site, page_file):
    desktop = measure(browser, site.url, page_file, "desktop")
    phone = measure(browser, site.url, page_file, "phone")
    failures = []
    for n, figure in enumerate(desktop["figures"], 1):
        where = f"figure {n} (cell `{figure['cell']}`)"
        alt = figure["alt"].strip()
        if not alt or re.search(r"\.(png|jpe?g|svg)$|_build/|[0-9a-f]{32}", alt):
            failures.append(f"{where} has no real alt text (alt={alt[:40]!r}): set mystnb.image.alt")
        if not figure["caption"]:
            failures.append(f"{where} has no caption: set mystnb.figure.caption")
    for n, figure in enumerate(phone["figures"], 1):
        scale = figure["shown"] / max(figure["natural"], 1)
        if figure["loaded"] and scale < MIN_PHONE_SCALE - 0.01:
            failures.append(f"figure {n} (cell `{figure['cell']}`) is shown at {scale:.0%} of its size "
                            "on a phone (needs >= 60%)")
    failures += [f"control label cut short: {label!r}" for label in desktop["cutLabels"] + phone["cutLabels"]]
    check([f"{page_file}: {f}" for f in failures])


def test_site_ships_only_the_mathjax_build_it_uses():
    shipped = sorted(p.name for p in (HTML / "_static" / "mathjax").glob("*.js"))
    require(shipped, "MathJax is not served by the site (no npm when it was built)")
    assert shipped == ["tex-chtml.js"], f"unused MathJax builds in the site: {shipped}"


@pytest.mark.parametrize("page_file", chapter_pages())
def test_chapter_page_weighs_at_most_3_mib(browser, site, page_file):
    sizes = measure(browser, site.url, page_file, "desktop")["bytes"]
    total = sum(size for size, _ in sizes)
    heaviest = ", ".join(f"{url.rsplit('/', 1)[-1][:40]} {size / 2**10:.0f} KiB" for size, url in sizes[:5])
    hint = (" (ipywidgets loads the 3.5 MB widget manager: attnlab.viz.explore draws without it)"
            if "embed-amd.js" in heaviest else "")
    assert total <= BUDGET_BYTES, (f"{page_file}: {total / 2**20:.2f} MiB transferred (limit 3 MiB); "
                                   f"heaviest: {heaviest}{hint}")


# ------------------------------------------------------------------ navigation
@pytest.mark.parametrize("page_file", toc_pages())
def test_phone_reader_can_open_the_contents_and_on_this_page(browser, site, page_file):
    check([f"{page_file}: {f}" for f in measure(browser, site.url, page_file, "phone")["navigation"]])


def test_desktop_sidebar_collapses_and_comes_back(browser, site):
    visit = Visit(browser, f"{site.url}{chapters()[0]}.html", DESKTOP)
    page = visit.page
    try:
        visit.settle()
        sidebar = page.locator("#pst-primary-sidebar")
        assert sidebar.is_visible()
        page.locator(".primary-toggle:visible").first.click()
        sidebar.wait_for(state="hidden", timeout=3_000)
        assert not page.locator("dialog[open]").count(), "the toggle opened a dialog instead of collapsing"
        page.locator(".primary-toggle:visible").first.click()
        sidebar.wait_for(state="visible", timeout=3_000)
        assert not visit.problems, visit.problems
    finally:
        visit.close()


def test_search_shows_no_raw_tex(browser, site):
    visit = Visit(browser, f"{site.url}search.html?q=divide+sqrt+scaled", DESKTOP)
    page = visit.page
    try:
        page.wait_for_selector("#search-results li p.context", timeout=20_000)
        visit.settle()
        results = page.inner_text("#search-results")
        sidebar = page.inner_text(".bd-sidebar-primary")
        assert "√D" in results, f"the chapter on scaling is not among the results: {results[:300]}"
        assert not TEX_LEFT.findall(results), f"raw TeX in search results: {set(TEX_LEFT.findall(results))}"
        assert not TEX_LEFT.findall(sidebar), f"raw TeX in the search page's navigation: {sidebar[:200]}"
        assert not visit.problems, visit.problems
    finally:
        visit.close()


@pytest.mark.parametrize("page_file", chapters())
def test_every_chapter_has_a_next_page(browser, site, page_file):
    assert measure(browser, site.url, page_file, "desktop")["nextPages"] == 1, f"{page_file} has no next page"


# -------------------------------------------------------- explorers and widgets


def pages_with(text):
    return [p for p in toc_pages() if text in (REPO / f"{p}.md").read_text()]


@pytest.mark.parametrize("page_file", pages_with("explore("))
def test_explorers_move_without_a_kernel(browser, site, page_file):
    explorers = measure(browser, site.url, page_file, "phone")["explorers"]
    assert explorers, f"{page_file} calls explore() but shows no explorer"
    failures = []
    for n, moved in enumerate(explorers, 1):
        if not all(moved["moved"]) or not moved["back"]:
            failures.append(f"explorer {n} did not follow its controls (changed per control: "
                            f"{moved['moved']}, back at the start: {moved['back']})")
        if "Shown for" not in moved["alt"]:
            failures.append(f"explorer {n} has alt {moved['alt']!r}")
    check([f"{page_file}: {f}" for f in failures])


@pytest.mark.parametrize("page_file", pages_with("ipywidgets"))
def test_widgets_show_their_saved_state(browser, site, page_file):
    """Pages that still use ipywidgets directly draw them from their saved state."""
    visit = Visit(browser, f"{site.url}{page_file}.html", DESKTOP)
    try:
        visit.page.wait_for_selector(".jupyter-widgets .widget-slider, .jupyter-widgets .widget-hslider", timeout=30_000)
        visit.settle()
        assert not visit.problems, f"{page_file}: {visit.problems}"
    finally:
        visit.close()


# ------------------------------------------------------------ exercises, notebooks
@pytest.mark.parametrize("page_file", chapters())
def test_chapter_links_its_exercise_and_notebook(browser, site, page_file):
    result = measure(browser, site.url, page_file, "desktop")
    stem = Path(page_file).name
    notebook = [href for cls, href in result["headerLinks"] if "download-notebook-button" in cls]
    assert notebook and notebook[0] == f"{site.url}notebooks/{stem}.ipynb", f"{page_file}: no .ipynb download"
    assert (HTML / "notebooks" / f"{stem}.ipynb").is_file()
    expected, box = exercise_notebooks(page_file), result["exerciseBox"]
    if not expected:
        assert box is None, f"{page_file} has no exercises/{stem}/ but shows an exercise box"
        return
    assert box, f"{page_file}: exercises/{stem}/ exists but the page has no exercise box"
    assert box["downloads"] == [f"{site.url}exercises/{stem}/{p.name}" for p in expected], box
    for path in expected:
        cells = json.loads((HTML / "exercises" / stem / path.name).read_text())["cells"]
        assert cells[0]["id"] == "install-attnlab", "the exercise does not start with the install cell"
        original = json.loads(path.read_text())["cells"]
        assert [c["source"] for c in cells[1:]] == [c["source"] for c in original], "the copy differs"
    assert "nbgrader validate" in box["text"] and "NotImplementedError" in box["text"]


@pytest.mark.parametrize("page_file", chapters()[:1])
def test_install_cell_is_harmless_where_attnlab_is_installed(page_file):
    notebook = json.loads((HTML / "notebooks" / f"{Path(page_file).name}.ipynb").read_text())
    first = notebook["cells"][0]
    assert "find_spec(\"attnlab\")" in "".join(first["source"])
    run = subprocess.run([sys.executable, "-c", "".join(first["source"])], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and not run.stdout and not run.stderr, (run.stdout, run.stderr)


def test_without_a_repository_there_are_no_repository_or_launch_buttons(browser, site):
    if os.environ.get("BOOK_REPOSITORY_URL"):
        pytest.skip("this build was made with BOOK_REPOSITORY_URL set")
    for page_file in chapters():
        result = measure(browser, site.url, page_file, "desktop")
        kinds = [cls for cls, _ in result["headerLinks"]]
        assert not re.findall(r"source-(repository|edit|issues)|colab|binder", " ".join(kinds)), (page_file, kinds)
        assert not (result["exerciseBox"] or {}).get("colab"), page_file


def test_roadmap_lists_every_chapter(browser, site):
    visit = Visit(browser, f"{site.url}book/roadmap.html", DESKTOP)
    try:
        rows = visit.page.evaluate("() => [...document.querySelectorAll('table.course-roadmap tbody tr')]"
                                   ".map((tr) => [...tr.querySelectorAll('td')].map((td) => "
                                   "[td.innerText.trim(), [...td.querySelectorAll('a')].map((a) => a.href)]))")
        assert len(rows) == len(chapters())
        for page_file, (chapter, exercise, builds, modules) in zip(chapters(), rows):
            assert chapter[1] and chapter[1][0].endswith(f"{page_file}.html"), chapter
            expected = exercise_notebooks(page_file)
            assert [href.rsplit("/", 1)[-1] for href in exercise[1]] == [p.name for p in expected]
            for href in exercise[1]:
                assert visit.page.request.get(href).ok, href
            if (REPO / "solutions" / Path(page_file).name).is_dir():
                assert builds[0] != "—" and modules[0].startswith("attnlab."), (page_file, builds, modules)
        assert not visit.problems, visit.problems
    finally:
        visit.close()


def test_social_cards_and_icons(browser, site):
    visit = Visit(browser, f"{site.url}{chapters()[0]}.html", DESKTOP)
    try:
        page = visit.page
        meta = page.evaluate("() => Object.fromEntries([...document.querySelectorAll('meta[property^=og], "
                             "meta[name^=twitter], meta[name=description]')].map((m) => "
                             "[m.getAttribute('property') || m.getAttribute('name'), m.content]))")
        for key in ("og:title", "og:description", "og:image", "twitter:card", "description"):
            assert meta.get(key), f"no {key} meta tag"
        assert not TEX_LEFT.findall(meta["og:title"] + meta["og:description"]), meta
        image = page.evaluate("(u) => new URL(u, location.href).href", meta["og:image"])
        if image.startswith(site.url):
            assert page.request.get(image).ok, image
        icon = page.evaluate("() => document.querySelector('link[rel=icon]').href")
        assert page.request.get(icon).ok
        assert page.locator(".navbar-brand img:visible").count() == 1
    finally:
        visit.close()


# ------------------------------------------------- the same book, with a repository
@pytest.fixture(scope="module")
def repository_site(tmp_path_factory):
    """The book built again with BOOK_REPOSITORY_URL set, reusing this build's executed
    notebooks and parsed sources, so that only the pages are written again (~30 s)."""
    require((HTML.parent / ".doctrees").is_dir(), "no .doctrees next to the build to reuse")
    out = tmp_path_factory.mktemp("with-repository")
    for cache in (".doctrees", ".jupyter_cache"):
        shutil.copytree(HTML.parent / cache, out / "_build" / cache)
    env = {**os.environ, "BOOK_REPOSITORY_URL": EXAMPLE_REPOSITORY, "BOOK_SITE_URL": ""}
    build = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO), "-W", "-n", "--keep-going",
         "--path-output", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    served = Site(out / "_build" / "html")
    yield served, out / "_build" / "html"
    served.close()


def test_with_a_repository_every_chapter_launches_and_links_back(browser, repository_site):
    served, root = repository_site
    owner_repo = EXAMPLE_REPOSITORY.removeprefix("https://github.com/")
    for page_file in chapters():
        stem = Path(page_file).name
        visit = Visit(browser, f"{served.url}{page_file}.html", DESKTOP)
        try:
            links = dict((re.search(r"btn-([\w-]+-button)", cls)[1], href) for cls, href in visit.page.evaluate(
                "() => [...document.querySelectorAll('.article-header-buttons a')].map((a) => [a.className, a.href])"))
            assert links.get("colab-button") == ("https://colab.research.google.com/github/"
                                                 f"{owner_repo}/blob/gh-pages/notebooks/{stem}.ipynb"), links
            assert links.get("binder-button", "").startswith(f"https://mybinder.org/v2/gh/{owner_repo}/main?urlpath=")
            assert links.get("source-repository-button") == EXAMPLE_REPOSITORY
            assert links.get("source-issues-button", "").startswith(f"{EXAMPLE_REPOSITORY}/issues")
            assert links.get("source-edit-button") == f"{EXAMPLE_REPOSITORY}/edit/main/{page_file}.md"
            assert links.get("download-notebook-button", "").endswith(f"notebooks/{stem}.ipynb")
            for notebook in exercise_notebooks(page_file):
                colab = visit.page.locator("#exercise-notebook a[href*='colab.research.google.com']")
                assert colab.first.get_attribute("href") == ("https://colab.research.google.com/github/"
                                                             f"{owner_repo}/blob/gh-pages/exercises/{stem}/{notebook.name}")
            og_image = visit.page.get_attribute("meta[property='og:image']", "content")
            assert og_image == "https://example-org.github.io/attention-from-scratch/_static/social-card.png"
            assert not visit.problems, f"{page_file}: {visit.problems}"
        finally:
            visit.close()
        install = "".join(json.loads((root / "notebooks" / f"{stem}.ipynb").read_text())["cells"][0]["source"])
        assert f"attnlab @ git+{EXAMPLE_REPOSITORY}@main" in install
