"""The grader's parts, one at a time: the pre-check, the feedback filters, the sandboxed run.

The whole batch is tested for real in test_grading.py (every assignment), test_grading_sandbox.py
(a hostile class) and test_grading_distributed.py (a Dask cluster).
"""

import copy
import json

import nbformat
import pytest

from attnlab_grader.execution import ExecutionJob, execute
from attnlab_grader.feedback import CapOutputBytes, HideTestTracebacks, ScrubHiddenTestSource
from attnlab_grader.intake import neutralise_magics, read_submitted, rebuild
from attnlab_grader.sandbox import sandbox_problem
from course import EXERCISES, SOLUTIONS, fill_in, nbgrader_meta, read_notebook, reference_answers

ASSIGNMENT = "01-scaled-dot-product-attention"
NOTEBOOK = "attention.ipynb"


@pytest.fixture
def notebooks():
    source = read_notebook(SOLUTIONS / ASSIGNMENT / NOTEBOOK)
    release = read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK)
    answered = fill_in(release, reference_answers(ASSIGNMENT, NOTEBOOK))
    return source, release, answered


def grade_ids(notebook):
    return [nbgrader_meta(c).get("grade_id") for c in notebook.cells]


# ------------------------------------------------------------------- pre-check
def test_rebuild_keeps_answers_and_restores_every_instructor_cell(notebooks):
    source, release, answered = notebooks
    tampered = copy.deepcopy(answered)
    for cell in tampered.cells:
        meta = nbgrader_meta(cell)
        if meta.get("grade"):
            cell.source = "pass"
            meta.update(points=100, locked=False, schema_version=4)
    rebuilt, tests, flags = rebuild(tampered, source, release)
    assert grade_ids(rebuilt) == grade_ids(release)
    for ours, theirs in zip(rebuilt.cells, source.cells):
        if nbgrader_meta(theirs).get("solution"):
            assert ours.source == next(c.source for c in answered.cells if c.id == theirs.id)
        else:
            assert ours.source == theirs.source  # tests come back with their hidden part
            assert nbgrader_meta(ours).get("points") == nbgrader_meta(theirs).get("points")
    assert [rebuilt.cells[i].id for i in tests] == [c.id for c in source.cells if nbgrader_meta(c).get("grade")]
    assert any("edited" in f for f in flags)


def test_rebuild_matches_answers_by_cell_id_when_metadata_is_gone(notebooks):
    source, release, answered = notebooks
    stripped = copy.deepcopy(answered)
    for cell in stripped.cells:
        cell.metadata.pop("nbgrader", None)
    stripped.cells.insert(3, nbformat.v4.new_code_cell("helper = 1"))
    rebuilt, _, flags = rebuild(stripped, source, release)
    answers = reference_answers(ASSIGNMENT, NOTEBOOK)
    for cell in rebuilt.cells:
        if nbgrader_meta(cell).get("solution"):
            assert cell.source == answers[nbgrader_meta(cell)["grade_id"]]
    assert "helper = 1" in [c.source for c in rebuilt.cells]
    assert "1 cells added by the learner" in flags


def test_rebuild_restores_deleted_cells_and_stubs_missing_answers(notebooks):
    source, release, answered = notebooks
    gutted = copy.deepcopy(answered)
    gutted.cells = [c for c in gutted.cells if not nbgrader_meta(c).get("grade")][:3]
    rebuilt, _, flags = rebuild(gutted, source, release)
    assert grade_ids(rebuilt) == grade_ids(release)
    assert any("answer cells missing" in f for f in flags)
    assert "raise NotImplementedError()" in "".join(c.source for c in rebuilt.cells)


@pytest.mark.parametrize("line", ["!rm -rf /", "  %timeit f()", "files = !ls", "x = %env", "%%bash"])
def test_magics_and_shell_escapes_become_comments(line):
    text, changed = neutralise_magics(f"{line}\ny = 2")
    first, second = text.splitlines()
    assert changed and first.startswith("# [removed by the grader]")
    assert second == ("# [removed by the grader] y = 2" if line == "%%bash" else "y = 2")  # a cell magic takes the cell


