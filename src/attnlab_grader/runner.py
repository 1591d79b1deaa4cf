"""Runs one learner's notebook inside the sandbox: the only grader code the learner's code meets.

The grader starts ``python runner.py`` in a fresh sandbox, writes one JSON line on stdin
(the *request*) and reads JSON lines from stdout (the *events*). Everything else the process
writes (the learner's ``os.system`` output, C-level prints, warnings of the runner itself) goes
to stderr, which the grader drains and discards. Nothing here is trusted by the grader: it
parses every event defensively, enforces every time and size limit from outside, and (for the
authoritative checks) compares values in its own process.

Request::

    {"notebook_name": "attention.ipynb",      # written to the working directory, as a learner has it
     "notebook": {...},                       # the rebuilt notebook (nbformat 4 JSON)
     "cells": [{"index": 3, "replay": false}, ...],   # code cells to run, in order
     "output_bytes_per_cell": 262144,
     "probes": [{"id", "name", "driver", "inputs"}, ...]}   # authoritative calls, see authority.py

Events, one JSON object per line::

    {"event": "ready"}
    {"event": "start", "index": 3}
    {"event": "done", "index": 3, "execution_count": 2, "outputs": [...nbformat outputs...]}
    {"event": "start", "index": "probe:<id>"}
    {"event": "probe", "id": "<id>", "report": {"outputs" | "raised", "inputs_after", "ops"}}
    {"event": "finished"}

After the request, stdin stays open as a command channel: a line ``interrupt`` raises
KeyboardInterrupt in the running cell, as Jupyter's interrupt button does (a cell that
ignores it is killed from outside).

This module imports only the standard library and IPython, so the sandbox needs nothing else
of the grader.
"""

import json
import os
import signal
import sys
import threading


def emit(channel, event):
    channel.write(json.dumps(event, default=repr) + "\n")
    channel.flush()


class CellOutputs:
    """The outputs of one cell, in order, with stream text merged and capped in bytes."""

    def __init__(self, limit):
        self.items = []
        self.limit = limit
        self.used = 0
        self.truncated = False

    def _room(self, size):
        if self.used + size <= self.limit:
            self.used += size
            return True
        if not self.truncated:
            self.truncated = True
            self.items.append({"output_type": "stream", "name": "stdout",
                               "text": f"\n[output truncated: more than {self.limit} bytes]\n"})
        return False

    def stream(self, name, text):
        if not text or not self._room(len(text.encode("utf-8", "replace"))):
            return
        last = self.items[-1] if self.items else None
        if last and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.items.append({"output_type": "stream", "name": name, "text": text})

    def rich(self, output_type, data, metadata, execution_count=None):
        size = len(json.dumps(data, default=repr))
        if not self._room(size):
            return
        output = {"output_type": output_type, "data": data, "metadata": metadata or {}}
        if output_type == "execute_result":
            output["execution_count"] = execution_count
        self.items.append(output)

    def error(self, ename, evalue, traceback):
        text = "\n".join(traceback)
        if not self._room(len(text)):
            traceback = traceback[:1] + ["[traceback truncated]"] + traceback[-1:]
        self.items.append({"output_type": "error", "ename": ename, "evalue": evalue,
                           "traceback": traceback})


class Stream:
    """A text stream (sys.stdout or sys.stderr) that appends to the current cell's outputs."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, runner, name):
        self.runner = runner
        self.name = name

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.runner.current.stream(self.name, text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("this stream has no file descriptor")

    def readable(self):
        return False

    def writable(self):
        return True


class NoInput:
    """sys.stdin: notebooks cannot ask for input while they run unattended."""

    def readline(self, *args):
        raise RuntimeError("input() is not available: the notebook runs without a person at the keyboard")

    read = readline

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("stdin is not available")


def make_shell(runner):
    """An IPython shell whose tracebacks, displays and results land in the current cell's outputs."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    class CellDisplayHook(DisplayHook):
        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            runner.current.rich("execute_result", format_dict, md_dict, self.shell.execution_count - 1)

        def finish_displayhook(self):
            self._is_active = False

    class CellDisplayPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            runner.current.rich("display_data", data, metadata)

        def clear_output(self, wait=False):
            pass

    class NotebookShell(InteractiveShell):
        displayhook_class = CellDisplayHook
        display_pub_class = CellDisplayPublisher

        def _showtraceback(self, etype, evalue, stb):
            runner.current.error(etype.__name__, str(evalue), list(stb))

        def init_io(self):
            pass

    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = NotebookShell.instance(config=config, colors="nocolor", automagic=False, autocall=0)
    shell.alias_manager.clear_aliases()  # no `rm`, `ls`, ... as bare words
    return shell


