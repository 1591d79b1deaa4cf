"""The pre-check: what of a submission reaches the sandbox, decided before any learner code runs.

For each expected notebook of an assignment, a learner's file is

* found (the expected name, or the one notebook they renamed) — nothing else in their folder is
  used: a ``torch.py`` or ``numpy.py`` beside it never reaches the sandbox;
* size-checked, decoded as UTF-8 JSON and read as nbformat 4 (older formats are upgraded;
  unreadable or newer ones are refused with the reason);
* **rebuilt** on the assignment's own notebook: every cell the instructor wrote (instructions,
  locked set-up, graded tests with their hidden part) comes from the source, with the
  nbgrader metadata of the source; only the learner's answers (solution cells, matched by
  ``grade_id``, else by cell id) and the cells they added are taken from their file. So bad,
  missing, duplicated or unknown nbgrader metadata, edited, unlocked, retyped or deleted test
  cells and changed points cannot reach nbgrader;
* stripped of shell escapes and magics (``!cmd``, ``%magic``, ``%%cell magic``) in the learner's
  own code, which become comments.

The submission time is the notebook file's modification time on the instructor's disk; a
``timestamp.txt`` a learner wrote is ignored.
"""

import copy
import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 16 << 20
MAGIC = re.compile(r"^\s*(!|%|[A-Za-z_][A-Za-z0-9_]*\s*=\s*[!%])")


@dataclass
class NotebookIntake:
    """One expected notebook of one submission, ready to run or refused."""

    name: str
    path: Path | None  # the learner's file that was used
    notebook: nbformat.NotebookNode | None  # the rebuilt notebook, or None if refused
    refused: str | None = None  # why the file could not be used
    test_cells: tuple = ()
    flags: list = field(default_factory=list)


@dataclass
class SubmissionIntake:
    student: str
    folder: Path
    notebooks: list  # NotebookIntake, one per expected notebook
    timestamp: str | None
    flags: list = field(default_factory=list)


def nbgrader_meta(cell):
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def source_text(cell):
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def neutralise_magics(source):
    """Turn shell escapes and magics into comments; returns (source, whether anything changed)."""
    lines = source.split("\n")
    if lines and lines[0].lstrip().startswith("%%"):
        return "\n".join("# [removed by the grader] " + line for line in lines), True
    changed = False
    for i, line in enumerate(lines):
        if MAGIC.match(line):
            lines[i] = "# [removed by the grader] " + line
            changed = True
    return "\n".join(lines), changed


def read_submitted(path, max_bytes=MAX_NOTEBOOK_BYTES):
    """The learner's file as an nbformat 4 notebook, or (None, reason)."""
    if path.is_symlink() or not path.is_file():
        return None, "the notebook is a link or not a regular file"
    size = path.stat().st_size
    if size > max_bytes:
        return None, f"the file is {size / (1 << 20):.1f} MiB, over the {max_bytes >> 20} MiB limit"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"the file is not UTF-8 text ({error.reason} at byte {error.start})"
    try:
        data = json.loads(text)
    except ValueError as error:
        return None, f"the file is not a notebook: invalid JSON ({error})"
    if not isinstance(data, dict) or not isinstance(data.get("nbformat"), int):
        return None, "the file is JSON but not a notebook (no nbformat version)"
    major = data["nbformat"]
    if major > 4:
        return None, f"the notebook format {major} is newer than this grader reads (4)"
    if major < 4 and not isinstance(data.get("worksheets", data.get("cells")), list):
        return None, f"the notebook (format {major}) has no cells"
    try:
        notebook = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises many kinds on malformed files
        return None, f"the notebook cannot be read ({type(error).__name__}: {str(error)[:200]})"
    if not isinstance(notebook.get("cells"), list):
        return None, "the notebook has no list of cells"
    return notebook, None


def find_notebook_files(folder, expected):
    """Map each expected notebook name to the learner's file for it (None where missing).

    A learner who renamed their notebook (``attention (1).ipynb``) still gets it graded: a
    missing expected name takes the one left-over notebook, if exactly one is left.
    """
    present = sorted(p for p in folder.glob("*.ipynb") if p.is_file() or p.is_symlink())
    found = {name: folder / name if (folder / name) in present else None for name in expected}
    spare = [p for p in present if p.name not in expected]
    missing = [name for name, path in found.items() if path is None]
    if len(missing) == 1 and len(spare) == 1:
        found[missing[0]] = spare[0]
    return found


