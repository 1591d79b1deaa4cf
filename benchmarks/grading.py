"""How fast does ``bash scripts/grade`` grade a class, against the floor measured in the same run?

Builds a synthetic class in a temporary course: every student submits every assignment, each
notebook the reference solution or one of that assignment's known bugs (tests/known_bugs/, the
ones that loop until the time limit left out: they measure the limit, not the grader), in a
fixed rotation. Then it grades each assignment with one ``bash scripts/grade ASSIGNMENT`` call,
as an instructor would, and prints seconds per notebook next to the floor: one sandbox started
and ``import torch`` run in it, measured a few times in the same run (what every notebook costs
before a single test runs).

    python benchmarks/grading.py                      # 100 students x every assignment
    python benchmarks/grading.py --students 10 --assignments 01-scaled-dot-product-attention
    python benchmarks/grading.py --json _build/grading-benchmark.json
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from course import (  # noqa: E402  (the tests' helpers build submissions the same way)
    ASSIGNMENTS,
    EXERCISES,
    SOLUTIONS,
    fill_in,
    known_bugs,
    notebook_names,
    read_notebook,
    reference_answers,
)

from attnlab_grader.execution import ExecutionJob, execute  # noqa: E402


def build_class(course, assignments, students):
    """Write submitted/<student>/<assignment>/*.ipynb for every student and assignment."""
    for assignment in assignments:
        shutil.copytree(SOLUTIONS / assignment, course / "solutions" / assignment)
        bugs = [bug for bug in known_bugs(assignment) if "loop" not in bug.name]
        variants = [{}] + [bug.cells for bug in bugs]  # the reference, then each bug in turn
        for name in notebook_names(assignment):
            exercise = read_notebook(EXERCISES / assignment / name)
            answers = reference_answers(assignment, name)
            texts = [nbformat.writes(fill_in(exercise, {**answers, **variant})) for variant in variants]
            for i in range(students):
                folder = course / "submitted" / f"student{i:03d}" / assignment
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text(texts[i % len(texts)])


def floor_seconds(repeats):
    """A fresh sandbox plus ``import torch`` in it: the fixed cost of every notebook."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import torch")])
    job = ExecutionJob(key="floor", notebook_name="floor.ipynb", notebook=json.loads(nbformat.writes(notebook)),
                       test_cells=(), threads=1)
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        result = execute(job)
        times.append(time.monotonic() - started)
        assert result.status == "ok", result.problems
    return statistics.median(times), times


def grade(course, assignment, jobs, cell_timeout):
    command = ["bash", str(REPO / "scripts" / "grade"), assignment, "--no-progress", f"--jobs={jobs}",
               "--summary-json", f"summary-{assignment}.json"]
    if cell_timeout:
        command.append(f"--cell-timeout={cell_timeout}")
    started = time.monotonic()
    result = subprocess.run(command, cwd=course, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    summary = json.loads((course / f"summary-{assignment}.json").read_text())
    return seconds, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--assignments", default="all", help="comma-separated, or all")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cell-timeout", type=float, default=None, help="default: the course's c.Execute.timeout")
    parser.add_argument("--floor-repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic course folder")
    args = parser.parse_args()
    assignments = ASSIGNMENTS if args.assignments == "all" else args.assignments.split(",")

    course = Path(tempfile.mkdtemp(prefix="grading-benchmark-"))
    shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    build_class(course, assignments, args.students)
    subprocess.run(["bash", str(REPO / "scripts" / "setup")], check=True, capture_output=True)

    floor, floor_runs = floor_seconds(args.floor_repeats)
    cpus = os.cpu_count() or 1
    print(f"floor: sandbox start + import torch = {floor:.2f} s (median of {len(floor_runs)}: "
          f"{', '.join(f'{t:.2f}' for t in floor_runs)}); {cpus} CPUs, --jobs {args.jobs}")
    rows, total_seconds, total_notebooks = [], 0.0, 0
    for assignment in assignments:
        seconds, summary = grade(course, assignment, args.jobs, args.cell_timeout)
        notebooks = len(summary) * len(notebook_names(assignment))
        statuses = sorted({r["status"] for r in summary})
        steps = {step: sum(r["timings"].get(step, 0.0) for r in summary) / max(len(summary), 1)
                 for step in ("sandbox", "autograde", "checks", "feedback")}
        rows.append({"assignment": assignment, "notebooks": notebooks, "seconds": seconds,
                     "seconds_per_notebook": seconds / notebooks, "statuses": statuses,
                     "mean_seconds_per_step": steps})
        total_seconds += seconds
        total_notebooks += notebooks
        print(f"{assignment:34s} {notebooks:4d} notebooks {seconds:7.1f} s  {seconds / notebooks:5.2f} s/notebook  "
              f"(per student: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()) + f")  statuses {statuses}")
    per_notebook = total_seconds / total_notebooks
    floor_per_notebook = floor / min(args.jobs, cpus)
    print(f"\nall: {total_notebooks} notebooks in {total_seconds:.0f} s ({total_seconds / 60:.1f} min): "
          f"{per_notebook:.2f} s per notebook; the floor alone, {min(args.jobs, cpus)} at a time, "
          f"is {floor_per_notebook:.2f} s per notebook: {per_notebook / floor_per_notebook:.2f}x the floor")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "students": args.students, "jobs": args.jobs, "cpus": cpus, "floor_seconds": floor,
            "floor_runs": floor_runs, "assignments": rows, "total_seconds": total_seconds,
            "total_notebooks": total_notebooks, "seconds_per_notebook": per_notebook,
            "ratio_to_floor": per_notebook / floor_per_notebook}, indent=1))
    if args.keep:
        print(f"course kept in {course}")
    else:
        shutil.rmtree(course, ignore_errors=True)


if __name__ == "__main__":
    main()