class Runner:
    def __init__(self, request, events):
        self.request = request
        self.events = events
        self.limit = int(request.get("output_bytes_per_cell", 256 * 1024))
        self.current = CellOutputs(self.limit)

    def run_cells(self, shell, cells):
        sources = {i: cell for i, cell in enumerate(self.request["notebook"]["cells"])}
        for step in cells:
            index = step["index"]
            source = sources[index]["source"]
            if isinstance(source, list):
                source = "".join(source)
            emit(self.events, {"event": "start", "index": index, "replay": bool(step.get("replay"))})
            self.current = CellOutputs(self.limit)
            try:
                shell.run_cell(source, store_history=True)
            except BaseException as error:  # run_cell handles user errors; this is a runner fault
                self.current.error(type(error).__name__, str(error), [repr(error)])
            emit(self.events, {"event": "done", "index": index, "execution_count": shell.execution_count - 1,
                               "outputs": self.current.items})


def listen_for_interrupts(stdin, main_thread):
    """SIGINT to the main thread for each ``interrupt`` line: a blocking call (sleep, a lock)
    wakes up with KeyboardInterrupt, as under Jupyter's stop button."""
    for line in stdin:
        if line.strip() == "interrupt":
            signal.pthread_kill(main_thread, signal.SIGINT)


def main():
    # The event channel is a private copy of stdout; fd 1 itself goes to stderr, so that the
    # learner's C-level or subprocess output cannot mix with the events.
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    stdin = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    # Interrupts arrive as SIGINT: make sure it raises KeyboardInterrupt, even if whoever started
    # the grader ignored SIGINT (a background job does, and the setting is inherited).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    request = json.loads(stdin.readline())
    threading.Thread(target=listen_for_interrupts, args=(stdin, threading.main_thread().ident), daemon=True).start()

    with open(request["notebook_name"], "w", encoding="utf-8") as f:
        json.dump(request["notebook"], f, indent=1)
    # As in a Jupyter kernel: the notebook's folder first on sys.path, an ipykernel-like argv.
    sys.path[0] = ""
    sys.argv = [os.path.join(os.path.dirname(os.__file__), "site-packages", "ipykernel_launcher.py"), "-f",
                os.path.expanduser("~/.local/share/jupyter/runtime/kernel.json")]

    if request.get("probes"):  # what the authoritative calls need, imported before any learner code
        import base64  # noqa: F401
        import math  # noqa: F401

        import torch

        with op_recorder():  # the first use imports more of torch (and wants a temporary folder)
            torch.ones(1).add(1)
    runner = Runner(request, events)
    shell = make_shell(runner)
    sys.stdout, sys.stderr, sys.stdin = Stream(runner, "stdout"), Stream(runner, "stderr"), NoInput()
    emit(events, {"event": "ready"})
    runner.run_cells(shell, request["cells"])
    if request.get("probes"):
        run_probes(events, shell.user_ns, request["probes"])
    emit(events, {"event": "finished"})
    events.flush()
    os._exit(0)  # skip interpreter teardown (torch's takes a noticeable fraction of a second)


# ------------------------------------------------------------------ the authoritative calls
# Values cross the sandbox wall as JSON: tensors as raw bytes with dtype and shape, never pickle,
# so nothing that comes back can carry code. The grader uses the same two functions.
TENSOR_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


def encode(value, depth=0):
    """A JSON-able tree for tensors, dtypes, numbers, strings, None and tuples/lists/dicts of them."""
    import base64

    import torch

    if depth > 8:
        return {"__object__": "too deeply nested"}
    if isinstance(value, torch.Tensor):
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        plain = torch.Tensor.detach(value)
        if type(plain) is not torch.Tensor:
            plain = torch.Tensor._make_subclass(torch.Tensor, plain)
        plain = plain.to("cpu").contiguous()
        name = str(plain.dtype).replace("torch.", "")
        if name not in TENSOR_DTYPES:
            return {"__object__": f"tensor of {name}"}
        raw = plain.reshape(-1).view(torch.uint8).numpy().tobytes() if plain.numel() else b""
        return {"__tensor__": {"type": kind, "dtype": name, "shape": list(plain.shape), "device": str(value.device),
                               "data": base64.b64encode(raw).decode("ascii")}}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"__float__": repr(value)}
    if isinstance(value, (tuple, list)):
        items = [encode(v, depth + 1) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: encode(v, depth + 1) for k, v in value.items()}}
    return {"__object__": f"{type(value).__module__}.{type(value).__qualname__}"}


