"""Notebooks a reader can download or launch, and each chapter's exercise one click away.

The repository comes from the environment at build time (the deploy workflow sets it):

    BOOK_REPOSITORY_URL     e.g. https://github.com/org/attention-from-scratch; unset: no
                            repository, issue, edit or launch buttons (none that would break)
    BOOK_REPOSITORY_BRANCH  the branch with the sources (edit links, Binder); default main
    BOOK_PAGES_BRANCH       the branch the site is published to, where Colab finds the
                            notebooks below; default gh-pages (.github/workflows/book.yml)

Every build writes into the site, whatever the environment:

* `notebooks/<stem>.ipynb` for every chapter (a MyST notebook, converted by jupytext);
* `exercises/<stem>/<name>.ipynb` for every chapter `book/NN-*.md` whose stem has an
  `exercises/<stem>/` folder, copied from there;

each with a first cell that installs `attnlab` where it is missing (Colab, Binder) and
does nothing where it is installed. Every such chapter gets a box, at the end of its
section "Exercise" (or of the page), with the download, an "Open in Colab" link when the
repository is known, and how to check the work. The header of every chapter offers the
`.ipynb` download, and with a GitHub repository, Colab and Binder launch buttons.
"""

import os
import posixpath
import re
from html import escape
from pathlib import Path
from urllib.parse import quote

import jupytext
import nbformat
from docutils import nodes
from sphinx.errors import ExtensionError

REPO = Path(__file__).resolve().parents[2]
CHAPTER = re.compile(r"^book/(\d\d-[\w-]+)$")
COLAB = "https://colab.research.google.com"
BINDER = "https://mybinder.org"
INSTALL_CELL_ID = "install-attnlab"


# ------------------------------------------------------------------ repository
def repository(config):
    """(url, provider host, owner, name) from book_repository_url, or None when unset."""
    url = config.book_repository_url.strip().rstrip("/")
    if not url:
        return None
    url = url.removesuffix(".git")
    match = re.fullmatch(r"https://([\w.-]+)/([\w.-]+)/([\w.-]+)", url)
    if not match:
        raise ExtensionError(
            f"BOOK_REPOSITORY_URL={config.book_repository_url!r} is not a repository URL like "
            "https://github.com/<owner>/<name>"
        )
    return url, *match.groups()


def configure_repository_buttons(app, config):
    """Repository, issue and edit buttons exactly when the repository is known."""
    repo = repository(config)
    options = config.html_theme_options
    options.update(use_repository_button=bool(repo), use_issues_button=bool(repo), use_edit_page_button=bool(repo))
    if repo:
        options.update(repository_url=repo[0], repository_branch=config.book_repository_branch, path_to_docs="")