def test_read_submitted_refuses_what_it_cannot_read(tmp_path, notebooks):
    cases = {"big": b"{" + b" " * 2000 + b"}", "utf16": "{}".encode("utf-16"), "json": b"[1, 2", "list": b"[]",
             "future": json.dumps({"nbformat": 5, "cells": []}).encode()}
    expected = {"big": "over the", "utf16": "not UTF-8", "json": "invalid JSON", "list": "not a notebook",
                "future": "newer"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        notebook, reason = read_submitted(tmp_path / name, max_bytes=1000)
        assert notebook is None and expected[name] in reason, (name, reason)
    (tmp_path / "old.ipynb").write_text(nbformat.writes(nbformat.convert(notebooks[2], 3), version=3))
    notebook, reason = read_submitted(tmp_path / "old.ipynb")
    assert reason is None and notebook.nbformat == 4
    (tmp_path / "link.ipynb").symlink_to(tmp_path / "old.ipynb")
    assert "link" in read_submitted(tmp_path / "link.ipynb")[1]


# ------------------------------------------------------------------- feedback
def feedback_notebook(hidden_line, printed):
    nb = nbformat.v4.new_notebook()
    answer = nbformat.v4.new_code_cell("def f(): ...", execution_count=1)
    test = nbformat.v4.new_code_cell(f"assert f() == 1\n### BEGIN HIDDEN TESTS\n{hidden_line}\n### END HIDDEN TESTS",
                                     execution_count=2)
    test.metadata["nbgrader"] = {"grade": True, "grade_id": "t", "points": 1}
    answer.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    nb.cells = [answer, test]
    return nb


def test_feedback_hides_test_frames_but_keeps_the_message():
    nb = feedback_notebook("x = 1", "")
    nb.cells[1].outputs = [nbformat.v4.new_output(
        "error", ename="AssertionError", evalue="f must return 1",
        traceback=["\x1b[31m-----\x1b[39m", "\x1b[36mCell\x1b[39m \x1b[32mIn[2]\x1b[39m, line 1\nsecret hidden line",
                   "\x1b[36mCell\x1b[39m \x1b[32mIn[1]\x1b[39m, line 1, in f\nlearner line", "AssertionError: f must return 1"])]
    out, _ = HideTestTracebacks().preprocess(nb, {})
    traceback = "\n".join(out.cells[1].outputs[0].traceback)
    assert "secret hidden line" not in traceback
    assert "learner line" in traceback
    assert traceback.endswith("AssertionError: f must return 1")


def test_feedback_scrubs_hidden_test_source_printed_by_learner_code():
    hidden = "assert torch.allclose(secret_expected_value, out)"
    nb = feedback_notebook(hidden, f"my output\n   {hidden}  \nmore\n### BEGIN HIDDEN TESTS\nshort\n")
    out, _ = ScrubHiddenTestSource().preprocess(nb, {})
    text = out.cells[0].outputs[0].text
    assert hidden not in text and "short" not in text and "BEGIN HIDDEN" not in text
    assert text.startswith("my output") and "more" in text


def test_feedback_keeps_messages_that_merely_mention_a_short_hidden_call():
    nb = feedback_notebook("stable_softmax(x)", "stable_softmax(x) has wrong values\n  stable_softmax(x)\n")
    out, _ = ScrubHiddenTestSource().preprocess(nb, {})
    lines = out.cells[0].outputs[0].text.splitlines()
    assert lines[0] == "stable_softmax(x) has wrong values" and "hidden tests was removed" in lines[1]


def test_feedback_caps_output_bytes_per_cell():
    nb = feedback_notebook("x = 1", "y" * 500_000)
    out, _ = CapOutputBytes(max_bytes=10_000).preprocess(nb, {})
    assert len(json.dumps(out.cells[0].outputs)) < 11_000
    assert "at most" in out.cells[0].outputs[-1].text


# ------------------------------------------------------------------- sandboxed run
needs_sandbox = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")


def run(*sources, **options):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    return execute(ExecutionJob(key="t", notebook_name="t.ipynb", notebook=json.loads(nbformat.writes(nb)),
                                test_cells=options.pop("test_cells", ()), **options))


def text_of(outputs):
    return "".join(o.get("text", "") + o.get("evalue", "") for o in outputs)


@needs_sandbox
def test_a_crash_costs_only_its_cell_and_later_cells_still_see_earlier_definitions():
    result = run("x = 41", "import os; os._exit(3)", "print(x + 1)", cell_timeout=30, total_timeout=120)
    assert result.status == "crashed" and result.restarts == 1
    assert "exited (status 3)" in text_of(result.outputs[1])
    assert text_of(result.outputs[2]) == "42\n"


@needs_sandbox
def test_a_cell_past_its_time_is_interrupted_and_grading_goes_on():
    result = run("import time", "time.sleep(100)", "print('next')", cell_timeout=2, total_timeout=120)
    assert result.outputs[1][0]["ename"] == "KeyboardInterrupt"
    assert "time limit per cell" in text_of(result.outputs[1])
    assert text_of(result.outputs[2]) == "next\n"


@needs_sandbox
def test_test_cells_that_never_ran_get_an_error():
    result = run("import time", "time.sleep(100)", "print('never')", cell_timeout=50, total_timeout=8)
    assert result.status == "time-limit"
    assert result.outputs[2][0]["ename"] == "GraderStopped"


@needs_sandbox
def test_the_sandbox_sees_only_its_own_notebook():
    result = run("import os, sys\nprint(sorted(os.listdir('.')), os.getuid(), os.environ.get('NBGRADER_EXECUTION'))\n"
                 "print(os.path.exists(sys.prefix), os.access(sys.prefix, os.W_OK))", cell_timeout=30)
    assert text_of(result.outputs[0]) == "['t.ipynb'] 65534 None\nTrue False\n"


# ------------------------------------------------------------------- forbidden names in the source
@pytest.mark.parametrize(("source", "found"), [
    ("out = F.scaled_dot_product_attention(q, k, v)", {"scaled_dot_product_attention"}),
    ("from torch.nn.functional import scaled_dot_product_attention", {"scaled_dot_product_attention"}),
    ("from attnlab import causal_mask", {"causal_mask"}),
    ("from attnlab.masks import causal_mask as mine", {"causal_mask"}),
    ("mask = getattr(attnlab, 'causal_mask')(3, 5)", {"causal_mask"}),
    ("def causal_mask(T, S=None):\n    return causal_mask_of(T, S)", set()),  # the learner's own function
    ("from mypackage import causal_mask", set()),
])
def test_forbidden_names_in_the_source(source, found):
    from attnlab_grader.authority import forbidden_in_source

    assert forbidden_in_source(source, {"causal_mask", "scaled_dot_product_attention"}) == found


def test_forbidden_names_are_found_in_attributes_imports_and_strings_but_not_bare_names():
    from attnlab_grader.authority import forbidden_in_source

    names = {"softmax", "generate_with_logits", "diagnose"}
    assert forbidden_in_source("y = F.softmax(x, -1)", names) == {"softmax"}
    assert forbidden_in_source("from torch.nn.functional import softmax", names) == {"softmax"}
    assert forbidden_in_source("from attnlab import generate_with_logits as g", names) == {"generate_with_logits"}
    assert forbidden_in_source("from attnlab.diagnose import greedy_with_mistake", names) == {"diagnose"}
    assert forbidden_in_source("import attnlab.diagnose as d", names) == {"diagnose"}
    assert forbidden_in_source("f = getattr(attnlab, 'generate_with_logits')", names) == {"generate_with_logits"}
    assert forbidden_in_source("def softmax(x):\n    return softmax(x)", names) == set()
    assert forbidden_in_source("from mylib import softmax\nimport numpy", names) == set()
