"""nbgrader, in process, as the gradebook, feedback and export engine.

The grader hands nbgrader notebooks it already ran in sandboxes: ``autograde`` reads them from
a private staging folder (never from the learner's ``submitted/`` folder, which stays byte for
byte as it was), with the output-clearing and execution steps taken out of its pipeline and
every other step kept: restoring instructor cells from the gradebook, checking metadata,
limiting output, saving the automatic grades, late penalties. Feedback and the CSV export are
nbgrader's own, configured by the course's ``nbgrader_config.py``.
"""

import tempfile
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import CsvExportPlugin
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader


def course_config(root):
    """The course's nbgrader configuration (``nbgrader_config.py`` in the course root)."""
    root = Path(root).resolve()
    config = Config()
    if (root / "nbgrader_config.py").exists():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    return config


def api_for(root, **course_directory):
    """An NbGraderAPI on the course, with CourseDirectory traits overridden as given."""
    config = course_config(root)
    for name, value in course_directory.items():
        setattr(config.CourseDirectory, name, value)
    config.Autograde.sanitize_preprocessors = [DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata]
    config.Autograde.autograde_preprocessors = [IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                                SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def cell_timeout(root):
    """The course's per-cell time limit (``c.Execute.timeout``, 30 s by nbgrader's default)."""
    value = course_config(root).Execute.get("timeout", 30)
    return float(value) if value and value > 0 else 30.0


def register_assignment(root, assignment):
    """Write the assignment's notebooks and tests into the gradebook, as generate_assignment does.

    The student version goes to a throwaway folder (the course's release folder is left
    alone); returns that folder, whose notebooks hold the stubs learners start from.
    """
    release = Path(tempfile.mkdtemp(prefix="release-"))
    api = api_for(root, release_directory=str(release))
    result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error') or result.get('log')}")
    return release / assignment


def autograde(root, assignment, student, staged):
    """nbgrader autograde of already-executed notebooks in ``staged``/<student>/<assignment>/.

    ``student`` may be ``"*"``: every student folder in ``staged``.
    """
    api = api_for(root, submitted_directory=str(staged))
    return api.autograde(assignment, student, force=True, create=True)


def generate_feedback(root, assignment, student, autograded=None):
    """nbgrader generate_feedback; ``autograded`` replaces the folder it reads students from."""
    overrides = {"autograded_directory": str(autograded)} if autograded else {}
    return api_for(root, **overrides).generate_feedback(assignment, student, force=True)


def db_url(root):
    url = course_config(root).CourseDirectory.get("db_url")
    return url or f"sqlite:///{Path(root).resolve() / 'gradebook.db'}"


def ensure_student(root, student):
    with Gradebook(db_url(root)) as gb:
        gb.update_or_create_student(student)


def forget_submission(root, assignment, student):
    """Remove an earlier graded submission (a re-run whose file is now unusable scores 0)."""
    with Gradebook(db_url(root)) as gb:
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass


def scores(root, assignment, student):
    """(score, max score, {grade_id: (score, max)}) of a student's submission, or None."""
    with Gradebook(db_url(root)) as gb:
        try:
            submission = gb.find_submission(assignment, student)
        except MissingEntry:
            return None
        cells = {grade.name: (grade.score, grade.max_score) for nb in submission.notebooks for grade in nb.grades}
        return submission.score, submission.max_score, cells


def max_score(root, assignment):
    with Gradebook(db_url(root)) as gb:
        return gb.find_assignment(assignment).max_score


def export_csv(root, destination):
    """nbgrader's own CSV export of the whole gradebook."""
    with Gradebook(db_url(root)) as gb:
        plugin = CsvExportPlugin(to=str(destination))
        plugin.export(gb)



def apply_verdicts(root, assignment, student, notebook_id, verdicts):
    """Set each graded cell's automatic score from the authoritative verdict.

    Returns (grade_id, what the notebook's own test gave, what the grader's check gives) for every
    cell where the two disagree: a learner whose tests pass in their notebook but not in the
    grader's check has usually changed what the tests rely on.
    """
    disagreements = []
    with Gradebook(db_url(root)) as gb:
        for grade_id, verdict in verdicts.items():
            try:
                grade = gb.find_grade(grade_id, notebook_id, assignment, student)
            except MissingEntry:
                continue
            authoritative = float(grade.max_score) if verdict.passed else 0.0
            if grade.auto_score is not None and float(grade.auto_score) != authoritative:
                disagreements.append((grade_id, float(grade.auto_score), authoritative))
            grade.auto_score = authoritative
        gb.db.commit()
    return disagreements
