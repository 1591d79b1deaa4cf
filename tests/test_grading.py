"""The instructor's round trip, for real: ``bash scripts/grade`` over a class of submissions.

For every assignment a temporary course directory (with the repository's own
nbgrader_config.py) receives one batch of submissions:

* ``reference``      the exercise answered with the reference solution: full marks
* ``untouched``      the exercise as released: 0
* ``bug-<name>``     the reference with one known mistake (tests/known_bugs/...): loses points
* ``tampered``       the untouched exercise whose tests were replaced by ``pass``: still 0
* ``deleted-test``   the reference with a test cell deleted: the cell comes back, full marks
* ``malformed``      a notebook that is not even JSON: refused alone, not lost, scores 0

All of them are graded by one ``bash scripts/grade`` call, as an instructor would: each in its
own sandbox, then nbgrader's gradebook, feedback and export. A report of which test cells each
known bug fails is written to ``_build/grading/<assignment>.md``.
"""

import csv
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
from nbgrader.api import Gradebook

from course import (
    ASSIGNMENTS,
    EXERCISES,
    REPO,
    fill_in,
    known_bugs,
    make_course,
    nbgrader_meta,
    notebook_names,
    read_notebook,
    reference_answers,
)

LOOP_TIMEOUT = 20  # seconds a looping cell may run here (the course default is 60); generous for a loaded CI


def build_submissions(assignment):
    """student id -> {notebook name: notebook node or raw text}."""
    reference, untouched, tampered, deleted = {}, {}, {}, {}
    for name in notebook_names(assignment):
        exercise = read_notebook(EXERCISES / assignment / name)
        reference[name] = fill_in(exercise, reference_answers(assignment, name))
        untouched[name] = exercise
        tests = {nbgrader_meta(c)["grade_id"]: "pass" for c in exercise.cells if nbgrader_meta(c).get("grade")}
        tampered[name] = fill_in(exercise, tests)
        deleted[name] = nbformat.from_dict(dict(reference[name]))
        first_test = next(i for i, c in enumerate(deleted[name].cells) if nbgrader_meta(c).get("grade"))
        deleted[name].cells = [c for i, c in enumerate(deleted[name].cells) if i != first_test]
    submissions = {"reference": reference, "untouched": untouched, "tampered": tampered, "deleted-test": deleted}
    for bug in known_bugs(assignment):
        submission = {}
        for name in notebook_names(assignment):
            answers = {**reference_answers(assignment, name), **bug.cells}
            submission[name] = fill_in(read_notebook(EXERCISES / assignment / name), answers)
        submissions[f"bug-{bug.name}"] = submission
    submissions["malformed"] = {name: '{"cells": [ this is not json' for name in notebook_names(assignment)}
    return submissions


def grade(course, assignment, *options, timeout=1800):
    """``bash scripts/grade`` run from the course root, as the README tells instructors."""
    summary = course / f"summary-{assignment}.json"
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "grade"), assignment, "--no-progress", "--summary-json", str(summary),
         *options], cwd=course, capture_output=True, text=True, timeout=timeout)
    statuses = {r["student"]: r for r in json.loads(summary.read_text())} if summary.exists() else {}
    return result, statuses


def grade_batch(assignment, tmp):
    """Submit every variant, grade the class with scripts/grade; return what happened."""
    course = make_course(tmp, [assignment])
    submissions = build_submissions(assignment)
    for student, notebooks in submissions.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        for name, nb in notebooks.items():
            text = nb if isinstance(nb, str) else nbformat.writes(nb)
            (folder / name).write_text(text)
    autograde, summary = grade(course, assignment, f"--cell-timeout={LOOP_TIMEOUT}")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        max_score = gb.find_assignment(assignment).max_score
        scores, lost = {}, {}
        for student in submissions:
            try:
                submission = gb.find_submission(assignment, student)
            except Exception:  # never autograded (the malformed one)
                continue
            scores[student] = submission.score
            lost[student] = sorted(
                grade.name for nb in submission.notebooks for grade in nb.grades if grade.score < grade.max_score
            )
    return {
        "assignment": assignment,
        "course": course,
        "submissions": submissions,
        "autograde": autograde,
        "summary": summary,
        "max_score": max_score,
        "scores": scores,
        "lost": lost,
    }


@pytest.fixture(scope="session")
def grading_runs(request, tmp_path_factory):
    """Grade the batches of every selected assignment, GRADING_JOBS (default 1) at a time.

    Each batch has its own course directory and gradebook, so batches run side by side
    (the kernels they start are separate processes); one failing batch fails only its tests.
    """
    needed = sorted({
        item.callspec.params["graded"]
        for item in request.session.items
        if hasattr(item, "callspec") and "graded" in item.callspec.params
    })
    jobs = int(os.environ.get("GRADING_JOBS", "1"))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {a: pool.submit(grade_batch, a, tmp_path_factory.mktemp(a)) for a in needed}
        return {a: future.exception() or future.result() for a, future in futures.items()}


