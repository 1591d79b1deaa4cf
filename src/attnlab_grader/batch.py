"""Grade every submission of one assignment: pre-check, sandboxed runs in parallel, nbgrader.

One student's problem is that student's status, never the batch's: every step for a student
runs under its own ``try``, and a student whose file cannot be used still gets a row (score 0)
in the gradebook and in ``grades.csv``. Sandboxed runs go to a local pool of worker threads
(each drives one sandbox process) or, with a scheduler address, to a Dask cluster; nbgrader's
steps run here, one student at a time, as the runs come back.
"""

import concurrent.futures
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from attnlab_grader import nbgrader_steps
from attnlab_grader.authority import Authority
from attnlab_grader.execution import ExecutionJob, error_output, execute
from attnlab_grader.intake import take_in
from attnlab_grader.sandbox import SANDBOX_UID, Limits, sandbox_problem


@dataclass
class StudentResult:
    student: str
    status: str  # graded | refused | error, with the sandbox's status when it is not ok
    score: float = 0.0
    max_score: float = 0.0
    seconds: float = 0.0
    flags: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    cells: dict = field(default_factory=dict)  # grade_id -> [score, max]
    timings: dict = field(default_factory=dict)  # seconds per step: sandbox, autograde, checks, feedback


@dataclass(frozen=True)
class GradingOptions:
    jobs: int = 0  # parallel sandboxes here; 0 = one per CPU
    scheduler: str | None = None  # a Dask scheduler address: run the sandboxes on its workers
    limits: Limits = Limits()
    total_timeout: float = 600.0
    cell_timeout: float | None = None  # None: the course's c.Execute.timeout
    max_notebook_bytes: int = 16 << 20
    progress: bool = True
    students: tuple = ()  # grade only these (default: everyone under submitted/)
    allow_unsandboxed: bool = True
    sandbox_uid: int = SANDBOX_UID


def find_students(root, assignment):
    submitted = Path(root) / "submitted"
    if not submitted.is_dir():
        return []
    return sorted(p.name for p in submitted.iterdir() if not p.name.startswith(".") and not p.is_symlink()
                  and (p / assignment).is_dir() and not (p / assignment).is_symlink())


def executed_notebook(intake_nb, result):
    """The rebuilt notebook with the outputs its run produced; warnings in tests cost nothing."""
    notebook = nbformat.from_dict(json.loads(json.dumps(intake_nb.notebook)))
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        outputs = result.outputs.get(index, [error_output("GraderStopped", "This cell did not run.")])
        if index in intake_nb.test_cells:  # nbgrader fails a test cell on any stderr output
            outputs = [{**o, "name": "stdout"} if o.get("output_type") == "stream" else o for o in outputs]
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        cell.execution_count = result.execution_counts.get(index)
    return notebook


class Progress:
    def __init__(self, total, enabled):
        self.total, self.done, self.enabled = total, 0, enabled
        self.started = time.monotonic()
        self.tty = enabled and sys.stderr.isatty()

    def step(self, result):
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{time.monotonic() - self.started:5.0f} s  {result.student}: {result.status}")
        sys.stderr.write(("\r" + line.ljust(100)) if self.tty else line + "\n")
        if self.tty and self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class LocalPool:
    def __init__(self, jobs):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)

    def submit(self, job):
        return self.pool.submit(execute, job)

    @staticmethod
    def as_completed(futures):
        return concurrent.futures.as_completed(futures)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    def __init__(self, address):
        from distributed import Client

        self.client = Client(address, timeout="30s")

    def submit(self, job):
        return self.client.submit(execute, job, pure=False, key=f"grade-{job.key}-{time.monotonic_ns()}")

    @staticmethod
    def as_completed(futures):
        from distributed import as_completed

        return as_completed(futures)

    def close(self):
        self.client.close()


