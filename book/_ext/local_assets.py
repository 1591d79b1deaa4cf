"""Make the built book work offline, light and without JavaScript errors.

* Serve MathJax (only the `tex-chtml` build the pages use, with its fonts and the
  extensions it loads on demand) and the ipywidgets manager from the repository, not
  from CDNs: `scripts/setup` copies them from pinned npm packages into `vendor/`.
  When that folder is incomplete (no npm on the machine) the book falls back to the
  CDN defaults of Sphinx and MyST-NB and says so.
* Load the widget manager (3.6 MB) and the saved widget state only on pages that
  draw a widget. An output that also offers HTML (``attnlab.viz.explore``) is shown
  as that HTML, which needs no widget manager at all.
* Tell RequireJS where the widget manager lives, so that its fonts load from
  `_static/html-manager/` instead of 404ing under `book/@jupyter-widgets/...`.
* Replace the theme's Font Awesome bundle (1.5 MB, every icon) with the few icons
  the pages use, as inline SVG (`fontawesome.js`, written after the build).
* Drop scripts that a page would include twice (sphinx-thebe registers its inline
  configuration once per build phase; the second copy redeclares a `const`).
"""

import json
import re
from pathlib import Path

from sphinx.errors import ExtensionError

HERE = Path(__file__).resolve().parent
VENDOR = HERE.parents[1] / "vendor"
MATHJAX = "mathjax/tex-chtml.js"
WIDGET_JS = ("require.min.js", "html-manager/embed-amd.js")
ICONS = VENDOR / "fontawesome-icons.json"
ASSETS = (f"static/{MATHJAX}", *(f"static/{js}" for js in WIDGET_JS), ICONS.name)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def vendor_complete():
    return all((VENDOR / asset).is_file() for asset in ASSETS)


def use_local_assets(app, config):
    config.html_static_path = [*config.html_static_path, str(HERE / "static")]
    # An output with both a widget view and HTML is shown as HTML on the page.
    config.nb_mime_priority_overrides = [
        *config.nb_mime_priority_overrides,
        ("html", WIDGET_VIEW, 35),
    ]
    if not vendor_complete():
        print(f"local_assets: {VENDOR} incomplete; MathJax and widgets load from CDNs")
        return
    config.html_static_path = [*config.html_static_path, str(VENDOR / "static")]
    config.mathjax_path = MATHJAX
    config.nb_ipywidgets_js = {
        "require.min.js": {},
        "widget-paths.js": {},
        "html-manager/embed-amd.js": {},
    }


