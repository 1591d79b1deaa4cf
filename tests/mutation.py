"""Mutation testing of the assignments: do the graded tests notice a changed reference solution?

For each assignment, every solution cell's answer (the lines between ``### BEGIN
SOLUTION`` and ``### END SOLUTION``) is parsed with :mod:`ast`, and *generic*
mutants are made from it, one small change each: an arithmetic, comparison or
boolean operator swapped, a constant changed (0/1, +-1, True/False, "-inf"/"inf"),
a keyword argument removed, two positional arguments swapped, a method replaced
by its opposite (``amax``/``amin``, ``tril``/``triu``, ...), a method call
replaced by its receiver, an operand dropped, a condition negated, a statement
dropped. The notebook is then run with each mutant in place of the reference —
its plain cells, the solution cells and every graded test cell (visible and
hidden tests), then the grader's own authoritative checks (``solutions/<assignment>/
grading.py``, the parts that decide points in ``scripts/grade``) — and a mutant is
*killed* when some graded cell or some authoritative part fails.

Speed: the cells are ``exec``-ed in long-lived worker processes (``torch`` is
imported once per worker, not once per mutant), the graded cells that use the
mutated code run first, and a mutant stops at its first failing graded cell.
Safety: a mutant that runs past its time limit is interrupted, and if that does
not stop it (a loop inside C code) its worker is killed and replaced; a mutant
that crashes its worker (a segfault, ``os._exit``) is recorded and the worker
replaced. Timeouts and crashes count as killed, and the report says how many.

Equivalent mutants (changes no test could notice, e.g. a constant that only
picks a block size when every block size gives the same result) are listed in
``tests/mutation_equivalent/<assignment>.txt``, one per line::

    <mutant id>  <one line: why no test can tell it from the reference>

They are left out of the kill rate. The report, with every surviving mutant as
a diff, goes to ``_build/mutation/<assignment>.md``. Usage::

    scripts/mutation-test                       # every assignment
    scripts/mutation-test 08-flash-attention    # one (or several)
    scripts/mutation-test --list 01-scaled-dot-product-attention   # the mutants, not run
    scripts/mutation-test --jobs 2 --min-score 90

This is a maintainer's tool, not part of the default test run
(``tests/test_mutation.py`` checks the tool itself on a tiny notebook).
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import hashlib
import multiprocessing
import os
import secrets
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
EQUIVALENT = REPO / "tests" / "mutation_equivalent"
REPORTS = REPO / "_build" / "mutation"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

# ------------------------------------------------------------------ the notebook as a program


@dataclass(frozen=True)
class Cell:
    """One code cell: ``kind`` is "plain", "solution" or "test"; ``source`` without solution markers."""

    name: str
    kind: str
    source: str
    regions: tuple[tuple[int, int], ...] = ()  # 1-based inclusive line ranges of the answer


def load_cells(notebook: Path) -> list[Cell]:
    """The notebook's code cells in order, as they run for the reference solution."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        name = meta.get("grade_id") or cell.get("id") or f"cell-{index}"
        kind = "test" if meta.get("grade") else "solution" if meta.get("solution") else "plain"
        lines, regions, start = [], [], None
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                start = len(lines) + 1
            elif line.strip() == END:
                regions.append((start, len(lines)))
                start = None
            else:
                lines.append(line)
        cells.append(Cell(name, kind, "\n".join(lines) + "\n", tuple(regions)))
    return cells


# ------------------------------------------------------------------ mutants

