"""Make the built book work offline and without JavaScript errors.

* Serve MathJax and the ipywidgets manager from the repository, not from CDNs:
  `scripts/setup` copies them from pinned npm packages into `vendor/`. When that
  folder is incomplete (no npm on the machine) the book falls back to the CDN
  defaults of Sphinx and MyST-NB and says so.
* Load `static/mathjax2-shim.js` first: the widget manager speaks MathJax 2's API.
* Drop scripts that a page would include twice (sphinx-thebe registers its inline
  configuration once per build phase; the second copy redeclares a `const`).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE.parents[1] / "vendor"
ASSETS = ("mathjax/tex-chtml.js", "require.min.js", "html-manager/embed-amd.js")


def use_local_assets(app, config):
    config.html_static_path = [*config.html_static_path, str(HERE / "static")]
    if not all((VENDOR / asset).is_file() for asset in ASSETS):
        print(f"local_assets: {VENDOR} incomplete; MathJax and widgets load from CDNs")
        return
    config.html_static_path = [*config.html_static_path, str(VENDOR)]
    config.mathjax_path = "mathjax/tex-chtml.js"
    config.nb_ipywidgets_js = {
        "require.min.js": {},
        "html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "https://cdn.jsdelivr.net/npm/"},
    }


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    """Keep the first of each script a page would include twice (same file or body).

    A body-only script registered before and after `Builder.init()` comes back once
    with filename None and once with filename "": both mean "no file".
    """
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", script) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"][:] = kept


def setup(app):
    app.connect("config-inited", use_local_assets, priority=100)
    app.add_js_file("mathjax2-shim.js", priority=1)
    app.connect("html-page-context", drop_duplicate_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
