"""A hostile class, graded for real: one ``bash scripts/grade`` over attackers and honest students.

Every file in ``tests/grading_attacks/`` is one attack on the grader (a threat class of the
grading issue): a docstring, ``THREAT``, ``EXPECT`` (the outcome for that student) and
``build(sub)``, which turns the reference answer of assignment 01 into the attack. All attacks
and three honest students (the reference, the untouched exercise, a known bug) are graded in
one batch, as an instructor would. Then, whatever the attacks did:

* the batch completed and every student has a status;
* the honest students got exactly the grades, cell by cell, that a batch of honest students
  alone gets;
* every file under ``submitted/`` is byte for byte as it was, and nothing else of the course
  changed except the grader's own outputs (gradebook, autograded/, feedback/, grades.csv);
* no process the learners started is left, no connection reached the machine;
* no feedback page quotes a hidden test or the reference solution;
* each attacker got the outcome its file expects.
"""

import copy
import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from course import EXERCISES, REPO, fill_in, known_bugs, make_course, nbgrader_meta, read_notebook, reference_answers

ASSIGNMENT = "01-scaled-dot-product-attention"
NOTEBOOK = "attention.ipynb"
ATTACKS = REPO / "tests" / "grading_attacks"
CELL_TIMEOUT = 8
TIME_LIMIT = 45
SANDBOX_UID = 60000 + os.getpid() % 5000  # this test's own sandbox user: its processes are this batch's
GRADER_OUTPUTS = ("gradebook.db", "autograded", "feedback", "grades.csv", "summary.json")
THREAT_CLASSES = {
    "writes to course files, the gradebook or other students",
    "reads of solutions, the gradebook or hidden tests",
    "bad, duplicate or missing nbgrader metadata",
    "shadow modules beside the notebook",
    "shell escapes",
    "process floods and daemons",
    "memory bombs",
    "disk filling",
    "huge outputs",
    "infinite loops, SIGINT-ignoring loops and many slow cells",
    "os._exit, segfault, SystemExit",
    "network access",
    "truncated, ancient, huge and non-UTF-8 files",
    "renamed notebooks",
    "forged timestamps",
    "detecting the grader",
    # what a learner's code can do to the tests that share its process (decided outside it)
    "tampering with what the tests use",
    "forbidden calls",
    "memorised visible inputs",
    "in-place changes to the tests' inputs",
    "outputs of the wrong shape that broadcast",
}


def load_attacks():
    attacks = {}
    for path in sorted(ATTACKS.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"attack_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        attacks[path.stem] = module
    return attacks


@dataclass
class Submission:
    """One learner's folder, built by an attack: starts as the reference answer."""

    course: Path
    folder: Path
    notebook: nbformat.NotebookNode
    host_address: str
    port: int
    assignment: str = ASSIGNMENT
    name: str = NOTEBOOK
    cell_timeout: int = CELL_TIMEOUT
    written: bool = False

    def use_exercise(self):
        self.notebook = copy.deepcopy(read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK))

    def wrong_answers(self):
        """Answers of the right shapes and no value right: zeros."""
        self.answer("stable_softmax", "def stable_softmax(x, dim=-1):\n    return torch.zeros_like(x)")
        self.answer("scaled_dot_product_attention",
                    "def scaled_dot_product_attention(q, k, v, attn_mask=None):\n"
                    "    return (torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype),\n"
                    "            torch.zeros(*q.shape[:-1], k.shape[-2], dtype=q.dtype))")

    @staticmethod
    def reference_answer(grade_id):
        return reference_answers(ASSIGNMENT, NOTEBOOK)[grade_id]

    def answer(self, grade_id, code):
        for cell in self.notebook.cells:
            if nbgrader_meta(cell).get("grade_id") == grade_id:
                cell.source = code

    def add_cell(self, code, after=None):
        cell = nbformat.v4.new_code_cell(code)
        cells = self.notebook.cells
        where = len(cells) if after is None else 1 + next(
            i for i, c in enumerate(cells) if nbgrader_meta(c).get("grade_id") == after)
        cells.insert(where, cell)

    def text(self):
        return nbformat.writes(self.notebook)

    def write_bytes(self, data, name=None):
        (self.folder / (name or self.name)).write_bytes(data)
        self.written = True

    def rename(self, name):
        self.write_bytes(self.text().encode(), name)

    def link_to(self, target):
        (self.folder / self.name).symlink_to(target)
        self.written = True

    def finish(self):
        if not self.written:
            self.write_bytes(self.text().encode())