ARITHMETIC = {
    ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult, ast.FloorDiv],
    ast.FloorDiv: [ast.Div, ast.Mult], ast.Mod: [ast.FloorDiv], ast.Pow: [ast.Mult], ast.MatMult: [ast.Mult],
    ast.BitAnd: [ast.BitOr], ast.BitOr: [ast.BitAnd], ast.BitXor: [ast.BitOr],
    ast.LShift: [ast.RShift], ast.RShift: [ast.LShift],
}
COMPARISON = {
    ast.Lt: [ast.LtE, ast.GtE], ast.LtE: [ast.Lt, ast.Gt], ast.Gt: [ast.GtE, ast.LtE], ast.GtE: [ast.Gt, ast.Lt],
    ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn], ast.NotIn: [ast.In],
}
BUILTIN_OPPOSITES = {"max": "min", "min": "max", "any": "all", "all": "any"}
METHOD_OPPOSITES = {  # torch functions and tensor methods (called as attributes: torch.amax, x.amax)
    "amax": "amin", "amin": "amax", "max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum",
    "argmax": "argmin", "argmin": "argmax", "sum": "mean", "mean": "sum", "tril": "triu", "triu": "tril",
    "any": "all", "all": "any", "clamp_min": "clamp_max", "clamp_max": "clamp_min", "zeros": "ones",
    "ones": "zeros", "zeros_like": "ones_like", "ones_like": "zeros_like", "floor": "ceil", "ceil": "floor",
    "isfinite": "isinf", "isinf": "isfinite", "exp": "log", "log": "exp", "cumsum": "cumprod",
    "repeat_interleave": "repeat", "repeat": "repeat_interleave", "append": "extend", "float": "half",
    "logsumexp": "amax", "stack": "cat", "cat": "stack", "lower": "upper",
}
# Swapping the two arguments of these cannot change anything (min(a, b) == min(b, a), x.transpose(-2, -1)
# == x.transpose(-1, -2)): such swaps would only add equivalent mutants.
SYMMETRIC_CALLS = {"min", "max", "maximum", "minimum", "fmax", "fmin", "promote_types", "logaddexp", "transpose",
                   "swapaxes", "swapdims", "add", "mul", "eq", "ne", "hypot", "gcd", "lcm", "logical_and", "logical_or"}
# Modules whose functions are not "method calls on a value" (``torch.exp(x)`` cannot become ``torch``).
MODULE_ROOTS = {"torch", "F", "nn", "math", "np", "numpy", "os", "sys", "functools", "itertools", "random"}
# Removing these keywords changes nothing a CPU-only test run can see (the tensors are on the CPU anyway).
UNOBSERVABLE_KEYWORDS = {"device"}


@dataclass
class Mutant:
    notebook: str
    cell: str
    operator: str
    line: int  # in the cell's source (without markers)
    before: str  # the reference cell, unparsed
    after: str  # the mutated cell, unparsed
    source: str  # the whole mutated cell, ready to exec
    id: str = ""

    def diff(self) -> str:
        lines = difflib.unified_diff(self.before.splitlines(), self.after.splitlines(), lineterm="", n=1)
        return "\n".join(list(lines)[2:])


def _in_regions(node: ast.AST, regions) -> bool:
    start, stop = getattr(node, "lineno", 0), getattr(node, "end_lineno", 0)
    return any(a <= start and stop <= b for a, b in regions)


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            and isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and parent.body and parent.body[0] is node)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _number_variants(value):
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [v for v in dict.fromkeys([1 if value == 0 else 0, value + 1, value - 1]) if v != value]
    if isinstance(value, float):
        return [v for v in dict.fromkeys([1.0 if value == 0 else 0.0, value + 1.0, value * 2]) if v != value]
    return []


