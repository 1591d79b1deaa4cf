"""The look of the site: theme options, logo and icons, social cards, phone layout.

* Theme: no top bar of its own (pydata-sphinx-theme 0.17 adds one that repeats the
  search field, and its hidden `.primary-toggle` there steals the click of the
  visible one: pydata/pydata-sphinx-theme#2451, executablebooks/sphinx-book-theme#988);
  the colour mode starts as "auto" (an empty default logs "Got invalid theme mode").
* `site.css` / `site.js`: code wraps instead of scrolling sideways (phones, print),
  wide figures stay readable on a phone, the static explorers of `attnlab.viz`.
* Open Graph and Twitter meta tags on every page, with a social card and an
  apple-touch icon drawn by matplotlib at build time (no network needed).
  BOOK_SITE_URL gives the published address; by default it is derived from a GitHub
  BOOK_REPOSITORY_URL (https://github.com/o/r -> https://o.github.io/r/).
"""

import os
import re
import textwrap
from html import escape, unescape
from pathlib import Path

from docutils import nodes

from plain_math import tex_to_text  # a sibling extension: book/_ext is on sys.path

HERE = Path(__file__).resolve().parent
DESCRIPTION = ("Build the attention mechanism of large language models from scratch, one idea "
               "per chapter, checked against PyTorch, with auto-graded exercises.")


def configure_theme(app, config):
    options = config.html_theme_options
    options.update(
        navbar_start=[], navbar_center=[], navbar_end=[], navbar_persistent=[],  # no top bar
        logo={**options.get("logo", {}), "text": title(config), "alt_text": f"{title(config)}: home"},
    )
    config.html_context = {**config.html_context, "default_mode": "auto"}  # a template variable


def title(config):
    return config.html_title or config.project


def site_url(config):
    if config.book_site_url:
        return config.book_site_url.rstrip("/") + "/"
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", config.book_repository_url.strip())
    return f"https://{match[1].lower()}.github.io/{match[2]}/" if match else ""


def first_paragraph(doctree):
    for paragraph in doctree.findall(nodes.paragraph):
        parts = [tex_to_text(n.astext()) if isinstance(n, nodes.math) else n.astext()
                 for n in paragraph.findall(lambda n: isinstance(n, (nodes.Text, nodes.math)))
                 if not any(isinstance(a, nodes.math) for a in _ancestors(n))]
        text = re.sub(r"\s+", " ", "".join(parts)).strip()
        if len(text) > 40:
            return text if len(text) <= 200 else text[:197].rsplit(" ", 1)[0] + "…"
    return DESCRIPTION


def _ancestors(node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def add_social_meta(app, pagename, templatename, context, doctree):
    base = site_url(app.config)
    page_title = unescape(re.sub(r"<[^>]+>", "", context.get("title") or title(app.config)))
    page_title = tex_to_text(page_title) if "\\" in page_title else page_title
    description = first_paragraph(doctree) if doctree is not None else DESCRIPTION
    image = f"{base}_static/social-card.png" if base else context["pathto"]("_static/social-card.png", 1)
    tags = {
        "description": description,
        "og:title": page_title, "og:description": description, "og:type": "article" if doctree else "website",
        "og:site_name": title(app.config), "og:image": image, "og:image:width": "1200",
        "og:image:height": "630", "og:image:alt": f"{title(app.config)}: {DESCRIPTION}",
        "twitter:card": "summary_large_image",
    }
    if base:
        tags["og:url"] = f"{base}{context['pagename']}.html"
    lines = []
    for key, value in tags.items():
        attribute = "property" if key.startswith("og:") else "name"
        lines.append(f'<meta {attribute}="{key}" content="{escape(value)}" />')
    touch_icon = context["pathto"]("_static/apple-touch-icon.png", 1)
    lines.append(f'<link rel="apple-touch-icon" href="{touch_icon}" />')
    context["metatags"] = context.get("metatags", "") + "\n" + "\n".join(lines)


def draw_images(app, exception):
    """The social card (1200 x 630) and the apple-touch icon (180 x 180)."""
    if exception or app.builder.format != "html":
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    static = Path(app.outdir) / "_static"
    weights = [[1.0], [0.35, 0.65], [0.15, 0.25, 0.6], [0.1, 0.15, 0.25, 0.5], [0.05, 0.1, 0.15, 0.25, 0.45]]

    def matrix(ax):
        for i, row in enumerate(weights):
            for j in range(5):
                color = plt.cm.Blues(0.25 + 0.75 * min(1, row[j] / 0.65)) if j <= i else "#e5e7eb"
                ax.add_patch(matplotlib.patches.FancyBboxPatch(
                    (j * 1.2, -i * 1.2), 1, 1, boxstyle="round,pad=0,rounding_size=0.18", color=color))
        ax.set_xlim(-0.2, 6)
        ax.set_ylim(-5, 1.2)
        ax.set_aspect("equal")
        ax.axis("off")

    card = plt.figure(figsize=(12, 6.3), dpi=100, facecolor="white")
    matrix(card.add_axes([0.06, 0.22, 0.3, 0.56]))
    heading = "\n".join(textwrap.wrap(title(app.config), 16))
    card.text(0.42, 0.5, heading, fontsize=42, weight="bold", color="#1f2937", va="bottom", linespacing=1.2)
    card.text(0.42, 0.42, "The attention mechanism of LLMs, built\nline by line, checked against "
              "PyTorch,\nwith auto-graded exercises.", fontsize=19, color="#374151", va="top",
              linespacing=1.5)
    card.savefig(static / "social-card.png", dpi=100)
    plt.close(card)

    icon = plt.figure(figsize=(1.8, 1.8), dpi=100, facecolor="white")
    matrix(icon.add_axes([0.08, 0.08, 0.84, 0.84]))
    icon.savefig(static / "apple-touch-icon.png", dpi=100)
    plt.close(icon)


def depend_on_the_site_files(app, doctree):
    """A page is rebuilt when a file of the site changes, not only its own source:
    without this, editing site.css or an extension leaves `no targets are out of date`
    and the old files in _build/html."""
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            app.env.note_dependency(str(path))


def setup(app):
    app.connect("doctree-read", depend_on_the_site_files)
    app.add_config_value("book_site_url", os.environ.get("BOOK_SITE_URL", ""), "html", [str])
    app.connect("config-inited", configure_theme)
    app.add_css_file("site.css")
    app.add_js_file("site.js", loading_method="defer")
    app.connect("html-page-context", add_social_meta)
    app.connect("build-finished", draw_images)
    return {"env_version": 1, "parallel_read_safe": True, "parallel_write_safe": True}
