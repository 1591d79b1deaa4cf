"""Helpers for the notebook and grading tests: the course's assignments, their
known-bug variants, and nbgrader run for real in a temporary course directory.

A known-bug variant is a small file ``tests/known_bugs/<assignment>/<name>.py``::

    \"\"\"One sentence: what the mistake is.\"\"\"
    # feedback: words the grader's feedback must contain   (optional, repeatable)
    # cell: <grade_id of a solution cell>
    <the learner's code for that cell>
    # cell: <another grade_id>                            (optional, more cells)
    ...

The grading round trip submits each variant as a student and checks that it
loses points (and that the feedback names the mistake where a line asks so).
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"
KNOWN_BUGS = REPO / "tests" / "known_bugs"
ASSIGNMENTS = sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and re.match(r"\d\d-", p.name))
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


@dataclass(frozen=True)
class KnownBug:
    name: str
    description: str
    feedback: tuple[str, ...]
    cells: dict  # grade_id -> source of the learner's cell


def notebook_names(assignment: str) -> list[str]:
    return sorted(p.name for p in (SOLUTIONS / assignment).glob("*.ipynb"))


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def known_bugs(assignment: str) -> list[KnownBug]:
    bugs = []
    for path in sorted((KNOWN_BUGS / assignment).glob("*.py")):
        text = path.read_text()
        description = ast.get_docstring(ast.parse(text.split("\n# cell:")[0])) or ""
        feedback = tuple(re.findall(r"^# feedback: (.+)$", text, flags=re.M))
        parts = re.split(r"^# cell: (\S+)\n", text, flags=re.M)
        cells = {parts[i]: parts[i + 1].rstrip("\n") for i in range(1, len(parts), 2)}
        if not description or not cells:
            raise ValueError(f"{path} needs a docstring and at least one '# cell: <grade_id>' section")
        bugs.append(KnownBug(path.stem, description, feedback, cells))
    return bugs


def solution_code(source_cell) -> str:
    """The reference answer of a solution cell, without nbgrader's markers."""
    lines = source_cell.source.splitlines()
    return "\n".join(line for line in lines if line.strip() not in SOLUTION_MARKERS)


def fill_in(exercise: nbformat.NotebookNode, answers: dict) -> nbformat.NotebookNode:
    """A copy of the student notebook with the given solution cells answered."""
    submission = nbformat.from_dict(json.loads(json.dumps(exercise)))
    for cell in submission.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return submission


def reference_answers(assignment: str, notebook: str) -> dict:
    source = read_notebook(SOLUTIONS / assignment / notebook)
    return {
        nbgrader_meta(cell)["grade_id"]: solution_code(cell)
        for cell in source.cells
        if nbgrader_meta(cell).get("solution")
    }


def run_nbgrader(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real nbgrader command line, with the venv's bin/ on PATH (for alembic)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        [os.path.join(bin_dir, "nbgrader"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_course(tmp: Path, assignments: list[str]) -> Path:
    """A fresh course directory using the repository's own nbgrader_config.py."""
    course = tmp / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    for assignment in assignments:
        shutil.copytree(SOLUTIONS / assignment, course / "solutions" / assignment)
    return course


def generate(course: Path, assignment: str) -> subprocess.CompletedProcess:
    return run_nbgrader("generate_assignment", assignment, "--force", cwd=course)
