"""Run one rebuilt notebook in its sandbox and collect, cell by cell, what happened.

The grader, not the sandbox, owns every limit. A cell that runs past its time is interrupted
(KeyboardInterrupt, as Jupyter's stop button); one that ignores the interrupt, a crash
(``os._exit``, a segfault), a memory or process limit, or too much output ends the sandbox.
That cell is marked failed with the reason, every cell that already finished keeps its
outputs, and a fresh sandbox replays the notebook's non-test cells to rebuild the learner's
definitions before it goes on with the next cell. Only the whole-notebook time limit, or
repeated failures, stop a notebook early; every test cell that never ran gets an error output,
so it can never score.

:func:`execute` takes and returns plain picklable data, so it runs the same in a local worker
thread or on a Dask worker.
"""

import json
import os
import selectors
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from attnlab_grader.sandbox import SANDBOX_UID, Limits, SandboxedProcess

RUNNER = Path(__file__).with_name("runner.py")
INTERRUPT_GRACE = 10.0  # seconds a cell gets to stop after the interrupt before the sandbox is killed
STARTUP_LIMIT = 60.0  # seconds for the sandboxed Python to come up
MAX_RESTARTS = 3
OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error"}


@dataclass(frozen=True)
class ExecutionJob:
    """Everything a worker needs to run one notebook: plain data only."""

    key: str  # "<student>/<notebook name>", for messages
    notebook_name: str
    notebook: dict  # the rebuilt notebook, nbformat 4 JSON
    test_cells: tuple  # indices of graded test cells (never replayed)
    cell_timeout: float = 60.0
    total_timeout: float = 600.0
    output_bytes: int = 8 << 20  # event bytes read from the sandbox, in all
    output_bytes_per_cell: int = 256 << 10
    limits: Limits = Limits()
    sandboxed: bool = True
    threads: int = 0  # torch/OpenMP threads inside the sandbox; 0 = library default
    sandbox_uid: int = SANDBOX_UID  # the unprivileged user the learner's code runs as (when graded as root)
    probes: tuple = ()  # the authoritative calls, run after the cells (see authority.py)


@dataclass
class ExecutionResult:
    key: str
    outputs: dict = field(default_factory=dict)  # cell index -> list of nbformat outputs
    execution_counts: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)  # sentences for the instructor's summary
    status: str = "ok"  # ok | cell-timeout | time-limit | crashed | memory-limit | output-limit | ...
    seconds: float = 0.0
    restarts: int = 0
    probes: dict = field(default_factory=dict)  # probe id -> what the learner's code returned


@dataclass
class Session:
    """What one sandbox did before it finished or was stopped."""

    finished: dict = field(default_factory=dict)  # index -> (execution_count, outputs)
    failed_index: int | None = None
    failure: str | None = None
    status: str = "ok"
    probes: dict = field(default_factory=dict)  # probe id -> report
    clean_exit: bool = False


def error_output(ename, message):
    return {"output_type": "error", "ename": ename, "evalue": message, "traceback": [f"{ename}: {message}"]}


def clean_outputs(raw):
    """Keep only well-formed nbformat outputs from what the sandbox sent."""
    outputs = []
    if not isinstance(raw, list):
        return [error_output("GraderError", "the notebook's outputs could not be read")]
    for item in raw:
        if not isinstance(item, dict) or item.get("output_type") not in OUTPUT_TYPES:
            continue
        kind = item["output_type"]
        if kind == "stream":
            if isinstance(item.get("text"), str):
                outputs.append({"output_type": "stream", "name": "stderr" if item.get("name") == "stderr" else "stdout",
                                "text": item["text"]})
        elif kind == "error":
            traceback = item.get("traceback")
            traceback = [t for t in traceback if isinstance(t, str)] if isinstance(traceback, list) else []
            outputs.append({"output_type": "error", "ename": str(item.get("ename", "Error")),
                            "evalue": str(item.get("evalue", "")), "traceback": traceback})
        else:
            data = item.get("data")
            if not isinstance(data, dict):
                continue
            data = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, (str, list, dict))}
            output = {"output_type": kind, "data": data,
                      "metadata": item["metadata"] if isinstance(item.get("metadata"), dict) else {}}
            if kind == "execute_result":
                count = item.get("execution_count")
                output["execution_count"] = count if isinstance(count, int) else None
            outputs.append(output)
    return outputs


