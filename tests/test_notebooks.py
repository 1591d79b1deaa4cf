"""Checks on the assignment notebooks themselves.

The solution notebooks are also *run* by nbval: the test command passes
``--nbval solutions`` to pytest (see scripts/test).
"""

import json

import pytest

from course import (
    ASSIGNMENTS,
    EXERCISES,
    SOLUTIONS,
    generate,
    known_bugs,
    make_course,
    nbgrader_meta,
    notebook_names,
    read_notebook,
    run_nbgrader,
)


def test_every_assignment_has_a_chapter_and_an_exercise():
    assert ASSIGNMENTS, "no assignments found in solutions/"
    book = [p.stem for p in (SOLUTIONS.parent / "book").glob("[0-9][0-9]-*")]
    for assignment in ASSIGNMENTS:
        assert assignment in book, f"solutions/{assignment} has no chapter book/{assignment}.md"
        assert (EXERCISES / assignment).is_dir(), f"exercises/{assignment} was never generated"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_notebooks_are_well_formed(assignment):
    grade_ids = []
    for name in notebook_names(assignment):
        nb = read_notebook(SOLUTIONS / assignment / name)
        assert all(cell.get("id") for cell in nb.cells), f"{name}: every cell needs a stable id"
        for cell in nb.cells:
            meta = nbgrader_meta(cell)
            assert not cell.get("outputs"), f"{name}: clear outputs of cell {cell.id} before committing"
            if meta:
                grade_ids.append(meta["grade_id"])
            if meta.get("grade"):
                assert meta.get("points", 0) > 0, f"{name}: graded cell {meta['grade_id']} has no points"
    duplicates = {g for g in grade_ids if grade_ids.count(g) > 1}
    assert not duplicates, f"duplicate grade_id {duplicates} would abort a whole autograde batch"
    for bug in known_bugs(assignment):
        unknown = set(bug.cells) - set(grade_ids)
        assert not unknown, f"known bug {bug.name} names cells {unknown} that {assignment} lacks"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercise_is_in_sync_with_its_source(assignment, tmp_path):
    course = make_course(tmp_path, [assignment])
    result = generate(course, assignment)
    assert result.returncode == 0, result.stderr
    for name in notebook_names(assignment):
        fresh = json.loads((course / "exercises" / assignment / name).read_text())
        committed = json.loads((EXERCISES / assignment / name).read_text())
        assert fresh == committed, (
            f"exercises/{assignment}/{name} is stale: run `bash scripts/generate-exercises {assignment}`"
        )
    generated = sorted(p.name for p in (course / "exercises" / assignment).iterdir())
    committed = sorted(p.name for p in (EXERCISES / assignment).iterdir())
    assert generated == committed, f"exercises/{assignment} holds {committed}, generation gives {generated}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_exercise_fails_every_test(assignment):
    for name in notebook_names(assignment):
        result = run_nbgrader("validate", "--invert", str(EXERCISES / assignment / name), cwd=EXERCISES.parent)
        assert "Success! The notebook does not pass any tests." in result.stdout, (
            f"exercises/{assignment}/{name}: a test cell passes with no code written:\n{result.stdout[-3000:]}"
        )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_validates(assignment):
    for name in notebook_names(assignment):
        result = run_nbgrader("validate", str(SOLUTIONS / assignment / name), cwd=SOLUTIONS.parent)
        assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_graded_cell_has_an_authoritative_check(assignment):
    """scripts/grade decides points with solutions/NN-topic/grading.py: one part per graded cell."""
    from attnlab_grader.authority import Authority

    for name in notebook_names(assignment):
        authority = Authority.load(SOLUTIONS / assignment / name, seed=1234)
        assert authority is not None, f"solutions/{assignment}/grading.py is missing"
        graded = {nbgrader_meta(c)["grade_id"] for c in read_notebook(SOLUTIONS / assignment / name).cells
                  if nbgrader_meta(c).get("grade")}
        checked = {part.grade_id for part in authority.parts}
        assert graded <= checked, f"{name}: graded cells without a part in grading.py: {sorted(graded - checked)}"
        assert all(part.cases for part in authority.parts), "a part with no cases decides nothing"
