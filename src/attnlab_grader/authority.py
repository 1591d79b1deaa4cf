"""The checks that decide points, run where the learner's code cannot reach them.

Inside its own notebook a learner's code runs before the tests and can replace anything the
tests use (``torch.allclose``, ``torch.randn``, IPython's error reporting, the tests' inputs).
So points are decided here, in the grader's process, by *parts* (one per graded cell) made of
*cases*:

* a case's inputs are drawn at grading time from a secret seed;
* a small *driver* function calls the learner's code on them inside the sandbox (after the
  notebook has run there); what comes back crosses the sandbox wall as plain data (see
  ``runner.encode``), never as code or pickles;
* the same driver runs here on the reference solution (the source notebook's own cells) with
  pristine copies of the inputs, and the two results are compared: the exact type
  (``torch.Tensor``), shape, dtype and device first, then the values with
  ``torch.testing.assert_close`` at the case's tolerances; the inputs must come back unchanged;
* calls to operators a task forbids are detected while the learner's code runs (the aten
  operators it dispatches) and in its source (names and ``getattr`` strings).

Each assignment states its parts in ``solutions/<assignment>/grading.py``, next to the notebook
they grade (it is never released to learners, see ``nbgrader_config.py``)::

    from attnlab_grader.authority import Case, Part

    def drive_softmax(learner, inputs):          # self-contained: it is sent to the sandbox as source
        return learner["stable_softmax"](inputs["x"], dim=inputs["dim"])

    def parts(generator):                        # a torch.Generator seeded with the secret
        x = torch.randn(4, 7, generator=generator) * 5
        return [Part("test_stable_softmax_hidden", [Case(drive_softmax, {"x": x, "dim": 0})],
                     forbidden_ops=SOFTMAX_OPS, answer_cells=("stable_softmax",))]

A part passes when every one of its cases passes; it is then worth its cell's points.
"""

import ast
import copy
import importlib.util
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
import torch

from attnlab.testing import SDPA_OPS, SOFTMAX_OPS, tensor_problem
from attnlab_grader.runner import Opaque, Returned, decode, encode, unwrap

OP_NAMES = {**{op: "a softmax (torch.softmax, F.softmax, Tensor.softmax)" for op in SOFTMAX_OPS},
            **{op: "F.scaled_dot_product_attention" for op in SDPA_OPS}}


@dataclass(frozen=True)
class Case:
    """One call of the learner's code: driver(learner namespace, inputs) -> outputs."""

    driver: Callable
    inputs: dict
    label: str = ""  # what this case tries, in the learner's words ("T != S, a (B, 1, T, S) mask")
    atol: float = 1e-5
    rtol: float = 1e-4
    exact_dtype: bool = True
    raises: str | None = None  # the exception the learner's code must raise, by name
    unchanged: bool = True  # the inputs must come back exactly as they were


@dataclass(frozen=True)
class Part:
    """The authoritative check of one graded cell."""

    grade_id: str
    cases: tuple
    forbidden_ops: frozenset = frozenset()
    forbidden_names: frozenset = frozenset()
    answer_cells: tuple = ()  # grade_ids of the solution cells whose source must avoid forbidden names

    def __post_init__(self):
        object.__setattr__(self, "cases", tuple(self.cases))


@dataclass
class Verdict:
    grade_id: str
    passed: bool
    message: str = ""


def describe(value):
    if isinstance(value, Returned):
        return f"a {value.kind} of shape {tuple(value.tensor.shape)}"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Opaque):
        return f"a {value.kind}"
    return f"a {type(value).__name__} ({value!r:.60})"


def compare(expected, actual, case, where="the result"):
    """None if ``actual`` (what came back) matches ``expected`` (the reference's), else a sentence."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, Returned):
            return f"{where} should be a tensor, got {describe(actual)}"
        device = torch.device(actual.device) if actual.device in ("cpu", str(expected.device)) else None
        if device is None:
            return f"{where} is on {actual.device}, expected {expected.device}"
        return tensor_problem(actual.tensor, expected, where, exact_dtype=case.exact_dtype, atol=case.atol,
                              rtol=case.rtol, kind=actual.kind)
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            return f"{where} should be a tuple of {len(expected)}, got {describe(actual)}"
        if len(actual) != len(expected):
            return f"{where} should have {len(expected)} items, got {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            problem = compare(e, a, case, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            return f"{where} should have the keys {sorted(expected)}, got {describe(actual)}"
        for key in expected:
            problem = compare(expected[key], actual[key], case, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    if isinstance(expected, float):
        if not isinstance(actual, (int, float)) or isinstance(actual, bool) or not (
                math.isclose(actual, expected, rel_tol=case.rtol, abs_tol=case.atol)
                or (math.isnan(expected) and math.isnan(actual))):
            return f"{where} is {describe(actual)}, expected {expected!r}"
        return None
    if type(actual) is not type(expected) or actual != expected:
        return f"{where} is {describe(actual)}, expected {expected!r}"
    return None


def inputs_changed(pristine, after, path="input"):
    """The name of the first input the learner's code changed in place, or None."""
    if isinstance(pristine, torch.Tensor):
        if not isinstance(after, Returned) or after.tensor.shape != pristine.shape \
                or after.tensor.dtype != pristine.dtype or not torch.equal(after.tensor, pristine):
            return path
        return None
    if isinstance(pristine, dict):
        if not isinstance(after, dict):
            return path
        for key, value in pristine.items():
            changed = inputs_changed(value, after.get(key), key if path == "input" else f"{path}[{key!r}]")
            if changed:
                return changed
        return None
    if isinstance(pristine, (tuple, list)):
        if not isinstance(after, (tuple, list)) or len(after) != len(pristine):
            return path
        for i, (p, a) in enumerate(zip(pristine, after)):
            changed = inputs_changed(p, a, f"{path}[{i}]")
            if changed:
                return changed
    return None