def exit_reason(code, process):
    """A sentence for why the sandbox ended early, from its exit status and its cgroup."""
    cgroup = process.cgroup
    if cgroup is not None and cgroup.hit_memory_limit():
        return "memory-limit", "the notebook used more memory than allowed and was killed"
    if cgroup is not None and cgroup.hit_process_limit():
        return "process-limit", "the notebook started more processes than allowed"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return "crashed", f"the Python process was killed by {name}"
    if code and code > 128 and code - 128 in signal.Signals._value2member_map_:
        return "crashed", f"the Python process was killed by {signal.Signals(code - 128).name}"
    return "crashed", f"the Python process exited (status {code}) while this cell ran"


def run_session(job, plan, probes, deadline):
    """Start a sandbox, send the request, and follow its events until it ends or is stopped."""
    session = Session()
    process = SandboxedProcess(RUNNER, Path(job.notebook_name).stem or "notebook", job.limits,
                               sandboxed=job.sandboxed, threads=job.threads or None, uid=job.sandbox_uid)
    proc = process.process
    request = {"notebook_name": job.notebook_name, "notebook": job.notebook, "cells": plan,
               "output_bytes_per_cell": job.output_bytes_per_cell, "probes": probes}
    try:
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
    except OSError:
        pass
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, "events")
    selector.register(proc.stderr, selectors.EVENT_READ, "log")
    buffer = b""
    received = 0
    started = time.monotonic()
    ready = False
    current = None  # (index, replay, started_at)
    interrupted_at = None
    open_streams = 2

    def stop(status, message, index):
        session.status, session.failure, session.failed_index = status, message, index
        process.kill()

    try:
        while open_streams:
            now = time.monotonic()
            if now > deadline:
                stop("time-limit", f"the whole notebook ran past its time limit ({job.total_timeout:g} s)",
                     current[0] if current else None)
                break
            if not ready and now - started > STARTUP_LIMIT:
                stop("startup", "the sandboxed Python did not start", None)
                break
            if current is not None:
                running = now - current[2]
                if interrupted_at is None and running > job.cell_timeout:
                    interrupted_at = now
                    try:
                        proc.stdin.write(b"interrupt\n")
                        proc.stdin.flush()
                    except OSError:
                        pass
                elif interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE:
                    stop("cell-timeout", f"the cell ran past the time limit per cell ({job.cell_timeout:g} s) "
                         "and ignored the interrupt", current[0])
                    break
            for key, _ in selector.select(timeout=0.25):
                chunk = os.read(key.fileobj.fileno(), 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "log":
                    continue  # the learner's own process output: read and dropped
                received += len(chunk)
                if received > job.output_bytes:
                    stop("output-limit", f"the notebook printed more than {job.output_bytes >> 20} MiB",
                         current[0] if current else None)
                    open_streams = 0
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # not ours: the learner wrote to the event channel
                    if not isinstance(event, dict):
                        continue
                    kind = event.get("event")
                    if kind == "ready":
                        ready = True
                    elif kind == "start" and isinstance(event.get("index"), (int, str)):
                        current = (event["index"], bool(event.get("replay")), time.monotonic())
                        interrupted_at = None
                    elif kind == "done" and current is not None and event.get("index") == current[0]:
                        count = event.get("execution_count")
                        outputs = clean_outputs(event.get("outputs"))
                        if interrupted_at is not None:
                            outputs.append({"output_type": "stream", "name": "stdout",
                                            "text": f"\n[The grader interrupted this cell after "
                                                    f"{job.cell_timeout:g} s: the time limit per cell.]\n"})
                        session.finished[current[0]] = (count if isinstance(count, int) else None, outputs)
                        current, interrupted_at = None, None
                    elif kind == "probe" and current is not None and current[0] == f"probe:{event.get('id')}":
                        report = event.get("report")
                        session.probes[event["id"]] = report if isinstance(report, dict) else {}
                        current, interrupted_at = None, None
                    elif kind == "finished":
                        session.clean_exit = True
        if session.failure is None and not session.clean_exit:
            code = process.wait()
            status, message = exit_reason(code, process)
            session.status, session.failure = status, message
            session.failed_index = current[0] if current else None
    finally:
        process.close()
        selector.close()
    return session


def execute(job):
    """Run every code cell of ``job.notebook`` in order, then the authoritative calls, surviving
    whatever a cell can do to its kernel.

    Cells first, with the calls in the same sandbox right after them. If the sandbox dies, a new
    one replays the non-test cells that ran (never one that failed) and goes on. Calls that have
    not run when the cells are over (the notebook hit its time limit, or died in its last cell)
    get a sandbox of their own.
    """
    started = time.monotonic()
    result = ExecutionResult(key=job.key)
    code_cells = [i for i, cell in enumerate(job.notebook["cells"]) if cell.get("cell_type") == "code"]
    pending, probes, failed_cells = list(code_cells), list(job.probes), set()
    stopped = None

    def replay():
        return [{"index": i, "replay": True} for i in code_cells
                if i in result.outputs and i not in failed_cells and i not in job.test_cells]

    def record(session):
        for index, (count, outputs) in session.finished.items():
            if index in pending:
                result.outputs[index] = outputs
                result.execution_counts[index] = count
        result.probes.update(session.probes)
        failed = session.failed_index
        if session.failure is None:
            return None
        if isinstance(failed, int):
            failed_cells.add(failed)
            if failed in pending and failed not in result.outputs:
                result.outputs[failed] = [error_output(
                    "GraderStopped", f"{session.failure}. The grader stopped it here; cells before keep their results.")]
                result.execution_counts[failed] = None
        elif isinstance(failed, str) and failed.startswith("probe:"):
            result.probes[failed[len("probe:"):]] = {"raised": "GraderStopped", "message": session.failure}
        where = f"cell {failed}" if isinstance(failed, int) else (failed or "start-up")
        result.problems.append(f"{where}: {session.failure}")
        result.status = session.status if result.status == "ok" else result.status
        return failed

    deadline = started + job.total_timeout
    while pending:
        session = run_session(job, replay() + [{"index": i} for i in pending], probes, deadline)
        failed = record(session)
        pending = [i for i in pending if i not in result.outputs]
        probes = [p for p in probes if p["id"] not in result.probes]
        if session.failure is None:
            break
        if session.status in ("time-limit", "startup") or failed is None:
            stopped = session.failure
            break
        if result.restarts >= MAX_RESTARTS or time.monotonic() >= deadline:
            stopped = f"stopped after {result.restarts + 1} failures"
            break
        result.restarts += 1
    for index in pending:
        result.outputs[index] = [error_output(
            "GraderStopped", f"This cell did not run: {stopped or 'the notebook was stopped earlier'}.")]
        result.execution_counts[index] = None
    pending = []

    # The calls' own sandbox replays what ran in time (at most the notebook's time limit) and
    # then gets that much time again for the calls themselves.
    deadline = time.monotonic() + 2 * job.total_timeout
    attempts = 0
    while probes and attempts <= MAX_RESTARTS:
        session = run_session(job, replay(), probes, deadline)
        record(session)
        probes = [p for p in probes if p["id"] not in result.probes]
        attempts += 1
        if session.failure is None or session.status in ("time-limit", "startup"):
            break
    for probe in probes:
        result.probes.setdefault(probe["id"], {"raised": "GraderStopped", "message": "the check could not run"})
    result.seconds = time.monotonic() - started
    return result
