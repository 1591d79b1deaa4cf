"""Beyond one machine: ``scripts/grade --scheduler`` spreads a class over a Dask cluster.

A local two-worker cluster (two worker processes, as on two machines) grades the same small
class as a local run; the gradebooks must agree cell by cell.
"""

import subprocess

import nbformat
import pytest
from nbgrader.api import Gradebook

from course import EXERCISES, REPO, fill_in, known_bugs, make_course, read_notebook, reference_answers

ASSIGNMENT = "01-scaled-dot-product-attention"
NOTEBOOK = "attention.ipynb"


def small_class(course):
    exercise = read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK)
    answers = reference_answers(ASSIGNMENT, NOTEBOOK)
    students = {"reference": fill_in(exercise, answers), "untouched": exercise}
    for bug in known_bugs(ASSIGNMENT)[:3]:
        if "loop" not in bug.name:
            students[f"bug-{bug.name}"] = fill_in(exercise, {**answers, **bug.cells})
    for student, nb in students.items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK)
    return sorted(students)


def grades(course, students):
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s: {g.name: g.score for nb in gb.find_submission(ASSIGNMENT, s).notebooks for g in nb.grades}
                for s in students}


def grade(course, *options):
    result = subprocess.run(["bash", str(REPO / "scripts" / "grade"), ASSIGNMENT, "--no-progress", *options],
                            cwd=course, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as local:
        yield local.scheduler_address


def test_a_dask_cluster_grades_like_a_local_run(tmp_path, cluster):
    local = make_course(tmp_path / "local", [ASSIGNMENT])
    spread = make_course(tmp_path / "spread", [ASSIGNMENT])
    students = small_class(local)
    assert small_class(spread) == students
    grade(local, "--jobs=2")
    result = grade(spread, f"--scheduler={cluster}")
    assert grades(spread, students) == grades(local, students)
    assert all((spread / "feedback" / s / ASSIGNMENT / "attention.html").exists() for s in students)
    assert "reference" in result.stdout