def forbidden_in_source(source, names):
    """Forbidden library names in a piece of learner code.

    Attribute access (``F.softmax``, ``x.softmax``), imports from torch or attnlab (``from torch
    import softmax``, ``from attnlab.diagnose import ...`` where ``diagnose`` is a forbidden name)
    and strings that name them (``getattr(F, "softmax")``). Bare names are not counted: the
    learner's own function may share a library function's name.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("torch", "attnlab"):
            found.update(alias.name for alias in node.names if alias.name in names)
            found.update(part for part in node.module.split(".") if part in names)
        elif isinstance(node, ast.Import):
            found.update(part for alias in node.names for part in alias.name.split(".") if part in names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.add(node.value)
    return found


def reference_namespace(notebook):
    """The source notebook's own code (its solution, not its tests), run here: the reference."""
    namespace = {"__name__": "__reference__"}
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and not (meta.get("grade") and not meta.get("solution")):
            exec(compile(cell.source, f"<reference {meta.get('grade_id', cell.get('id'))}>", "exec"), namespace)
    return namespace


def load_spec(path):
    spec = importlib.util.spec_from_file_location(f"grading_{path.parent.name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Authority:
    """The authoritative checks of one notebook for one grading run (one secret seed)."""

    parts: list
    cases: dict = field(default_factory=dict)  # case id -> (part, case)
    expected: dict = field(default_factory=dict)  # case id -> the reference's outputs, or ("raises", name)
    probes: list = field(default_factory=list)  # what is sent to the sandbox

    @classmethod
    def load(cls, source_notebook, seed):
        """The checks in ``grading.py`` beside ``source_notebook``, or None if it has none."""
        spec_path = Path(source_notebook).with_name("grading.py")
        if not spec_path.exists():
            return None
        notebook = nbformat.read(source_notebook, as_version=4)
        grade_ids = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in notebook.cells}
        generator = torch.Generator().manual_seed(seed)
        parts = [p for p in load_spec(spec_path).parts(generator) if p.grade_id in grade_ids]
        authority = cls(parts)
        reference = reference_namespace(notebook)
        for part in parts:
            for n, case in enumerate(part.cases):
                case_id = f"{part.grade_id}/{n}"
                authority.cases[case_id] = (part, case)
                try:
                    outputs = case.driver(reference, copy.deepcopy(case.inputs))
                    authority.expected[case_id] = ("returns", unwrap(decode(encode(outputs))))
                except Exception as error:
                    if case.raises is None or type(error).__name__ != case.raises:
                        raise RuntimeError(f"grading.py: the reference fails its own case {case_id}: "
                                           f"{type(error).__name__}: {error}") from error
                    authority.expected[case_id] = ("raises", case.raises)
                if case.raises and authority.expected[case_id][0] != "raises":
                    raise RuntimeError(f"grading.py: case {case_id} expects {case.raises}, but the reference returns")
                authority.probes.append({"id": case_id, "name": case.driver.__name__,
                                         "driver": inspect.getsource(case.driver), "inputs": encode(case.inputs)})
        return authority

    def judge(self, reports, learner_notebook):
        """A Verdict per part, from the sandbox's reports and the learner's rebuilt notebook."""
        sources = {}
        for cell in learner_notebook.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type == "code" and (meta.get("solution") or not meta):
                sources.setdefault(meta.get("grade_id", "(added cells)"), []).append(cell.source)
        verdicts = {}
        for part in self.parts:
            verdicts[part.grade_id] = self.judge_part(part, reports, sources)
        return verdicts

    def judge_part(self, part, reports, sources):
        if part.forbidden_names:
            for cell in (*part.answer_cells, "(added cells)"):
                used = forbidden_in_source("\n".join(sources.get(cell, [])), part.forbidden_names)
                if used:
                    return Verdict(part.grade_id, False, f"your code uses {', '.join(sorted(used))}, "
                                                         "which the task forbids")
        for n, case in enumerate(part.cases):
            case_id = f"{part.grade_id}/{n}"
            problem = self.judge_case(case, case_id, reports.get(case_id))
            if problem:
                label = f" ({case.label})" if case.label else ""
                return Verdict(part.grade_id, False, f"{problem}{label}")
        return Verdict(part.grade_id, True)

    def judge_case(self, case, case_id, report):
        if not isinstance(report, dict):
            return "the grader's check did not run"
        try:
            forbidden = sorted(set(report.get("ops", [])) & self.cases[case_id][0].forbidden_ops)
        except TypeError:
            forbidden = []
        if forbidden:
            return f"your code calls {OP_NAMES.get(forbidden[0], forbidden[0])}, which the task forbids"
        kind, expected = self.expected[case_id]
        raised = report.get("raised")
        if kind == "raises":
            if raised != expected:
                got = f"raised {raised}: {report.get('message', '')}" if raised else "returned normally"
                return f"should raise {expected}, but {got}"
        elif raised:
            if raised == "GraderStopped":
                return f"the check could not finish: {report.get('message', '')}"
            return f"raised {raised}: {report.get('message', '')}"
        else:
            try:
                outputs = decode(report.get("outputs"))
            except (ValueError, KeyError, TypeError) as error:
                return f"what came back could not be read ({error})"
            problem = compare(expected, outputs, case)
            if problem:
                return problem
        if case.unchanged:
            try:
                changed = inputs_changed(case.inputs, decode(report.get("inputs_after")))
            except (ValueError, KeyError, TypeError):
                changed = "input"
            if changed:
                return f"your code changed its input `{changed}` in place"
        return None
