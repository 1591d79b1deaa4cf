"""The learners' check command, `python -m attnlab.check`, run for real.

`nbgrader validate` exits 0 even when tests fail; the check command must not.
Each case copies a notebook to a folder outside the repository (as a learner's
`~/my-attention/` is) and runs the command in a subprocess, kernel and all.
"""

import subprocess
import sys

import nbformat

from course import EXERCISES, SOLUTIONS, fill_in, nbgrader_meta, read_notebook, reference_answers

ASSIGNMENT = "01-scaled-dot-product-attention"  # the quickest notebook to run
NOTEBOOK = "attention.ipynb"


def run_check(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "attnlab.check", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def learner_copy(tmp_path, notebook):
    """Write ``notebook`` where a learner would keep it; return its path."""
    folder = tmp_path / "my-attention" / ASSIGNMENT
    folder.mkdir(parents=True)
    path = folder / NOTEBOOK
    nbformat.write(notebook, path)
    return path


def test_reference_solution_exits_0(tmp_path):
    path = learner_copy(tmp_path, read_notebook(SOLUTIONS / ASSIGNMENT / NOTEBOOK))
    result = run_check(path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "all visible tests pass" in result.stdout


def test_untouched_exercise_exits_1_and_fails_every_test_cell(tmp_path):
    exercise = read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK)
    n_tests = sum(1 for cell in exercise.cells if nbgrader_meta(cell).get("grade") and cell.cell_type == "code")
    path = learner_copy(tmp_path, exercise)
    result = run_check(path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("FAIL") == n_tests, result.stdout
    assert "not written yet" in result.stdout
    assert f"0 of {n_tests} test cells pass" in result.stdout


def test_exercise_with_one_function_missing_exits_1_naming_the_failures(tmp_path):
    answers = reference_answers(ASSIGNMENT, NOTEBOOK)
    last = list(answers)[-1]
    answers[last] = "raise NotImplementedError()"  # every answer written but the last
    exercise = read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK)
    path = learner_copy(tmp_path, fill_in(exercise, answers))
    result = run_check(path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS" in result.stdout and "FAIL" in result.stdout, result.stdout


def test_endless_loop_is_stopped_and_exits_1(tmp_path):
    answers = reference_answers(ASSIGNMENT, NOTEBOOK)
    first = list(answers)[0]
    answers[first] = "while True:\n    pass"
    path = learner_copy(tmp_path, fill_in(read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK), answers))
    result = run_check("--timeout", "30", path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"ERROR in your cell {first}: KeyboardInterrupt: stopped" in result.stdout, result.stdout


def test_edited_test_cell_exits_1(tmp_path):
    exercise = fill_in(read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK), reference_answers(ASSIGNMENT, NOTEBOOK))
    test_cell = next(cell for cell in exercise.cells if nbgrader_meta(cell).get("grade") and cell.cell_type == "code")
    test_cell.source = "pass  # the learner replaced the test"
    path = learner_copy(tmp_path, exercise)
    result = run_check(path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "were edited" in result.stdout, result.stdout


def test_files_that_cannot_be_checked_exit_2(tmp_path):
    not_a_notebook = tmp_path / "notes.ipynb"
    not_a_notebook.write_text("these are my notes, not JSON")
    no_tests = tmp_path / "scratch.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), no_tests)
    for path in (not_a_notebook, no_tests, tmp_path / "missing.ipynb"):
        result = run_check(path, cwd=tmp_path)
        assert result.returncode == 2, (path, result.stdout + result.stderr)
        assert "cannot check" in result.stdout