def _mutations(node: ast.AST, parent: ast.AST | None, inside_fstring: bool):
    """Yield ``(operator, replacement)`` for one node; the replacement is a new node or a list (statements)."""
    if isinstance(node, ast.BinOp):
        for op in ARITHMETIC.get(type(node.op), []):
            yield f"{type(node.op).__name__} -> {op.__name__}", ast.BinOp(node.left, op(), node.right)
        yield "drop right operand", node.left
        yield "drop left operand", node.right
    elif isinstance(node, ast.AugAssign):
        for op in ARITHMETIC.get(type(node.op), []):
            yield f"{type(node.op).__name__}= -> {op.__name__}=", ast.AugAssign(node.target, op(), node.value)
        yield "augmented assignment -> plain assignment", ast.Assign([node.target], node.value)
    elif isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) and not inside_fstring:
            for value in _number_variants(-node.operand.value):
                yield f"constant {-node.operand.value!r} -> {value!r}", ast.Constant(value)
        if not isinstance(node.op, ast.UAdd):
            yield f"drop {type(node.op).__name__}", node.operand
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in COMPARISON.get(type(op), []):
                ops = list(node.ops)
                ops[i] = new()
                yield f"{type(op).__name__} -> {new.__name__}", ast.Compare(node.left, ops, node.comparators)
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield f"{type(node.op).__name__} -> {other.__name__}", ast.BoolOp(other(), node.values)
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1:]
            yield f"drop operand {i + 1} of {type(node.op).__name__}", rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)
    elif isinstance(node, ast.IfExp):
        yield "negate condition", ast.IfExp(ast.UnaryOp(ast.Not(), node.test), node.body, node.orelse)
    elif isinstance(node, ast.Constant) and not inside_fstring:
        if not (isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub)):
            for value in _number_variants(node.value):
                yield f"constant {node.value!r} -> {value!r}", ast.Constant(value)
        if node.value in ("-inf", "inf"):
            yield f"constant {node.value!r} -> opposite", ast.Constant("inf" if node.value == "-inf" else "-inf")
    elif isinstance(node, ast.Call):
        func = node.func
        new_func = copy.copy(func)
        if isinstance(func, ast.Attribute) and func.attr in METHOD_OPPOSITES:
            new_func.attr = METHOD_OPPOSITES[func.attr]
            yield f"{func.attr} -> {new_func.attr}", ast.Call(new_func, node.args, node.keywords)
        elif isinstance(func, ast.Name) and func.id in BUILTIN_OPPOSITES:
            new_func.id = BUILTIN_OPPOSITES[func.id]
            yield f"{func.id} -> {new_func.id}", ast.Call(new_func, node.args, node.keywords)
        for i, keyword in enumerate(node.keywords):
            if keyword.arg is not None and keyword.arg not in UNOBSERVABLE_KEYWORDS:
                yield f"drop keyword {keyword.arg}=", ast.Call(func, node.args, node.keywords[:i] + node.keywords[i + 1:])
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        for i in range(len(node.args) - 1 if called not in SYMMETRIC_CALLS else 0):
            if not any(isinstance(a, ast.Starred) for a in node.args[i:i + 2]):
                args = list(node.args)
                args[i], args[i + 1] = args[i + 1], args[i]
                yield f"swap arguments {i + 1} and {i + 2}", ast.Call(func, args, node.keywords)
        if isinstance(func, ast.Attribute) and _root_name(func) not in MODULE_ROOTS:
            yield f"call .{func.attr}(...) -> its receiver", func.value
    if isinstance(node, (ast.If, ast.While)):
        yield "negate condition", type(node)(ast.UnaryOp(ast.Not(), node.test), node.body, node.orelse)
    if isinstance(node, ast.stmt) and not _is_docstring(node, parent) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Pass)):
        yield f"drop statement {type(node).__name__}", ast.Pass()
    if isinstance(node, ast.Break):
        yield "break -> continue", ast.Continue()
    elif isinstance(node, ast.Continue):
        yield "continue -> break", ast.Break()


def _walk(node, regions, path=(), parent=None, inside_fstring=False):
    """Yield ``(path, node, parent, inside_fstring)`` for every node of the answer regions."""
    if _in_regions(node, regions):
        yield path, node, parent, inside_fstring
    for field_name, value in ast.iter_fields(node):
        children = value if isinstance(value, list) else [value]
        for index, child in enumerate(children):
            if isinstance(child, ast.AST):
                step = (field_name, index if isinstance(value, list) else None)
                yield from _walk(child, regions, (*path, step), node, inside_fstring or isinstance(node, ast.JoinedStr))


def _replace(tree: ast.AST, path, replacement) -> ast.AST:
    tree = copy.deepcopy(tree)
    node = tree
    for field_name, index in path[:-1]:
        node = getattr(node, field_name) if index is None else getattr(node, field_name)[index]
    field_name, index = path[-1]
    if index is None:
        setattr(node, field_name, replacement)
    else:
        getattr(node, field_name)[index] = replacement
    return ast.fix_missing_locations(tree)