def honest_submissions():
    exercise = read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK)
    answers = reference_answers(ASSIGNMENT, NOTEBOOK)
    bug = next(b for b in known_bugs(ASSIGNMENT) if b.name == "mask_after_softmax")
    return {
        "honest-reference": fill_in(exercise, answers),
        "honest-untouched": exercise,
        "honest-bug": fill_in(exercise, {**answers, **bug.cells}),
    }


def snapshot(course):
    """sha256 of every file and link target in the course, but the grader's own outputs."""
    files = {}
    for path in sorted(course.rglob("*")):
        relative = path.relative_to(course)
        if relative.parts[0] in GRADER_OUTPUTS or "__pycache__" in relative.parts:
            continue
        if path.is_symlink():
            files[str(relative)] = "link:" + os.readlink(path)
        elif path.is_file():
            files[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def own_code(path):
    """The cell sources of a learner's notebook ('' if it is not one)."""
    try:
        return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    except Exception:
        return ""


def sandbox_user_processes():
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            if uid == str(SANDBOX_UID):
                pids.add(int(entry.name))
    return pids


def groups_holding(pids):
    """The grader's cgroups that still hold any of these processes."""
    found = []
    for group in Path("/sys/fs/cgroup/pids/attnlab-grader").glob("*"):
        try:
            if set(map(int, (group / "cgroup.procs").read_text().split())) & pids:
                found.append(group)
        except OSError:  # removed meanwhile (another grader's)
            pass
    return found


def host_address():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class Listener:
    """A TCP server on every interface of this machine, counting who reaches it."""

    def __init__(self):
        self.server = socket.create_server(("0.0.0.0", 0))
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                connection, _ = self.server.accept()
                self.connections += 1
                connection.close()
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join()
        self.server.close()


def run_grade(course):
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "grade"), ASSIGNMENT, "--no-progress", "--require-sandbox",
         f"--cell-timeout={CELL_TIMEOUT}", f"--time-limit={TIME_LIMIT}", f"--sandbox-uid={SANDBOX_UID}",
         "--summary-json", "summary.json"],
        cwd=course, capture_output=True, text=True, timeout=1800)
    summary = {r["student"]: r for r in json.loads((course / "summary.json").read_text())}
    return result, summary