def keep_used_scripts(app, pagename, templatename, context, doctree):
    """Per page: each script once; the widget manager only where a widget is drawn;
    MathJax only where there is math (Sphinx also loads it on a page whose toctree
    includes pages with math, such as the book's first page: 1.1 MB for nothing).

    A body-only script registered before and after `Builder.init()` comes back once
    with filename None and once with filename "": both mean "no file".
    """
    body = context.get("body", "")
    draws_widgets = WIDGET_VIEW in body
    has_math = 'class="math notranslate' in body
    widget_files = {*WIDGET_JS, "widget-paths.js", "mathjax2-shim.js"}
    seen, kept = set(), []
    for script in context.get("script_files", []):
        filename = getattr(script, "filename", script) or ""
        attributes = getattr(script, "attributes", {})
        local = filename.removeprefix("_static/")
        if not draws_widgets and (local in widget_files or attributes.get("type") == WIDGET_STATE):
            continue
        if not has_math and (local == app.config.mathjax_path or attributes.get("body", "").startswith(
                "window.MathJax = ")):
            continue
        key = (filename, tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"][:] = kept


# ----------------------------------------------------------------- Font Awesome
FAMILIES = {"fa-solid": "solid", "fas": "solid", "fa-regular": "regular", "far": "regular",
            "fa-brands": "brands", "fab": "brands"}
NOT_ICONS = {"fa-lg", "fa-xl", "fa-2x", "fa-fw", "fa-spin", *FAMILIES}
CLASS_ATTR = re.compile(r'class="([^"]*\bfa-[^"]*)"')

ICON_SCRIPT = """/*! Font Awesome Free 6.5.2 by @fontawesome - https://fontawesome.com
 * License - https://fontawesome.com/license/free (Icons: CC BY 4.0, Fonts: SIL OFL 1.1, Code: MIT License)
 * Only the icons this book uses, as inline SVG (written by book/_ext/local_assets.py). */
(function () {
  var icons = %(icons)s;
  var families = {"fa-solid": "solid", "fas": "solid", "fa-regular": "regular", "far": "regular",
                  "fa-brands": "brands", "fab": "brands"};
  var style = document.createElement("style");
  style.textContent = ".svg-inline--fa{display:inline-block;height:1em;overflow:visible;" +
    "vertical-align:-.125em;fill:currentColor;box-sizing:content-box}" +
    ".svg-inline--fa.fa-lg{font-size:1.25em;line-height:.05em;vertical-align:-.2em}" +
    ".svg-inline--fa.fa-fw{width:1.25em}";
  document.head.appendChild(style);
  var modifiers = {"fa-lg": 1, "fa-xl": 1, "fa-2x": 1, "fa-fw": 1, "fa-spin": 1};
  function swap(element) {
    var family = "solid", name = null, keep = [];
    element.classList.forEach(function (c) {
      if (families[c]) family = families[c];
      else if (c.indexOf("fa-") === 0 && !modifiers[c]) name = c.slice(3);
      else if (c !== "fa") keep.push(c);
    });
    var icon = name && icons[family + ":" + name];
    if (!icon) return;
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    Array.prototype.forEach.call(element.attributes, function (a) {
      if (a.name !== "class") svg.setAttribute(a.name, a.value);
    });
    svg.setAttribute("class", ["svg-inline--fa", "fa-" + name].concat(keep).join(" "));
    svg.setAttribute("viewBox", "0 0 " + icon[0] + " " + icon[1]);
    svg.setAttribute("role", "img");
    if (!element.getAttribute("title")) svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", icon[2]);
    svg.appendChild(path);
    element.replaceWith(svg);
  }
  function swapAll(root) {
    root.querySelectorAll("i[class*='fa-'], span[class*='fa-']").forEach(swap);
  }
  function start() {
    swapAll(document);
    new MutationObserver(function (changes) {
      changes.forEach(function (change) {
        change.addedNodes.forEach(function (node) {
          if (node.nodeType === 1) { if (node.matches("i[class*='fa-'], span[class*='fa-']")) swap(node); else swapAll(node); }
        });
      });
    }).observe(document.body, {childList: true, subtree: true});
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
"""


def icons_used(outdir):
    """(family, name) of every Font Awesome icon named in a class attribute of a page."""
    used = set()
    for page in Path(outdir).rglob("*.html"):
        for classes in CLASS_ATTR.findall(page.read_text(encoding="utf-8")):
            classes = classes.split()
            family = next((FAMILIES[c] for c in classes if c in FAMILIES), "solid")
            used.update((family, c[3:]) for c in classes if c.startswith("fa-") and c not in NOT_ICONS)
    return used


def write_icon_subset(app, exception):
    """Overwrite the theme's 1.5 MB fontawesome.js with the icons the pages use."""
    if exception or app.builder.format != "html" or not ICONS.is_file():
        return
    families = json.loads(ICONS.read_text())
    aliases = {alias: name for name, icon in families.items() for alias in icon.get("aliases", {}).get("names", [])}
    icons, missing = {}, []
    for family, name in sorted(icons_used(app.outdir)):
        icon = families.get(aliases.get(name, name), {}).get("svgs", {}).get("classic", {}).get(family)
        if icon is None:
            missing.append(f"{family} {name}")
            continue
        icons[f"{family}:{name}"] = [icon["width"], icon["height"], icon["path"]]
    if missing:
        raise ExtensionError(f"local_assets: Font Awesome 6 has no icon {', '.join(missing)}")
    target = Path(app.outdir) / "_static" / "scripts" / "fontawesome.js"
    target.write_text(ICON_SCRIPT % {"icons": json.dumps(icons, separators=(",", ":"))}, encoding="utf-8")
    for leftover in ("fontawesome.js.map", "fontawesome.js.LICENSE.txt"):
        (target.parent / leftover).unlink(missing_ok=True)
    # No source maps for a site that is read, not debugged: 3 MB nobody downloads.
    for source_map in (Path(app.outdir) / "_static").rglob("*.map"):
        source_map.unlink()


def setup(app):
    app.connect("config-inited", use_local_assets, priority=100)
    app.add_js_file("mathjax2-shim.js", priority=1)
    app.connect("html-page-context", keep_used_scripts, priority=999)
    app.connect("build-finished", write_icon_subset)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
