"""The course's grader: every submission in its own sandbox, nbgrader as the gradebook.

``bash scripts/grade ASSIGNMENT`` (or ``python -m attnlab_grader ASSIGNMENT``) from the course
root. The modules, in the order a submission meets them:

* ``intake``     — the pre-check: find, size-check, parse and rebuild each notebook from the
                   instructor's source, before any learner code runs;
* ``sandbox``    — bubblewrap and cgroup limits around one process per notebook;
* ``runner``     — the program inside the sandbox: runs the cells, reports each one;
* ``execution``  — drives the runner: time limits, interrupts, restarts after a crash;
* ``batch``      — the class: parallel runs (threads here, or a Dask cluster), nbgrader steps,
                   the summary table;
* ``nbgrader_steps`` — nbgrader in process: gradebook, autograde of the executed notebooks,
                   feedback, export;
* ``feedback``   — the feedback preprocessors that keep hidden tests out of the feedback.
"""
