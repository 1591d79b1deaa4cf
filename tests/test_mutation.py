"""The mutation-testing tool (tests/mutation.py, scripts/mutation-test) on a tiny assignment.

A one-function notebook is mutated and graded for real: mutants that a test
notices are killed, mutants that loop forever are stopped by the time limit, a
weaker test lets mutants survive (and the report shows them as diffs), a listed
equivalent mutant is left out of the kill rate, and a worker that dies or hangs
inside C code is replaced without losing the next job.
"""

import nbformat
import pytest

from mutation import Mutant, Worker, load_cells, make_mutants, run_assignment, write_report

SOLUTION = '''def count_up(n):
    """Count from 0 to n, one step at a time."""
    ### BEGIN SOLUTION
    i = 0
    while i < n:
        i += 1
    return i
    ### END SOLUTION
'''


def make_assignment(root, name, test_source):
    def cell(source, grade_id, **flags):
        c = nbformat.v4.new_code_cell(source)
        c.metadata["nbgrader"] = {"grade_id": grade_id, "grade": False, "solution": False, "locked": True,
                                  "schema_version": 3, **flags}
        return c

    nb = nbformat.v4.new_notebook()
    nb.cells = [cell("import math", "imports"), cell(SOLUTION, "count_up", solution=True, locked=False),
                cell(test_source, "test_count_up", grade=True, points=1)]
    (root / "solutions" / name).mkdir(parents=True)
    nbformat.write(nb, root / "solutions" / name / "tiny.ipynb")


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


def test_mutants_are_generic_and_stay_inside_the_answer(tmp_path):
    make_assignment(tmp_path, "99-tiny", "assert count_up(3) == 3")
    notebook = tmp_path / "solutions" / "99-tiny" / "tiny.ipynb"
    mutants = make_mutants(notebook, load_cells(notebook))
    operators = {m.operator for m in mutants}
    assert {"Lt -> LtE", "Add= -> Sub=", "constant 0 -> 1", "negate condition", "drop statement Return"} <= operators
    assert all("def count_up(n):" in m.source and "Count from 0 to n" in m.source for m in mutants)
    assert len({m.id for m in mutants}) == len(mutants), "mutant ids must be unique"
    again = make_mutants(notebook, load_cells(notebook))
    assert [m.id for m in again] == [m.id for m in mutants], "mutant ids must be stable"


def test_strong_tests_kill_everything_and_loops_are_stopped(tmp_path, worker):
    make_assignment(tmp_path, "99-tiny", "assert count_up(3) == 3\nassert count_up(0) == 0\nassert count_up(-2) == 0")
    result = run_assignment("99-tiny", [worker], solutions=tmp_path / "solutions",
                            equivalents_dir=tmp_path / "none", time_limit=0.5, log=lambda *_: None)
    assert result.count("survived") == 0, [o.mutant.operator for o in result.outcomes if o.status == "survived"]
    assert result.count("timeout") >= 1, "i -= 1 loops forever: it must be stopped, not hang the run"
    assert result.score == 100.0


def test_weak_tests_leave_survivors_in_the_report_and_equivalents_are_not_counted(tmp_path, worker):
    make_assignment(tmp_path, "99-tiny", "assert count_up(3) >= 3")
    result = run_assignment("99-tiny", [worker], solutions=tmp_path / "solutions",
                            equivalents_dir=tmp_path / "none", time_limit=0.5, log=lambda *_: None)
    survivors = [o.mutant for o in result.outcomes if o.status == "survived"]
    assert survivors and result.score < 100.0
    report = write_report(result, reports=tmp_path / "reports").read_text()
    assert survivors[0].id in report and "```diff" in report
    (tmp_path / "eq").mkdir()
    (tmp_path / "eq" / "99-tiny.txt").write_text(f"# comment\n{survivors[0].id}  pretend it is equivalent\nabc123  gone\n")
    again = run_assignment("99-tiny", [worker], solutions=tmp_path / "solutions",
                           equivalents_dir=tmp_path / "eq", time_limit=0.5, log=lambda *_: None)
    assert again.count("equivalent") == 1 and again.count("survived") == len(survivors) - 1
    assert again.stale_equivalents == ["abc123"]
    assert again.score > result.score


def test_a_crashed_or_hung_worker_is_replaced(worker):
    crash = [("crash", "test", "import os\nos._exit(3)")]
    assert worker.run(crash, time_limit=5)["status"] == "crashed"
    worker.grace_seconds = 1
    try:  # SIGALRM blocked: the worker's own alarm cannot fire, so the parent must kill it
        hang = [("hang", "test", "import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
                 "time.sleep(60)")]
        assert worker.run(hang, time_limit=0.5)["status"] == "timeout"
    finally:
        worker.grace_seconds = Worker.grace_seconds
    fine = worker.run([("ok", "test", "assert 1 + 1 == 2")], time_limit=5)
    assert fine["status"] == "survived", fine


def test_mutant_diff_shows_only_the_change():
    mutant = Mutant("nb", "cell", "Lt -> LtE", 3, "a = 1\nif a < 2:\n    b = 3\n", "a = 1\nif a <= 2:\n    b = 3\n", "")
    assert mutant.diff().splitlines()[2:4] == ["-if a < 2:", "+if a <= 2:"]
