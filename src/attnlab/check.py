"""Check an assignment notebook and exit non-zero unless every visible test passes.

Usage (from a terminal, with the course's virtual environment)::

    python -m attnlab.check path/to/notebook.ipynb [more.ipynb ...]

It runs the notebook from top to bottom in a fresh kernel, exactly as
``nbgrader validate`` does (it *is* nbgrader's validator), then prints one line
per test cell and a total. Unlike ``nbgrader validate``, whose exit status is 0
even when tests fail, the exit status means something:

* 0: every test cell of every notebook passed;
* 1: a test cell failed or raised, a cell ran longer than 60 s, or a test cell
  was edited (the grader puts the original back, so an edited test proves
  nothing);
* 2: a notebook could not be checked (missing file, not a notebook, no test
  cells, the kernel died or timed out).

The grader runs more tests than the ones you see (hidden tests), so 0 here
means "ready to submit", not "full marks".
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

EXIT_PASSED, EXIT_FAILED, EXIT_UNCHECKABLE = 0, 1, 2

# A test cell that loops is interrupted after this many seconds (the grader's limit too).
CELL_TIMEOUT_S = 60


@dataclass(frozen=True)
class TestCellResult:
    """The verdict of one graded test cell.

    ``message`` is the last line of the cell's error (``"AssertionError: ..."``),
    empty when the cell passed.
    """

    grade_id: str
    points: float
    passed: bool
    message: str


def _error_message(cell) -> str:
    """The last line of a failed cell's error, or its stderr (which also fails a test)."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            name, value = output.get("ename", "Error"), output.get("evalue", "")
            if name == "NotImplementedError" and not value:
                value = "a function this test calls is not written yet"
            if name == "KeyboardInterrupt" and not value:
                value = "stopped: it ran longer than the time limit (an endless loop?)"
            return f"{name}: {value}".strip()
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            lines = [line for line in output.get("text", "").splitlines() if line.strip()]
            return "wrote to stderr: " + (lines[-1] if lines else "")
    return "partial credit: some checks failed"


def check_notebook(path: Path, timeout_s: int = CELL_TIMEOUT_S) -> tuple[list[TestCellResult], list[TestCellResult], int]:
    """Run one notebook with nbgrader's validator; return its test cells, answer cells, edits.

    Raises ``ValueError`` when the file is not an assignment notebook.

    Shapes:
        returns: (one TestCellResult per graded test cell in notebook order,
                  one per answer cell that raised (its error, e.g. a timeout),
                  number of locked or test cells whose contents were edited)
    """
    import nbformat
    from nbgrader import utils
    from nbgrader.validator import Validator
    from traitlets.config import Config

    if not path.is_file():
        raise ValueError(f"{path} does not exist (or is not a file)")
    try:
        original = nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types
        first_line = str(error).splitlines()[0][:80] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not a Jupyter notebook ({first_line})") from None
    if not any(utils.is_grade(cell) and cell.cell_type == "code" for cell in original.cells):
        raise ValueError(f"{path} has no graded test cells: is it an assignment notebook?")

    class KeepExecuted(Validator):
        """nbgrader's validator, keeping the executed notebook to read every verdict."""

        executed = None

        def _preprocess(self, nb):
            self.executed = super()._preprocess(nb)
            return self.executed

    config = Config()
    config.Execute.timeout = timeout_s
    validator = KeepExecuted(config=config)
    results = validator.validate(str(path))
    if results.get("type_changed"):
        return [], [], len(results["type_changed"])
    changed = len(results.get("changed", []))
    verdicts, broken_answers = [], []
    for cell in validator.executed.cells:
        if utils.is_solution(cell) and cell.cell_type == "code" and not utils.is_grade(cell):
            if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
                grade_id = cell.metadata.nbgrader.get("grade_id", cell.get("id", "?"))
                broken_answers.append(TestCellResult(grade_id, 0.0, False, _error_message(cell)))
        if not (utils.is_grade(cell) and cell.cell_type == "code"):
            continue
        score, max_score = utils.determine_grade(cell, validator.log)
        passed = score is not None and score >= max_score
        verdicts.append(
            TestCellResult(
                grade_id=cell.metadata.nbgrader["grade_id"],
                points=float(max_score or 0),
                passed=passed,
                message="" if passed else _error_message(cell),
            )
        )
    return verdicts, broken_answers, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attnlab.check",
        description="Run an assignment notebook's visible tests; exit 0 only if all pass.",
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="the .ipynb files to check")
    parser.add_argument(
        "--timeout", type=int, default=CELL_TIMEOUT_S, metavar="SECONDS",
        help=f"stop a cell that runs longer than this (default {CELL_TIMEOUT_S}, the grader's limit)",
    )
    args = parser.parse_args(argv)
    try:
        import nbgrader  # noqa: F401
        from nbclient.exceptions import CellTimeoutError
    except ImportError:
        print("attnlab.check needs nbgrader: install the course's requirements.txt", file=sys.stderr)
        return EXIT_UNCHECKABLE

    status = EXIT_PASSED
    for path in args.notebooks:
        print(f"== {path}")
        try:
            verdicts, broken_answers, changed = check_notebook(path, args.timeout)
        except ValueError as error:
            print(f"   cannot check: {error}")
            status = max(status, EXIT_UNCHECKABLE)
            continue
        except CellTimeoutError as error:  # the learner's code looped or ran too long
            preview = str(error).split("Here is a preview of the cell contents:")[-1].strip()
            print(f"   FAIL  a cell ran longer than {args.timeout} s and was stopped (an endless loop?):")
            print("         " + "\n         ".join(preview.splitlines()[:6]))
            status = max(status, EXIT_FAILED)
            continue
        except Exception as error:  # a dead kernel, a timeout, a broken install
            print(f"   cannot check: the notebook did not run: {type(error).__name__}: {error}")
            status = max(status, EXIT_UNCHECKABLE)
            continue
        for answer in broken_answers:
            print(f"   ERROR in your cell {answer.grade_id}: {answer.message}")
        for verdict in verdicts:
            mark = "PASS" if verdict.passed else "FAIL"
            detail = "" if verdict.passed else f"  {verdict.message}"
            print(f"   {mark}  {verdict.grade_id} ({verdict.points:g} points){detail}")
        if changed:
            print(
                f"   FAIL  {changed} test or read-only cell(s) were edited: the grader restores them, "
                f"so undo your edits (copy the cell back from the original exercise)"
            )
        n_passed = sum(v.passed for v in verdicts)
        print(f"   {n_passed} of {len(verdicts)} test cells pass")
        if changed or n_passed < len(verdicts):
            status = max(status, EXIT_FAILED)
    print("all visible tests pass" if status == EXIT_PASSED else f"exit status {status}: see above")
    return status


if __name__ == "__main__":
    sys.exit(main())