def grade_assignment(root, assignment, options=GradingOptions(), log=print):
    """Grade every submission of ``assignment`` in the course at ``root``; returns StudentResults."""
    root = Path(root).resolve()
    source_dir = root / nbgrader_steps.course_config(root).CourseDirectory.get("source_directory", "source") / assignment
    if not source_dir.is_dir():
        raise FileNotFoundError(f"no source folder {source_dir} for assignment {assignment!r}")
    problem = sandbox_problem(options.limits)
    sandboxed = problem is None
    if not sandboxed:
        banner = "!" * 78
        log(f"{banner}\nWARNING: no sandbox can be created here ({problem}).\n"
            f"Learner code will run WITHOUT isolation, with this account's permissions.\n{banner}",
            file=sys.stderr)
        if not options.allow_unsandboxed:
            raise RuntimeError(f"no sandbox: {problem}")
    release = nbgrader_steps.register_assignment(root, assignment)
    staging = Path(tempfile.mkdtemp(prefix="staged-"))
    try:
        return _grade(root, assignment, options, source_dir, release, staging, sandboxed, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(release.parent, ignore_errors=True)


def _grade(root, assignment, options, source_dir, release, staging, sandboxed, log):
    names = sorted(p.name for p in source_dir.glob("*.ipynb"))
    sources = {name: nbformat.read(source_dir / name, as_version=4) for name in names}
    releases = {name: nbformat.read(release / name, as_version=4) for name in names}
    students = [s for s in find_students(root, assignment) if not options.students or s in options.students]
    cell_timeout = options.cell_timeout or nbgrader_steps.cell_timeout(root)
    maximum = nbgrader_steps.max_score(root, assignment)
    seed = secrets.randbits(62)  # the authoritative checks' inputs: drawn now, known to no learner
    authorities = {name: Authority.load(source_dir / name, seed) for name in names}
    jobs = options.jobs or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // jobs)
    progress = Progress(len(students), options.progress)
    finisher = Finisher(root, assignment, staging, maximum, sandboxed, authorities, progress)
    intakes, pending = {}, {}

    for student in students:
        try:
            intake = take_in(student, root / "submitted" / student / assignment, sources, releases,
                             options.max_notebook_bytes)
        except Exception as error:  # a file system surprise: this student only
            finisher.failed(student, f"pre-check failed: {error}")
            continue
        intakes[student] = intake
        pending[student] = {nb.name: None for nb in intake.notebooks if nb.notebook is not None}

    pool = DaskPool(options.scheduler) if options.scheduler else LocalPool(jobs)
    futures = {}
    try:
        for student, intake in intakes.items():
            for nb in intake.notebooks:
                if nb.notebook is None:
                    continue
                job = ExecutionJob(key=f"{student}/{nb.name}", notebook_name=nb.name,
                                   notebook=json.loads(json.dumps(nb.notebook)), test_cells=nb.test_cells,
                                   cell_timeout=cell_timeout, total_timeout=options.total_timeout,
                                   limits=options.limits, sandboxed=sandboxed, threads=threads,
                                   sandbox_uid=options.sandbox_uid,
                                   probes=tuple(authorities[nb.name].probes) if authorities[nb.name] else ())
                futures[pool.submit(job)] = (student, nb.name)
        for student in [s for s, runs in pending.items() if not runs]:
            finisher.add(intakes[student], {})
        for future in pool.as_completed(list(futures)):
            student, name = futures[future]
            try:
                pending[student][name] = future.result()
            except Exception as error:
                pending[student][name] = error
            if all(run is not None for run in pending[student].values()):
                finisher.add(intakes[student], pending[student])
        finisher.flush()
    finally:
        pool.close()
    try:
        nbgrader_steps.export_csv(root, root / "grades.csv")
    except Exception as error:
        log(f"grades.csv could not be written: {error}", file=sys.stderr)
    return [finisher.results[s] for s in students]


class Finisher:
    """nbgrader's steps for the students whose sandboxed runs are back, a few at a time.

    One ``autograde`` and one ``generate_feedback`` call per chunk of students costs about half
    as much per student as one call each; the sandboxes keep running meanwhile. A chunk whose
    nbgrader call fails is redone one student at a time, so a failure stays that student's.
    """

    chunk_size = 8

    def __init__(self, root, assignment, staging, maximum, sandboxed, authorities, progress):
        self.root, self.assignment, self.staging = root, assignment, staging
        self.maximum, self.sandboxed, self.authorities, self.progress = maximum, sandboxed, authorities, progress
        self.results, self.waiting, self.chunks = {}, [], 0
        self.folder = self.new_folder()

    def new_folder(self):
        self.chunks += 1
        folder = self.staging / f"chunk-{self.chunks}"
        folder.mkdir(parents=True)
        return folder

    def done(self, result):
        self.results[result.student] = result
        self.progress.step(result)

    def failed(self, student, reason):
        nbgrader_steps.ensure_student(self.root, student)
        self.done(StudentResult(student, "error", max_score=self.maximum, reasons=[reason]))

    def add(self, intake, runs):
        """Stage one student's executed notebooks; grade the chunk when it is full."""
        result = StudentResult(intake.student, "graded", max_score=self.maximum, flags=list(intake.flags))
        result.timings["sandbox"] = sum(run.seconds for run in runs.values() if hasattr(run, "seconds"))
        if not self.sandboxed:
            result.flags.append("UNSANDBOXED")
        try:
            staged = self.stage(intake, runs, result)
        except Exception:
            staged = False
            result.status = "error"
            result.reasons.append(traceback.format_exc(limit=3)[-800:])
        if not staged:
            nbgrader_steps.ensure_student(self.root, intake.student)
            nbgrader_steps.forget_submission(self.root, self.assignment, intake.student)
            result.status = "refused" if result.status == "graded" else result.status
            result.seconds = result.timings["sandbox"]
            self.done(result)
            return
        self.waiting.append((result, intake, runs))
        if len(self.waiting) >= self.chunk_size:
            self.flush()

    def stage(self, intake, runs, result):
        folder = self.folder / intake.student / self.assignment
        folder.mkdir(parents=True, exist_ok=True)
        staged = 0
        for nb in intake.notebooks:
            result.flags += nb.flags
            if nb.notebook is None:
                result.reasons.append(f"{nb.name}: {nb.refused}")
                continue
            run = runs.get(nb.name)
            if isinstance(run, Exception) or run is None:
                result.reasons.append(f"{nb.name}: the sandbox run failed ({run!r})")
                result.status = "error"
                continue
            result.reasons += [f"{nb.name}: {problem}" for problem in run.problems]
            if run.status != "ok":
                result.status = f"graded ({run.status})"
            nbformat.write(executed_notebook(nb, run), folder / nb.name)
            staged += 1
        if staged and intake.timestamp:
            (folder / "timestamp.txt").write_text(intake.timestamp)
        return staged > 0

    def flush(self):
        """autograde, the authoritative verdicts, feedback and scores for every staged student."""
        if not self.waiting:
            return
        chunk, folder = self.waiting, self.folder
        self.waiting, self.folder = [], self.new_folder()
        if len(chunk) > 1 and not self.grade_together(chunk, folder):
            for item in chunk:  # find who broke the chunk: each student alone
                self.grade_together([item], folder)
        elif len(chunk) == 1:
            self.grade_together(chunk, folder)
        for result, _, _ in chunk:
            self.done(result)

    def grade_together(self, chunk, folder):
        """True unless nbgrader failed for some student of the chunk (each result says which)."""
        root, assignment = self.root, self.assignment
        students = {result.student for result, _, _ in chunk}
        view = Path(tempfile.mkdtemp(prefix="students-", dir=self.staging))
        for student in students:  # nbgrader reads only these students' folders
            (view / student).symlink_to(folder / student)
        started = time.monotonic()
        outcome = nbgrader_steps.autograde(root, assignment, "*", view)
        autograde_seconds = (time.monotonic() - started) / len(chunk)
        ok = True
        for result, intake, runs in chunk:
            graded = all((root / "autograded" / intake.student / assignment / nb.name).exists()
                         for nb in intake.notebooks if nb.notebook is not None)
            if not graded:
                ok = False
                if len(chunk) == 1:
                    result.status = "error"
                    result.reasons.append("nbgrader autograde failed: " + (outcome.get("error") or "")[-500:])
                continue
            result.timings["autograde"] = autograde_seconds
            step = time.monotonic()
            self.apply_checks(result, intake, runs)
            result.timings["checks"] = time.monotonic() - step
        if not ok and len(chunk) > 1:
            return False
        feedback_view = Path(tempfile.mkdtemp(prefix="autograded-", dir=self.staging))
        for student in students:
            (feedback_view / student).symlink_to(root / "autograded" / student)
        started = time.monotonic()
        feedback = nbgrader_steps.generate_feedback(root, assignment, "*", autograded=feedback_view)
        feedback_seconds = (time.monotonic() - started) / len(chunk)
        for result, intake, runs in chunk:
            result.timings["feedback"] = feedback_seconds
            if not feedback["success"] and not (root / "feedback" / intake.student / assignment).exists():
                result.reasons.append("feedback failed: " + (feedback.get("error") or "")[-300:])
            found = nbgrader_steps.scores(root, assignment, intake.student)
            if found:
                result.score, result.max_score, cells = found
                result.cells = {k: list(v) for k, v in cells.items()}
            result.seconds = sum(result.timings.values())
        return True

    def apply_checks(self, result, intake, runs):
        """Points from the authoritative checks; where the notebook's own tests disagree, a flag."""
        for nb in intake.notebooks:
            authority, run = self.authorities.get(nb.name), runs.get(nb.name)
            if authority is None or nb.notebook is None or not hasattr(run, "probes"):
                continue
            verdicts = authority.judge(run.probes, nb.notebook)
            for grade_id, said, decided in nbgrader_steps.apply_verdicts(
                    self.root, self.assignment, intake.student, Path(nb.name).stem, verdicts):
                result.flags.append(f"{grade_id}: notebook test {'passed' if said else 'failed'}, "
                                    f"grader's check {'passed' if decided else 'failed'}")
            annotate_feedback(self.root / "autograded" / intake.student / self.assignment / nb.name, verdicts)


def annotate_feedback(path, verdicts):
    """Say in the autograded notebook (the feedback's source) why the grader's own check failed."""
    if not path.exists() or all(v.passed for v in verdicts.values()):
        return
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        verdict = verdicts.get(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"))
        if verdict is not None and not verdict.passed and cell.cell_type == "code":
            cell.outputs.append(nbformat.v4.new_output(
                "stream", name="stdout",
                text=f"\nThe grader's own check of this part, on inputs chosen at grading time, failed: "
                     f"{verdict.message}\n"))
    mode = path.stat().st_mode
    path.chmod(mode | 0o200)
    nbformat.write(notebook, path)
    path.chmod(mode)


def summary_table(results):
    rows = [("student", "score", "status", "seconds", "flags / reasons")]
    for r in results:
        notes = "; ".join(r.flags + r.reasons)
        rows.append((r.student, f"{r.score:g}/{r.max_score:g}", r.status, f"{r.seconds:.1f}",
                     notes if len(notes) < 160 else notes[:157] + "..."))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 15)
    return "\n".join(lines)


def results_json(results):
    return json.dumps([asdict(r) for r in results], indent=1)
