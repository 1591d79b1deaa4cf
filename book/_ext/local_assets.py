"""Serve MathJax and the ipywidgets manager from the repository, not from CDNs.

`scripts/setup` copies them from pinned npm packages into `vendor/`. When that
folder exists the book works offline: math renders and saved widgets display
without the internet. When it does not (no npm on the machine) the book falls
back to the CDN defaults of Sphinx and MyST-NB and says so.
"""

from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "vendor"
ASSETS = ("mathjax/tex-chtml.js", "require.min.js", "html-manager/embed-amd.js")


def use_local_assets(app, config):
    if not all((VENDOR / asset).is_file() for asset in ASSETS):
        print(f"local_assets: {VENDOR} incomplete; MathJax and widgets load from CDNs")
        return
    config.html_static_path = [*config.html_static_path, str(VENDOR)]
    config.mathjax_path = "mathjax/tex-chtml.js"
    config.nb_ipywidgets_js = {
        "require.min.js": {},
        "html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "https://cdn.jsdelivr.net/npm/"},
    }


def setup(app):
    app.connect("config-inited", use_local_assets, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