def make_mutants(notebook: Path, cells: list[Cell]) -> list[Mutant]:
    """Every generic mutant of every answer region of the notebook, each with a stable id."""
    mutants, seen = [], set()
    for cell in cells:
        if cell.kind != "solution" or not cell.regions:
            continue
        tree = ast.parse(cell.source)
        original = ast.unparse(tree)
        lines = cell.source.splitlines()
        for path, node, parent, inside_fstring in _walk(tree, cell.regions):
            if not path:
                continue
            for operator, replacement in _mutations(node, parent, inside_fstring):
                try:
                    mutated = _replace(tree, path, replacement)
                    source = ast.unparse(mutated)
                    compile(source, "<mutant>", "exec")
                except (SyntaxError, ValueError, TypeError, AttributeError):
                    continue
                if source == original or (cell.name, source) in seen:
                    continue
                seen.add((cell.name, source))
                line = node.lineno
                mutant = Mutant(notebook.name, cell.name, operator, line, original, source, source)
                key = f"{notebook.name}|{cell.name}|{operator}|{lines[line - 1].strip()}|{mutant.diff()}"
                mutant.id = hashlib.sha1(key.encode()).hexdigest()[:10]
                mutants.append(mutant)
    return mutants


# ------------------------------------------------------------------ running mutants in workers


class MutantTimeout(BaseException):
    """Raised inside a worker when a mutant runs past its time limit (a BaseException: tests cannot catch it)."""


def _worker(connection):
    """Run jobs from ``connection``: each is a list of cells to exec in a fresh namespace."""
    import contextlib
    import io
    import random
    import signal

    os.environ.setdefault("MPLBACKEND", "Agg")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    def on_alarm(signum, frame):
        raise MutantTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    import torch  # noqa: F401  (imported once per worker; the cells import it again for free)

    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        cells, time_limit, stop_at_first, cwd, authority = job
        os.chdir(cwd)  # like nbgrader: the notebook's own folder
        torch.manual_seed(0)
        random.seed(0)
        namespace = {"__name__": "__main__", "display": print}
        result = {"killed_by": None, "error": "", "seconds": 0.0, "status": "survived", "failed": {}}
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                for name, kind, source in cells:
                    try:
                        exec(compile(source, f"<cell {name}>", "exec"), namespace)
                    except MutantTimeout:
                        raise
                    except BaseException as error:  # noqa: BLE001  (SystemExit, KeyboardInterrupt included)
                        if kind == "test":
                            message = "".join(traceback.format_exception_only(type(error), error)).strip()
                            result["failed"][name] = message
                            if result["killed_by"] is None:
                                result.update(status="killed", killed_by=name, error=message[-300:])
                            if stop_at_first:
                                break
            if authority is not None and (result["killed_by"] is None or not stop_at_first):
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    for grade_id, message in _authoritative_failures(authority, cells, namespace).items():
                        result["failed"].setdefault(f"authority:{grade_id}", message)
                        if result["killed_by"] is None:
                            result.update(status="killed", killed_by=f"authority:{grade_id}", error=message[-300:])
        except MutantTimeout:
            result.update(status="timeout", error=f"ran past {time_limit:.0f} s")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result["seconds"] = time.perf_counter() - start
        connection.send(result)


_AUTHORITIES = {}


def _authoritative_failures(authority, cells, namespace):
    """The grader's own checks (solutions/<assignment>/grading.py) on the mutant: {grade_id: message}.

    The same parts, drivers and comparisons as ``scripts/grade``, run in this process (no sandbox:
    the mutants are ours). ``authority`` is (notebook path, seed).
    """
    import nbformat

    from attnlab_grader.authority import Authority
    from attnlab_grader.runner import run_probe

    if authority not in _AUTHORITIES:
        _AUTHORITIES[authority] = Authority.load(Path(authority[0]), authority[1])
    checks = _AUTHORITIES[authority]
    if checks is None:
        return {}
    reports = {probe["id"]: run_probe(namespace, probe) for probe in checks.probes}
    notebook = nbformat.v4.new_notebook()
    for name, kind, source in cells:
        cell = nbformat.v4.new_code_cell(source)  # instructor cells keep metadata, as in a rebuilt submission
        cell.metadata["nbgrader"] = {"solution": kind == "solution", "grade": kind == "test", "grade_id": name}
        notebook.cells.append(cell)
    return {g: v.message for g, v in checks.judge(reports, notebook).items() if not v.passed}