@pytest.fixture(scope="module", params=ASSIGNMENTS)
def graded(request, grading_runs):
    run = grading_runs[request.param]
    if isinstance(run, BaseException):
        raise run
    return run


def test_reference_scores_full_marks(graded):
    assert graded["autograde"].returncode == 0, graded["autograde"].stderr[-3000:]
    assert graded["max_score"] > 0
    assert graded["scores"]["reference"] == graded["max_score"], graded["autograde"].stdout[-3000:]


def test_untouched_exercise_scores_zero(graded):
    assert graded["scores"]["untouched"] == 0


def test_tampered_tests_are_restored(graded):
    assert graded["scores"]["tampered"] == 0, "a learner replaced the tests with `pass` and got points"


def test_deleted_test_cell_is_restored(graded):
    assert graded["scores"]["deleted-test"] == graded["max_score"]
    course, assignment = graded["course"], graded["assignment"]
    for name in notebook_names(assignment):
        nb = read_notebook(course / "autograded" / "deleted-test" / assignment / name)
        graded_cells = [c for c in nb.cells if nbgrader_meta(c).get("grade")]
        source_cells = [c for c in read_notebook(course / "solutions" / assignment / name).cells
                        if nbgrader_meta(c).get("grade")]
        assert len(graded_cells) == len(source_cells)


def test_every_known_bug_loses_points(graded):
    assignment = graded["assignment"]
    bugs = known_bugs(assignment)
    assert bugs, f"tests/known_bugs/{assignment}/ is empty: every chapter's classic mistakes must be caught"
    report = [f"# {assignment}: which tests catch which known bug", "",
              f"max score {graded['max_score']:g}; reference {graded['scores']['reference']:g}", "",
              "| known bug | score | test cells that lose points |", "|---|---|---|"]
    escaped = []
    for bug in bugs:
        student = f"bug-{bug.name}"
        score = graded["scores"][student]
        report.append(f"| {bug.name}: {bug.description} | {score:g} | {', '.join(graded['lost'][student])} |")
        if score >= graded["max_score"]:
            escaped.append(bug.name)
    out = REPO / "_build" / "grading" / f"{assignment}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    assert not escaped, f"known bugs that kept full marks: {escaped}"
    caught = {cell for bug in bugs for cell in graded["lost"][f"bug-{bug.name}"]}
    idle = sorted(set(graded["lost"]["untouched"]) - caught)
    assert not idle, f"test cells that no known bug fails prove nothing yet: {idle}"


def test_feedback_names_the_mistake(graded):
    course, assignment = graded["course"], graded["assignment"]
    missing = []
    for bug in known_bugs(assignment):
        if not bug.feedback:
            continue
        html = "".join(p.read_text() for p in (course / "feedback" / f"bug-{bug.name}" / assignment).glob("*.html"))
        missing += [f"{bug.name}: {phrase!r}" for phrase in bug.feedback if phrase not in html]
    assert not missing, "feedback does not name the mistake:\n" + "\n".join(missing)


def test_feedback_hides_hidden_tests(graded):
    course, assignment = graded["course"], graded["assignment"]
    for student in graded["scores"]:
        if student == "malformed":
            continue
        pages = list((course / "feedback" / student / assignment).glob("*.html"))
        assert pages, f"no feedback for {student}: {graded['summary'].get(student)}"
        for page in pages:
            assert "BEGIN HIDDEN TESTS" not in page.read_text(), f"{page} shows hidden tests"
            hidden = "### BEGIN HIDDEN TESTS"
            source = (course / "solutions" / assignment / page.with_suffix(".ipynb").name).read_text()
            first_hidden_line = source.split(hidden, 1)[1].split("\\n")[1].strip()
            assert first_hidden_line and first_hidden_line not in page.read_text(), (
                f"{page} shows hidden test code: {first_hidden_line!r}")


def test_malformed_submission_is_not_lost_and_spoils_nothing(graded):
    course, assignment = graded["course"], graded["assignment"]
    others = [s for s in graded["submissions"] if s != "malformed"]
    assert set(others) <= set(graded["scores"]), "every well-formed submission must be graded"
    assert graded["scores"].get("malformed", 0) == 0
    assert graded["summary"]["malformed"]["status"] == "refused"
    assert "not a notebook" in " ".join(graded["summary"]["malformed"]["reasons"])
    for name in notebook_names(assignment):
        kept = course / "submitted" / "malformed" / assignment / name
        assert kept.read_text() == graded["submissions"]["malformed"][name], "the submission was altered"
    with open(course / "grades.csv") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f) if row["assignment"] == assignment}
    assert set(rows) == set(graded["submissions"]), f"grades.csv lost students: {set(graded['submissions']) - set(rows)}"
    assert float(rows["malformed"]["score"]) == 0
    assert float(rows["reference"]["score"]) == graded["max_score"]


def test_a_loop_or_an_error_costs_only_its_part(graded):
    """A submission that raises or never ends still gets its other parts graded."""
    for student in ("bug-transpose_with_T", "bug-loops_on_large_logits"):
        if student in graded["scores"]:
            assert 0 < graded["scores"][student] < graded["max_score"], (student, graded["scores"][student])