def decode(tree, budget=None, depth=0):
    """The inverse of :func:`encode`; objects come back as :class:`Opaque`. ``budget`` caps bytes."""
    import base64

    import torch

    budget = budget if budget is not None else [64 << 20]
    if depth > 10:
        raise ValueError("too deeply nested")
    if isinstance(tree, list):
        return [decode(v, budget, depth + 1) for v in tree]
    if not isinstance(tree, dict):
        if tree is None or isinstance(tree, (bool, int, str)):
            return tree
        raise ValueError(f"unexpected {type(tree).__name__}")
    if "__tensor__" in tree:
        spec = tree["__tensor__"]
        dtype = spec["dtype"]
        if dtype not in TENSOR_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not allowed")
        raw = base64.b64decode(spec["data"], validate=True)
        budget[0] -= len(raw)
        if budget[0] < 0:
            raise ValueError("too much data")
        shape = [int(n) for n in spec["shape"]]
        dtype = getattr(torch, dtype)
        numel = 1
        for n in shape:
            if n < 0:
                raise ValueError("negative size")
            numel *= n
        if numel * torch.empty(0, dtype=dtype).element_size() != len(raw):
            raise ValueError("tensor data does not match its shape")
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensor = flat.view(dtype).reshape(shape).clone()
        return Returned(tensor, str(spec.get("type")), str(spec.get("device")))
    if "__dtype__" in tree:
        name = tree["__dtype__"]
        if name not in TENSOR_DTYPES:
            raise ValueError(f"dtype {name!r} is not allowed")
        return getattr(torch, name)
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__tuple__" in tree:
        return tuple(decode(v, budget, depth + 1) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {str(k): decode(v, budget, depth + 1) for k, v in tree["__dict__"].items()}
    if "__object__" in tree:
        return Opaque(str(tree["__object__"])[:200])
    raise ValueError("unknown value")


class Returned:
    """A tensor that came back from the sandbox, with what the sandbox said its type and device were."""

    def __init__(self, tensor, kind, device):
        self.tensor, self.kind, self.device = tensor, kind, device

    def __repr__(self):
        return f"{self.kind}(shape={tuple(self.tensor.shape)}, dtype={self.tensor.dtype})"


class Opaque:
    """Something that is neither a tensor nor plain data (the grader only reports its type)."""

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"<{self.kind}>"


def unwrap(value):
    """Inputs as the learner's code receives them: plain tensors instead of Returned."""
    if isinstance(value, Returned):
        return value.tensor
    if isinstance(value, tuple):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def op_recorder():
    """A dispatch mode that records every aten operator the learner's code runs."""
    from attnlab.testing import OpRecorder

    return OpRecorder()


def run_probe(namespace, case):
    """Call the learner's code through one driver; report outputs, inputs afterwards, operators."""
    import math

    import torch

    inputs = unwrap(decode(case["inputs"]))
    scope = {"torch": torch, "math": math}
    exec(compile(case["driver"], f"<grader driver {case['name']}>", "exec"), scope)
    recorder = op_recorder()
    report = {}
    try:
        with recorder:
            outputs = scope[case["name"]](namespace, inputs)
        report["outputs"] = encode(outputs)
    except BaseException as error:  # the learner's exception is the result (ValueError expected, ...)
        report["raised"] = type(error).__name__
        report["message"] = str(error)[:500]
    report["inputs_after"] = encode(inputs)
    report["ops"] = sorted(recorder.ops)
    return report


def run_probes(events, namespace, probes):
    try:  # the learner's code may have deleted or filled its folder: calls must not depend on it
        os.chdir("/")
    except OSError:
        pass
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    for case in probes:
        emit(events, {"event": "start", "index": f"probe:{case['id']}"})
        try:
            report = run_probe(namespace, case)
        except BaseException as error:  # a driver that could not even start: the grader's problem
            report = {"raised": type(error).__name__, "message": str(error)[:500], "grader_error": True}
        emit(events, {"event": "probe", "id": case["id"], "report": report})


if __name__ == "__main__":
    main()