class Worker:
    """A worker process that can be replaced when a mutant hangs it or kills it."""

    grace_seconds = 15.0  # past its time limit a job gets this long before its worker is killed

    def __init__(self):
        self.context = multiprocessing.get_context("spawn")
        self.start()

    def start(self):
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def run(self, cells, time_limit: float, stop_at_first: bool = True, cwd: Path = REPO, authority=None) -> dict:
        """Run one job; ``authority`` = (notebook path, seed) also runs the grader's own checks."""
        job = (cells, time_limit, stop_at_first, str(cwd), authority)
        try:
            self.connection.send(job)
        except (BrokenPipeError, OSError):
            self.restart()
            self.connection.send(job)
        grace = time_limit + self.grace_seconds  # the worker's own alarm comes first; this catches a hang in C code
        if self.connection.poll(grace):
            try:
                return self.connection.recv()
            except (EOFError, OSError):  # the worker died while running the mutant
                self.restart()
                return {"status": "crashed", "killed_by": None, "error": "the worker process died", "seconds": 0.0,
                    "failed": {}}
        self.restart()
        return {"status": "timeout", "killed_by": None, "error": f"hung past {grace:.0f} s: worker killed",
                "seconds": grace, "failed": {}}

    def restart(self):
        self.stop()
        self.start()

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.connection.close()


