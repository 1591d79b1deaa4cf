"""``python -m attnlab_grader ASSIGNMENT`` (what ``bash scripts/grade`` runs), from the course root."""

import argparse
import sys
import warnings
from pathlib import Path

from attnlab_grader.batch import GradingOptions, grade_assignment, results_json, summary_table
from attnlab_grader.sandbox import SANDBOX_UID, MiB, Limits


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/grade",
        description="Grade every submission under submitted/<student>/ASSIGNMENT/ into gradebook.db, "
                    "write feedback/<student>/ASSIGNMENT/*.html and grades.csv. Run from the course root.")
    parser.add_argument("assignment")
    parser.add_argument("--jobs", type=int, default=0, help="sandboxes run side by side here (default: one per CPU)")
    parser.add_argument("--scheduler", help="Dask scheduler address (tcp://host:port): run the sandboxes on its workers")
    parser.add_argument("--student", action="append", default=[], help="grade only this student (repeatable)")
    parser.add_argument("--course", default=".", help="course root (default: the current folder)")
    parser.add_argument("--memory-mib", type=int, default=Limits.memory_bytes // MiB, help="memory per submission")
    parser.add_argument("--processes", type=int, default=Limits.processes, help="processes per submission")
    parser.add_argument("--disk-mib", type=int, default=Limits.disk_bytes // MiB, help="disk (and largest file) per submission")
    parser.add_argument("--time-limit", type=float, default=GradingOptions.total_timeout,
                        help="seconds per notebook in all (default %(default)s)")
    parser.add_argument("--cell-timeout", type=float, help="seconds per cell (default: c.Execute.timeout of the course)")
    parser.add_argument("--max-notebook-mib", type=float, default=GradingOptions.max_notebook_bytes / MiB)
    parser.add_argument("--require-sandbox", action="store_true", help="refuse to grade where no sandbox can be made")
    parser.add_argument("--sandbox-uid", type=int, default=SANDBOX_UID,
                        help="the unprivileged user id learner code runs as when grading as root (default %(default)s)")
    parser.add_argument("--summary-json", type=Path, help="also write the per-student results as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # nbgrader's gradebook triggers SQLAlchemy warnings that say nothing to an instructor
    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    limits = Limits(memory_bytes=args.memory_mib * MiB, processes=args.processes, disk_bytes=args.disk_mib * MiB)
    options = GradingOptions(jobs=args.jobs, scheduler=args.scheduler, limits=limits, total_timeout=args.time_limit,
                             cell_timeout=args.cell_timeout, max_notebook_bytes=int(args.max_notebook_mib * MiB),
                             progress=not args.no_progress, students=tuple(args.student),
                             allow_unsandboxed=not args.require_sandbox, sandbox_uid=args.sandbox_uid)
    results = grade_assignment(args.course, args.assignment, options)
    print(summary_table(results))
    if args.summary_json:
        args.summary_json.write_text(results_json(results))
    problems = [r for r in results if r.status == "error"]
    print(f"\n{len(results)} students graded, {len(problems)} with grader errors; "
          f"gradebook.db, feedback/ and grades.csv updated.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
