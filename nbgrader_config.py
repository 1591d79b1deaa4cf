"""nbgrader configuration for the course (instructors run nbgrader from this folder).

Source (instructor) notebooks live in solutions/NN-topic/, the student versions that
`nbgrader generate_assignment` writes go to exercises/NN-topic/.
"""

import os

c = get_config()  # noqa: F821  (injected by nbgrader)

c.CourseDirectory.course_id = "attention-from-scratch"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# Each assignment's authoritative checks (solutions/NN-topic/grading.py, read by scripts/grade)
# are never released to learners, nor copied next to their work.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "grading.py"]

# What learners see where their code goes.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# A cell that loops is interrupted after this many seconds; it scores 0 and grading goes on.
c.Execute.timeout = 60

# A learner who deleted a test cell gets it back instead of silently skipping it.
c.OverwriteCells.add_missing_cells = True

# Feedback shows each test's verdict and message, not the hidden tests' code: lines quoting
# it are scrubbed from every output, their source is cleared, tracebacks keep only the
# learner's own frames, and each cell's outputs are capped in bytes.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "attnlab_grader.feedback.ScrubHiddenTestSource",
    "nbgrader.preprocessors.ClearHiddenTests",
    "attnlab_grader.feedback.HideTestTracebacks",
    "attnlab_grader.feedback.CapOutputBytes",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