def install_cell_source(config):
    """The first cell of every notebook a reader downloads or launches."""
    repo = repository(config)
    if repo:
        spec = f"attnlab @ git+{repo[0]}@{config.book_repository_branch}"
        install = (
            "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\",\n"
            f"                    \"{spec}\"], check=True)\n"
            "    importlib.invalidate_caches()"
        )
    else:
        install = (
            "    raise ModuleNotFoundError(\"this notebook needs the course package attnlab: \"\n"
            "                              \"run `pip install -e .` in the course repository\")"
        )
    return (
        "# Colab, Binder or a fresh Jupyter: install the course package `attnlab` if it is\n"
        "# missing. Where attnlab is installed already, this cell does nothing.\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        "if importlib.util.find_spec(\"attnlab\") is None:\n"
        f"{install}"
    )


def with_install_cell(notebook, config):
    notebook.cells = [cell for cell in notebook.cells if cell.get("id") != INSTALL_CELL_ID]
    cell = nbformat.v4.new_code_cell(install_cell_source(config))
    cell["id"] = INSTALL_CELL_ID
    cell["metadata"]["tags"] = ["install-attnlab"]
    notebook.cells.insert(0, cell)
    return notebook


# ------------------------------------------------------------------- exercises
def exercise_notebooks(docname):
    """The exercise notebooks of a chapter page, as paths relative to the repository."""
    match = CHAPTER.match(docname)
    if not match:
        return []
    folder = REPO / "exercises" / match[1]
    return sorted(p.relative_to(REPO).as_posix() for p in folder.glob("*.ipynb")) if folder.is_dir() else []


def colab_url(config, path):
    repo = repository(config)
    if not repo or repo[1] != "github.com":
        return None
    return f"{COLAB}/github/{repo[2]}/{repo[3]}/blob/{quote(config.book_pages_branch)}/{path}"


def exercise_box(config, docname, notebooks):
    items = []
    for path in notebooks:
        name = posixpath.basename(path)
        href = posixpath.relpath(path, posixpath.dirname(docname))
        links = [f'<a class="reference download" href="{escape(href)}" download>Download {escape(name)}</a>']
        colab = colab_url(config, path)
        if colab:
            links.append(f'<a class="reference external" href="{escape(colab)}">Open {escape(name)} in Colab</a>')
        items.append(f"<li>{' · '.join(links)}</li>")
    first = escape(posixpath.basename(notebooks[0]))
    return (
        '<div class="admonition tip exercise-launch" id="exercise-notebook">'
        '<p class="admonition-title">Your exercise</p>'
        f'<ul class="exercise-launch-links">{"".join(items)}</ul>'
        "<p>Replace every <code>raise NotImplementedError()</code> with your code, then run all the "
        "cells: the test cell after each task stays quiet when your code passes and says what is "
        "wrong when it does not.</p>"
        "<p>To run every visible test at once, in a terminal in the folder of the notebook: "
        f"<code>pip install nbgrader</code>, then <code>nbgrader validate {first}</code>. "
        "Your instructor's grader adds hidden tests (random shapes, edge cases, the classic "
        "mistakes of this chapter) and names the mistake it recognises.</p></div>"
    )


def depend_on_exercises(app, doctree):
    """Rebuild a chapter when its exercise folder or notebooks change."""
    folder = REPO / "exercises" / posixpath.basename(app.env.docname)
    if CHAPTER.match(app.env.docname) and folder.is_dir():
        app.env.note_dependency(str(folder))
        for path in exercise_notebooks(app.env.docname):
            app.env.note_dependency(str(REPO / path))


def insert_exercise_box(app, doctree, docname):
    notebooks = exercise_notebooks(docname)
    if not notebooks or app.builder.format != "html":
        return
    box = nodes.raw("", exercise_box(app.config, docname, notebooks), format="html")
    sections = [s for s in doctree.findall(nodes.section)
                if s.children and re.fullmatch(r"exercises?", s[0].astext().strip(), re.I)]
    target = sections[-1] if sections else list(doctree.findall(nodes.section))[-1]
    target.append(box)


# -------------------------------------------------------------------- notebooks
def is_notebook(app, docname):
    return "kernelspec" in app.env.metadata.get(docname, {})


def write_notebooks(app, exception):
    """Downloadable and launchable copies of the chapters and exercises."""
    if exception or app.builder.format != "html":
        return
    out = Path(app.outdir)
    for docname in sorted(app.env.found_docs):
        if not is_notebook(app, docname):
            continue
        notebook = jupytext.read(app.env.doc2path(docname))
        notebook.metadata.pop("jupytext", None)
        for number, cell in enumerate(notebook.cells):  # stable ids: no churn between builds
            cell["id"] = f"cell-{number}"
        target = out / "notebooks" / f"{posixpath.basename(docname)}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(with_install_cell(notebook, app.config), target)
        for path in exercise_notebooks(docname):
            exercise = nbformat.read(REPO / path, as_version=4)
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(with_install_cell(exercise, app.config), out / path)


# -------------------------------------------------------------- header buttons
def add_header_buttons(app, pagename, templatename, context, doctree):
    """The `.ipynb` download and, with a GitHub repository, Colab and Binder buttons."""
    if not is_notebook(app, pagename):
        return
    buttons = context.get("header_buttons")
    if buttons is None:
        return
    stem = posixpath.basename(pagename)
    notebook_url = context["pathto"](f"notebooks/{stem}.ipynb", 1)
    for group in buttons:
        if group.get("label") == "download-buttons":
            group["buttons"].insert(0, {
                "type": "link", "url": notebook_url, "text": ".ipynb", "icon": "fas fa-code",
                "tooltip": "Download this chapter as a notebook", "label": "download-notebook-button",
            })
    repo = repository(app.config)
    if not repo or repo[1] != "github.com":
        return
    _, _, owner, name = repo
    launch = [{
        "type": "link", "text": "Colab", "tooltip": "Run this chapter in Google Colab",
        "icon": "_static/images/logo_colab.png", "url": colab_url(app.config, f"notebooks/{stem}.ipynb"),
        "label": "colab-button",
    }, {
        "type": "link", "text": "Binder", "tooltip": "Run this chapter on mybinder.org",
        "icon": "_static/images/logo_binder.svg", "label": "binder-button",
        "url": f"{BINDER}/v2/gh/{owner}/{name}/{quote(app.config.book_repository_branch)}"
               f"?urlpath={quote(f'lab/tree/{pagename}.md', safe='')}",
    }]
    buttons.insert(0, {"type": "group", "tooltip": "Run this chapter", "icon": "fas fa-rocket",
                       "buttons": launch, "label": "launch-buttons"})


def setup(app):
    env = os.environ.get
    app.add_config_value("book_repository_url", env("BOOK_REPOSITORY_URL", ""), "html", [str])
    app.add_config_value("book_repository_branch", env("BOOK_REPOSITORY_BRANCH", "main"), "html", [str])
    app.add_config_value("book_pages_branch", env("BOOK_PAGES_BRANCH", "gh-pages"), "html", [str])
    app.connect("config-inited", configure_repository_buttons)
    app.connect("doctree-read", depend_on_exercises)
    app.connect("doctree-resolved", insert_exercise_box)
    app.connect("html-page-context", add_header_buttons, priority=502)
    app.connect("build-finished", write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