# ------------------------------------------------------------------ which tests to run first


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines at top level, names it uses anywhere)."""
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return defined, used


def run_order(cells: list[Cell], mutated: str) -> list[Cell]:
    """The cells in the order to run them when ``mutated`` changes: every non-test cell in notebook
    order, then the test cells that use the mutated code (directly or through other cells), then the rest."""
    names = {cell.name: _names(cell.source) for cell in cells}
    affected = set(names[mutated][0])
    changed = True
    while changed:
        changed = False
        for cell in cells:
            defined, used = names[cell.name]
            if cell.kind != "test" and used & affected and not defined <= affected:
                affected |= defined
                changed = True
    first = [c for c in cells if c.kind == "test" and names[c.name][1] & affected]
    rest = [c for c in cells if c.kind == "test" and c not in first]
    return [c for c in cells if c.kind != "test"] + first + rest


def _job(cells: list[Cell], replace: dict[str, str] | None = None):
    replace = replace or {}
    return [(c.name, c.kind, replace.get(c.name, c.source)) for c in cells]


# ------------------------------------------------------------------ one assignment


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, timeout, crashed, survived, equivalent
    killed_by: str | None = None
    error: str = ""
    seconds: float = 0.0


@dataclass
class AssignmentResult:
    assignment: str
    outcomes: list[Outcome] = field(default_factory=list)
    stale_equivalents: list[str] = field(default_factory=list)
    baseline_seconds: float = 0.0
    seconds: float = 0.0

    def count(self, *statuses) -> int:
        return sum(o.status in statuses for o in self.outcomes)

    @property
    def score(self) -> float:
        judged = len(self.outcomes) - self.count("equivalent")
        return 100.0 * self.count("killed", "timeout", "crashed") / judged if judged else 100.0


def read_equivalents(path: Path) -> dict[str, str]:
    """``{mutant id: reason}`` from a file of ``<id>  <reason>`` lines (``#`` starts a comment)."""
    if not path.exists():
        return {}
    equivalents = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            mutant_id, _, reason = line.partition(" ")
            if not reason.strip():
                raise ValueError(f"{path}: mutant {mutant_id} is listed without a reason")
            equivalents[mutant_id] = reason.strip()
    return equivalents


def run_assignment(assignment: str, workers: list[Worker], solutions: Path = SOLUTIONS,
                   equivalents_dir: Path = EQUIVALENT, time_limit: float | None = None,
                   log=print) -> AssignmentResult:
    """Mutate every answer of ``assignment`` and run its graded tests against each mutant."""
    started = time.perf_counter()
    result = AssignmentResult(assignment)
    equivalents = read_equivalents(equivalents_dir / f"{assignment}.txt")
    generated = set()
    for notebook in sorted((solutions / assignment).glob("*.ipynb")):
        cells = load_cells(notebook)
        mutants = make_mutants(notebook, cells)
        authority = (str(notebook), 20261127) if notebook.with_name("grading.py").exists() else None
        generated |= {m.id for m in mutants}
        orders = {}
        for cell in {m.cell for m in mutants}:
            order = run_order(cells, cell)
            baseline = workers[0].run(_job(order), time_limit=600, cwd=notebook.parent, authority=authority)
            if baseline["status"] != "survived":  # the reordered reference must pass, or keep notebook order
                order = cells
                baseline = workers[0].run(_job(order), time_limit=600, cwd=notebook.parent, authority=authority)
                if baseline["status"] != "survived":
                    raise RuntimeError(f"{notebook}: the reference solution fails {baseline['killed_by']}: "
                                       f"{baseline['error']}")
            orders[cell] = order
            result.baseline_seconds = max(result.baseline_seconds, baseline["seconds"])
        limit = time_limit or max(20.0, 5 * result.baseline_seconds)
        log(f"{assignment}/{notebook.name}: {len(mutants)} mutants, reference runs in "
            f"{result.baseline_seconds:.1f} s, limit {limit:.0f} s per mutant, {len(workers)} worker(s)")
        pending = [m for m in mutants if m.id not in equivalents]
        result.outcomes += [Outcome(m, "equivalent", error=equivalents[m.id]) for m in mutants if m.id in equivalents]
        done = _run_many(pending, orders, workers, limit, log, notebook.parent, authority)
        result.outcomes += done
    result.stale_equivalents = sorted(set(equivalents) - generated)
    result.seconds = time.perf_counter() - started
    return result


def _run_many(mutants: list[Mutant], orders, workers: list[Worker], limit: float, log, cwd: Path,
              authority=None) -> list[Outcome]:
    """Run the mutants on the workers, one thread per worker."""
    from concurrent.futures import ThreadPoolExecutor
    from queue import Queue

    queue: Queue = Queue()
    for worker in workers:
        queue.put(worker)
    outcomes = []

    def one(mutant: Mutant) -> Outcome:
        worker = queue.get()
        try:
            raw = worker.run(_job(orders[mutant.cell], {mutant.cell: mutant.source}), limit, cwd=cwd,
                             authority=authority)
        finally:
            queue.put(worker)
        outcome = Outcome(mutant, raw["status"], raw["killed_by"], raw["error"], raw["seconds"])
        if outcome.status == "survived":
            log(f"  survived {mutant.id} {mutant.cell}: {mutant.operator} (line {mutant.line})")
        return outcome

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        outcomes = list(pool.map(one, mutants))
    return outcomes


# ------------------------------------------------------------------ reports


def write_report(result: AssignmentResult, reports: Path = REPORTS) -> Path:
    killed = result.count("killed")
    lines = [
        f"# Mutation testing: {result.assignment}", "",
        f"Kill rate **{result.score:.1f}%**: {len(result.outcomes)} mutants of the reference solution; "
        f"{killed} killed by a failing graded test, {result.count('timeout')} by running past the time limit, "
        f"{result.count('crashed')} by crashing; {result.count('survived')} survived; "
        f"{result.count('equivalent')} equivalent (not counted). "
        f"Reference run {result.baseline_seconds:.1f} s; this report took {result.seconds:.0f} s.", "",
        "Reproduce with `scripts/mutation-test " + result.assignment + "`.", "",
        "| mutated cell | mutants | killed | survived | equivalent |", "|---|---|---|---|---|",
    ]
    for cell in dict.fromkeys(o.mutant.cell for o in result.outcomes):
        mine = [o for o in result.outcomes if o.mutant.cell == cell]
        lines.append(f"| {cell} | {len(mine)} | {sum(o.status in ('killed', 'timeout', 'crashed') for o in mine)} "
                     f"| {sum(o.status == 'survived' for o in mine)} | {sum(o.status == 'equivalent' for o in mine)} |")
    catchers = {}
    for o in result.outcomes:
        if o.killed_by:
            catchers[o.killed_by] = catchers.get(o.killed_by, 0) + 1
    lines += ["", "Graded cells that killed mutants first: "
              + ", ".join(f"{name} {n}" for name, n in sorted(catchers.items(), key=lambda x: -x[1])), ""]
    survivors = [o for o in result.outcomes if o.status == "survived"]
    lines += ["## Surviving mutants", "", "None." if not survivors else
              "Each is a change to the reference that every graded test accepts. Either a test should "
              "catch it, or it is equivalent: then list its id with a reason in "
              f"`tests/mutation_equivalent/{result.assignment}.txt`.", ""]
    for o in survivors:
        lines += [f"### `{o.mutant.id}` {o.mutant.cell}: {o.mutant.operator} (line {o.mutant.line})", "",
                  "```diff", o.mutant.diff(), "```", ""]
    equivalent = [o for o in result.outcomes if o.status == "equivalent"]
    if equivalent:
        lines += ["## Equivalent mutants (listed, not counted)", ""]
        for o in equivalent:
            lines += [f"### `{o.mutant.id}` {o.mutant.cell}: {o.mutant.operator}", "", o.error, "",
                      "```diff", o.mutant.diff(), "```", ""]
    if result.stale_equivalents:
        lines += ["## Stale entries", "", "Listed as equivalent but no longer generated (remove them): "
                  + ", ".join(result.stale_equivalents), ""]
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / f"{result.assignment}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def check_known_bugs(assignment: str, worker: Worker) -> list[str]:
    """Run each known bug (tests/known_bugs/<assignment>/) through all graded cells; return report lines.

    A quick check while writing tests: the nbgrader round trip (tests/test_grading.py) is the real one.
    """
    sys.path.insert(0, str(REPO / "tests"))
    from course import known_bugs

    lines = [f"{assignment}: known bugs (graded cells each fails; feedback phrases missing from the errors)"]
    for notebook in sorted((SOLUTIONS / assignment).glob("*.ipynb")):
        cells = load_cells(notebook)
        caught = set()
        for bug in known_bugs(assignment):
            raw = worker.run(_job(cells, {k: v + "\n" for k, v in bug.cells.items()}), 600, stop_at_first=False,
                             cwd=notebook.parent)
            errors = "\n".join(raw["failed"].values())
            missing = [phrase for phrase in bug.feedback if phrase not in errors]
            caught |= set(raw["failed"])
            verdict = ", ".join(sorted(raw["failed"])) or f"NOTHING FAILS ({raw['status']})"
            lines.append(f"  {bug.name}: {verdict}" + (f"  MISSING FEEDBACK {missing}" if missing else ""))
        idle = [c.name for c in cells if c.kind == "test" and c.name not in caught]
        lines.append(f"  graded cells no known bug fails: {idle or 'none'}")
    return lines


def check_known_bugs_across_seeds(assignment: str, worker: Worker, seeds: list[int]) -> list[str]:
    """Which known bugs pass every authoritative check for some secret seed? Report lines.

    ``scripts/grade`` draws its cases from a new secret seed in every run, so a case that catches a
    bug only for some shapes (a transpose with one head is still contiguous, say) lets that bug keep
    full marks by chance. Only the solution cells run (the notebook's own tests are deterministic:
    ``tests/test_grading.py`` covers them); the grader's checks run as in :func:`_authoritative_failures`.
    """
    sys.path.insert(0, str(REPO / "tests"))
    from course import known_bugs

    lines = [f"{assignment}: known bugs under {len(seeds)} secret seeds"]
    for notebook in sorted((SOLUTIONS / assignment).glob("*.ipynb")):
        cells = [c for c in load_cells(notebook) if c.kind != "test"]
        for seed in seeds:
            raw = worker.run(_job(cells), 120, stop_at_first=False, cwd=notebook.parent, authority=(str(notebook), seed))
            if raw["failed"] or raw["status"] != "survived":
                lines.append(f"  REFERENCE FAILS for seed {seed}: {raw['failed'] or raw['error']}")
        for bug in known_bugs(assignment):
            escaped = []
            for seed in seeds:
                raw = worker.run(_job(cells, {k: v + "\n" for k, v in bug.cells.items()}), 60, stop_at_first=False,
                                 cwd=notebook.parent, authority=(str(notebook), seed))
                if raw["status"] == "survived" and not raw["failed"]:  # a timeout or crash loses points too
                    escaped.append(seed)
            if escaped:
                lines.append(f"  {bug.name}: keeps full marks for seeds {escaped}")
    if len(lines) == 1:
        lines.append("  every known bug loses points for every seed")
    return lines


def main(argv=None) -> int:
    assignments_all = sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and p.name[:2].isdigit())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help=f"default: all ({', '.join(assignments_all)})")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 5x the reference run, >= 20)")
    parser.add_argument("--list", action="store_true", help="print the mutants (id, cell, change) and exit")
    parser.add_argument("--min-score", type=float, help="exit 1 if an assignment's kill rate is below this (%%)")
    parser.add_argument("--known-bugs", action="store_true",
                        help="instead: run each known bug through every graded cell (a quick preview of test_grading)")
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="with --known-bugs: grade each known bug with the grader's own checks under N secret "
                             "seeds and list those that keep full marks for some seed")
    args = parser.parse_args(argv)
    assignments = args.assignments or assignments_all
    unknown = set(assignments) - set(assignments_all)
    if unknown:
        parser.error(f"unknown assignments {sorted(unknown)}; known: {assignments_all}")
    if args.list:
        for assignment in assignments:
            for notebook in sorted((SOLUTIONS / assignment).glob("*.ipynb")):
                for m in make_mutants(notebook, load_cells(notebook)):
                    print(f"{m.id} {assignment}/{m.notebook} {m.cell}:{m.line} {m.operator}")
        return 0
    if args.known_bugs:
        worker = Worker()
        try:
            seeds = [secrets.randbits(62) for _ in range(args.seeds or 0)]
            for assignment in assignments:
                if seeds:
                    print("\n".join(check_known_bugs_across_seeds(assignment, worker, seeds)), flush=True)
                else:
                    print("\n".join(check_known_bugs(assignment, worker)))
        finally:
            worker.stop()
        return 0
    workers = [Worker() for _ in range(max(1, args.jobs))]
    summary = ["| assignment | mutants | killed | survived | equivalent | kill rate | seconds |", "|---|---|---|---|---|---|---|"]
    failed = []
    try:
        for assignment in assignments:
            result = run_assignment(assignment, workers, time_limit=args.timeout)
            path = write_report(result)
            killed = result.count("killed", "timeout", "crashed")
            summary.append(f"| {assignment} | {len(result.outcomes)} | {killed} | {result.count('survived')} "
                           f"| {result.count('equivalent')} | {result.score:.1f}% | {result.seconds:.0f} |")
            print(f"{assignment}: kill rate {result.score:.1f}% ({killed} killed, {result.count('survived')} survived, "
                  f"{result.count('equivalent')} equivalent) in {result.seconds:.0f} s -> {path.relative_to(REPO)}")
            if args.min_score is not None and result.score < args.min_score:
                failed.append(assignment)
    finally:
        for worker in workers:
            worker.stop()
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "summary.md").write_text("# Mutation testing\n\n" + "\n".join(summary) + "\n")
    print("\n".join(summary))
    if failed:
        print(f"below {args.min_score}%: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