def rebuild(submitted, source, release):
    """The notebook to run: instructor cells from the source, the learner's answers from theirs.

    ``source`` is the instructor's notebook (solutions and hidden tests), ``release`` the
    student version (its solution cells hold the stubs). Returns (notebook, test cell
    indices, flags).
    """
    flags = []
    source_tests = {nbgrader_meta(c).get("grade_id"): c for c in source.cells if nbgrader_meta(c).get("grade")}
    release_ids = {c.get("id") for c in release.cells}
    release_grade_ids = {nbgrader_meta(c).get("grade_id") for c in release.cells if nbgrader_meta(c)}

    # Match each learner cell to at most one release cell: by grade_id first, then by cell id.
    matched = {}  # release cell position -> learner cell
    after = {}  # release cell position -> learner cells that follow it
    by_grade_id = {nbgrader_meta(c).get("grade_id"): i for i, c in enumerate(release.cells) if nbgrader_meta(c)}
    by_cell_id = {c.get("id"): i for i, c in enumerate(release.cells) if c.get("id")}
    last = -1
    for cell in submitted.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown"):
            continue
        grade_id = nbgrader_meta(cell).get("grade_id")
        position = by_grade_id.get(grade_id) if isinstance(grade_id, str) else None
        if position is None or position in matched:
            position = by_cell_id.get(cell.get("id")) if isinstance(cell.get("id"), str) else None
        if position is not None and position not in matched:
            matched[position] = cell
            last = position
        else:
            after.setdefault(last, []).append(cell)
    unknown = {nbgrader_meta(c).get("grade_id") for c in submitted.cells
               if isinstance(c, dict) and nbgrader_meta(c).get("grade_id")} - release_grade_ids
    if unknown:
        flags.append(f"unknown grade_id {sorted(map(str, unknown))[:3]} ignored")

    cells, tests, magics, edited, missing = [], [], False, [], []

    def add_learner_cell(cell, template=None):
        nonlocal magics
        text = source_text(cell)
        new = copy.deepcopy(template) if template is not None else (
            nbformat.v4.new_code_cell() if cell.get("cell_type") == "code" else nbformat.v4.new_markdown_cell())
        if template is None:
            new["id"] = f"learner-{len(cells)}"
        if new.cell_type == "code":
            text, changed = neutralise_magics(text)
            magics = magics or changed
            new.outputs, new.execution_count = [], None
        new.source = text
        cells.append(new)

    for cell in after.get(-1, []):
        add_learner_cell(cell)
    for position, release_cell in enumerate(release.cells):
        meta = nbgrader_meta(release_cell)
        learner = matched.get(position)
        if meta.get("solution"):
            if learner is None:
                missing.append(meta.get("grade_id"))
                cells.append(copy.deepcopy(release_cell))
            else:
                add_learner_cell(learner, template=release_cell)
        else:
            cell = copy.deepcopy(release_cell)
            if meta.get("grade"):
                cell.source = source_text(source_tests.get(meta.get("grade_id"), release_cell))
            if learner is not None and source_text(learner) != source_text(release_cell):
                edited.append(meta.get("grade_id") or cell.get("id"))
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
        if meta.get("grade") and release_cell.cell_type == "code" and not meta.get("solution"):
            tests.append(len(cells) - 1)
        for extra in after.get(position, []):
            add_learner_cell(extra)
    if missing:
        flags.append(f"answer cells missing: {', '.join(map(str, missing))}")
    if edited:
        flags.append(f"instructor cells edited (restored): {', '.join(map(str, edited[:4]))}")
    if magics:
        flags.append("shell escapes/magics removed")
    extra = sum(len(v) for v in after.values())
    if extra:
        flags.append(f"{extra} cells added by the learner")
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(release.metadata))
    notebook.nbformat_minor = max(release.get("nbformat_minor", 5), 5)
    if not release_ids:
        flags.append("release notebook has no cell ids")
    return notebook, tuple(tests), flags


def utc_timestamp(path):
    moment = datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f %Z")


def take_in(student, folder, sources, releases, max_bytes=MAX_NOTEBOOK_BYTES):
    """Pre-check one student's submission folder against the assignment's notebooks."""
    folder = Path(folder)
    files = find_notebook_files(folder, sorted(sources))
    intake = SubmissionIntake(student=student, folder=folder, notebooks=[], timestamp=None)
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p not in set(files.values()))
    if "timestamp.txt" in others:
        intake.flags.append("timestamp.txt ignored")
        others.remove("timestamp.txt")
    if others:
        intake.flags.append(f"files not used: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}")
    times = []  # regular files only: a link's target is not the learner's
    for name in sorted(sources):
        path = files[name]
        if path is None:
            intake.notebooks.append(NotebookIntake(name, None, None, refused="notebook missing"))
            continue
        notebook, refused = read_submitted(path, max_bytes)
        flags = [f"renamed: {path.name}"] if path.name != name else []
        if notebook is None:
            intake.notebooks.append(NotebookIntake(name, path, None, refused=refused, flags=flags))
            continue
        times.append(path)
        rebuilt, tests, more = rebuild(notebook, sources[name], releases[name])
        intake.notebooks.append(NotebookIntake(name, path, rebuilt, test_cells=tests, flags=flags + more))
    if times:
        intake.timestamp = utc_timestamp(max(times, key=lambda p: p.stat().st_mtime))
    return intake
