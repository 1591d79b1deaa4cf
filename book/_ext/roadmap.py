"""The roadmap table, generated from the repository so that it cannot go stale.

    ```{course-roadmap}
    ```

One row per chapter listed in `_toc.yml` (a chapter that is not there yet has no row):

* chapter: its title (the first `# ` heading, as the navigation shows it);
* exercise: the notebooks in `exercises/<stem>/`, as downloads from the site;
* what you will build: the functions and classes the learner writes, i.e. the
  `def`/`class` names in the solution cells of `solutions/<stem>/*.ipynb`;
* package module: the `attnlab` modules that define those names (or, when the package
  has none of them, the modules the chapter imports from), read from `src/attnlab/`.
"""

import json
import posixpath
import re
from pathlib import Path

import yaml
from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective

from plain_math import tex_to_text  # a sibling extension: book/_ext is on sys.path

REPO = Path(__file__).resolve().parents[2]
NOT_TAUGHT = {"viz", "diagnose", "feedback", "__init__"}


def toc_chapters():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    entries = [*toc.get("chapters", []), *(c for part in toc.get("parts", []) for c in part.get("chapters", []))]
    stems = [entry["file"] for entry in entries if "file" in entry]
    return [s.removesuffix(".md") for s in stems if re.fullmatch(r"book/\d\d-[\w-]+(\.md)?", s)]


def chapter_title(source):
    heading = re.search(r"^# (.+)$", source, re.M)
    title = heading[1].strip() if heading else ""
    return re.sub(r"\$([^$]+)\$", lambda m: tex_to_text(m[1]), title)  # as in the navigation


def learner_builds(stem):
    names = []
    for notebook in sorted((REPO / "solutions" / stem).glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            grading = cell.get("metadata", {}).get("nbgrader", {})
            if grading.get("solution") and not grading.get("grade"):
                names += re.findall(r"^(?:def|class) (\w+)", "".join(cell["source"]), re.M)
    return names


def package_definitions():
    """name -> module for every top-level def/class of src/attnlab."""
    where = {}
    for module in sorted((REPO / "src" / "attnlab").glob("*.py")):
        if module.stem in NOT_TAUGHT:
            continue
        for name in re.findall(r"^(?:def|class) (\w+)", module.read_text(), re.M):
            if not name.startswith("_"):
                where.setdefault(name, f"attnlab.{module.stem}")
    return where


def chapter_imports(source):
    names = []
    for module, imported in re.findall(r"^from attnlab(\.\w+)? import \(?([\w, \n]+)\)?", source, re.M):
        if module.lstrip(".") not in NOT_TAUGHT:
            names += [n.strip() for n in imported.replace("\n", " ").split(",") if n.strip()]
    return names


def package_modules(builds, source, where):
    modules = [where[n] for n in builds if n in where] or [where[n] for n in chapter_imports(source) if n in where]
    return list(dict.fromkeys(modules))


def literals(names):
    paragraph = nodes.paragraph()
    for i, name in enumerate(names):
        if i:
            paragraph += nodes.Text(", ")
        paragraph += nodes.literal(text=name)
    return paragraph


class CourseRoadmap(SphinxDirective):
    has_content = False

    def run(self):
        where = package_definitions()
        self.env.note_dependency(str(REPO / "_toc.yml"))
        for module in (REPO / "src" / "attnlab").glob("*.py"):
            self.env.note_dependency(str(module))
        rows = []
        for docname in toc_chapters():
            path = REPO / f"{docname}.md"
            if not path.is_file():
                continue
            self.env.note_dependency(str(path))
            stem = posixpath.basename(docname)
            source = path.read_text()
            builds = learner_builds(stem)
            exercises = sorted((REPO / "exercises" / stem).glob("*.ipynb"))
            for notebook in [*exercises, *(REPO / "solutions" / stem).glob("*.ipynb")]:
                self.env.note_dependency(str(notebook))

            link = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget=f"/{docname}",
                                         refexplicit=True, refdoc=self.env.docname)
            link += nodes.inline(text=chapter_title(source))
            chapter = nodes.paragraph()
            chapter += link

            exercise = nodes.paragraph()
            for i, notebook in enumerate(exercises):
                if i:
                    exercise += nodes.Text(", ")
                target = f"exercises/{stem}/{notebook.name}"
                exercise += nodes.reference("", notebook.name, refuri=posixpath.relpath(
                    target, posixpath.dirname(self.env.docname)))
            if not exercises:
                exercise += nodes.Text("—")

            modules = package_modules(builds, source, where)
            rows.append([chapter, exercise, literals(builds) if builds else nodes.paragraph("", "—"),
                         literals(modules) if modules else nodes.paragraph("", "—")])
        return [self.table(["Chapter", "Exercise", "What you will build", "In the package"], rows)]

    @staticmethod
    def table(headers, rows):
        table = nodes.table(classes=["course-roadmap"])
        group = nodes.tgroup(cols=len(headers))
        table += group
        group.extend(nodes.colspec(colwidth=width) for width in (30, 18, 32, 20))
        head = nodes.thead()
        group += head
        head += nodes.row("", *(nodes.entry("", nodes.paragraph("", h)) for h in headers))
        body = nodes.tbody()
        group += body
        for cells in rows:
            body += nodes.row("", *(nodes.entry("", cell) for cell in cells))
        return table


def setup(app):
    app.add_directive("course-roadmap", CourseRoadmap)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