def gradebook_cells(course, students):
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        found = {}
        for student in students:
            submission = gb.find_submission(ASSIGNMENT, student)
            found[student] = {
                "timestamp": str(submission.timestamp),
                "cells": {g.name: (g.auto_score, g.manual_score, g.max_score)
                          for nb in submission.notebooks for g in nb.grades},
            }
        return found


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory):
    attacks = load_attacks()
    honest = honest_submissions()
    listener = Listener()
    address = host_address()
    try:
        clean = make_course(tmp_path_factory.mktemp("clean"), [ASSIGNMENT])
        for student, nb in honest.items():
            (clean / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
            nbformat.write(nb, clean / "submitted" / student / ASSIGNMENT / NOTEBOOK)
        clean_result, _ = run_grade(clean)
        assert clean_result.returncode == 0, clean_result.stderr[-3000:]

        course = make_course(tmp_path_factory.mktemp("hostile"), [ASSIGNMENT])
        (course / "exercises").mkdir()
        (course / "exercises" / "released.txt").write_text("a released file the shell escapes try to delete\n")
        for student, nb in honest.items():
            (course / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
            nbformat.write(nb, course / "submitted" / student / ASSIGNMENT / NOTEBOOK)
        reference = honest["honest-reference"]
        for name, attack in attacks.items():
            folder = course / "submitted" / f"attack-{name}" / ASSIGNMENT
            folder.mkdir(parents=True)
            sub = Submission(course, folder, copy.deepcopy(reference), address, listener.port)
            attack.build(sub)
            sub.finish()
        before = snapshot(course)
        processes_before = sandbox_user_processes()
        result, summary = run_grade(course)
        after = snapshot(course)
        leftover = sandbox_user_processes() - processes_before
    finally:
        listener.close()
    cgroups = groups_holding(leftover)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        max_score = gb.find_assignment(ASSIGNMENT).max_score
    return {
        "attacks": attacks, "course": course, "clean": clean, "result": result, "summary": summary,
        "before": before, "after": after, "leftover": leftover, "cgroups": cgroups,
        "connections": listener.connections, "max_score": max_score, "honest": list(honest),
    }


def test_the_batch_completes_and_every_student_has_a_status(hostile_class):
    result, summary = hostile_class["result"], hostile_class["summary"]
    assert result.returncode == 0, result.stderr[-3000:]
    expected = set(hostile_class["honest"]) | {f"attack-{name}" for name in hostile_class["attacks"]}
    assert set(summary) == expected
    assert not [s for s, r in summary.items() if r["status"] == "error"], {
        s: r["reasons"] for s, r in summary.items() if r["status"] == "error"}


def test_honest_students_get_exactly_their_grades(hostile_class):
    honest = hostile_class["honest"]
    graded = gradebook_cells(hostile_class["course"], honest)
    alone = gradebook_cells(hostile_class["clean"], honest)
    for student in honest:
        assert graded[student]["cells"] == alone[student]["cells"], student
    summary = hostile_class["summary"]
    assert summary["honest-reference"]["score"] == hostile_class["max_score"]
    assert summary["honest-untouched"]["score"] == 0
    assert 0 < summary["honest-bug"]["score"] < hostile_class["max_score"]


def test_submissions_and_the_course_are_unchanged(hostile_class):
    before, after = hostile_class["before"], hostile_class["after"]
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the batch changed files it does not own: {changed[:10]}"
    assert (hostile_class["course"] / "exercises" / "released.txt").exists()


def test_nothing_the_learners_started_is_left(hostile_class):
    assert not hostile_class["leftover"], f"processes of the sandbox user still run: {hostile_class['leftover']}"
    assert not hostile_class["cgroups"], f"cgroups left behind: {hostile_class['cgroups']}"


def test_no_connection_reached_the_machine(hostile_class):
    assert hostile_class["connections"] == 0


def test_no_feedback_quotes_hidden_tests_or_the_solution(hostile_class):
    course = hostile_class["course"]
    source = read_notebook(course / "solutions" / ASSIGNMENT / NOTEBOOK)
    hidden, solution = set(), set()
    for cell in source.cells:
        for begin, end, lines in (("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS", hidden),
                                  ("### BEGIN SOLUTION", "### END SOLUTION", solution)):
            text = cell.source
            while begin in text:
                block, text = text.split(begin, 1)[1].split(end, 1)
                lines.update(line.strip() for line in block.splitlines() if len(line.strip()) >= 20)
    public = {line.strip() for cell in read_notebook(EXERCISES / ASSIGNMENT / NOTEBOOK).cells
              for line in cell.source.splitlines()}
    hidden -= public  # a hidden line that the released notebook shows too is no secret
    assert hidden and solution
    for page in (course / "feedback").rglob("*.html"):
        html = page.read_text()
        student = page.parent.parent.name
        submitted = "".join(own_code(p) for p in (course / "submitted" / student).rglob("*.ipynb"))
        secret = hidden | {line for line in solution if line not in submitted}  # their own code may show
        assert "BEGIN HIDDEN TESTS" not in html, page
        leaked = [line for line in secret if line in html]
        assert not leaked, f"{page} quotes: {leaked[:3]}"


@pytest.mark.parametrize("name", sorted(p.stem for p in ATTACKS.glob("*.py")))
def test_attack_outcome(hostile_class, name):
    attack = hostile_class["attacks"][name]
    student = f"attack-{name}"
    row = hostile_class["summary"][student]
    expect, maximum = attack.EXPECT, hostile_class["max_score"]
    details = json.dumps(row, indent=1)[:3000]
    score = expect.get("score")
    if score == "full":
        assert row["score"] == maximum, details
    elif score == "partial":
        assert 0 < row["score"] < maximum, details
    elif score is not None:
        assert row["score"] == score, details
    if "status" in expect:
        assert expect["status"] in row["status"], details
    if "flags" in expect:
        assert any(expect["flags"] in flag for flag in row["flags"]), details
    if "reason" in expect:
        assert any(expect["reason"] in reason for reason in row["reasons"]), details
    if "feedback_below_bytes" in expect:
        pages = list((hostile_class["course"] / "feedback" / student).rglob("*.html"))
        assert pages and all(p.stat().st_size < expect["feedback_below_bytes"] for p in pages)
    if "timestamp_not" in expect:
        stamp = gradebook_cells(hostile_class["course"], [student])[student]["timestamp"]
        assert expect["timestamp_not"] not in stamp


def test_the_corpus_covers_every_threat_class():
    threats = {attack.THREAT for attack in load_attacks().values()}
    assert threats == THREAT_CLASSES, (threats ^ THREAT_CLASSES)
