"""nbgrader feedback preprocessors: explain each failure without giving away the hidden tests.

Run by ``nbgrader generate_feedback`` (see ``nbgrader_config.py``), in this order:

* :class:`ScrubHiddenTestSource` removes, from every output of the notebook, each line that
  quotes a line of a hidden test. Learner code runs in the same process as the tests, so it can
  print their source (``inspect.stack()``, ``linecache``); this is what keeps it out of the
  feedback however it got into the outputs.
* nbgrader's ``ClearHiddenTests`` then removes the hidden tests' source from the test cells.
* :class:`HideTestTracebacks` keeps every traceback frame from the learner's own cells (they need
  those to find their bug), replaces the frames of test cells with a placeholder, and keeps the
  final line: the error and its message, which is where the tests explain the mistake.
* :class:`CapOutputBytes` caps what each cell's outputs may weigh in the feedback page.
"""

import html
import json
import re

import nbformat
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Integer

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n(.*?)^[ \t]*### END HIDDEN TESTS", re.M | re.S)
REMOVED = "[a line of the hidden tests was removed here]"
QUOTED_HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?(### END HIDDEN TESTS|\Z)", re.S)


def is_test_cell(cell):
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade")) and cell.cell_type == "code"


class ScrubHiddenTestSource(Preprocessor):
    """Remove lines quoting hidden-test source from every output."""

    enabled = Bool(True).tag(config=True)  # nbconvert preprocessors are off by default
    min_length = Integer(8, help="shorter hidden lines (`)`, `else:`) are not worth a match").tag(config=True)
    quote_length = Integer(30, help="hidden lines at least this long are removed wherever they are quoted; "
                                    "shorter ones only from an output line that is nothing else").tag(config=True)

    def preprocess(self, nb, resources):
        hidden = set()
        for cell in nb.cells:
            if is_test_cell(cell):
                for block in HIDDEN.findall(cell.source):
                    hidden.update(line.strip() for line in block.splitlines() if len(line.strip()) >= self.min_length)
        hidden |= {"### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"}
        hidden |= {html.escape(line) for line in hidden}
        self.whole_lines = hidden
        self.quoted = {line for line in hidden if len(line) >= self.quote_length}
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                self.scrub(output)
        return nb, resources

    def leaks(self, line):
        plain = ANSI.sub("", line).strip()
        bare = plain.split(" ", 1)[-1].strip() if plain[:1].isdigit() or plain.startswith("-->") else plain
        return plain in self.whole_lines or bare in self.whole_lines or any(q in plain for q in self.quoted)

    def clean(self, text):
        text = QUOTED_HIDDEN.sub(REMOVED, text)
        return "\n".join(REMOVED if self.leaks(line) else line for line in text.split("\n"))

    def scrub(self, output):
        if output.get("output_type") == "stream":
            output["text"] = self.clean(output.get("text", ""))
        elif output.get("output_type") == "error":
            output["evalue"] = self.clean(output.get("evalue", ""))
            output["traceback"] = [self.clean(frame) for frame in output.get("traceback", [])]
        else:
            data = output.get("data", {})
            for mime, value in list(data.items()):
                if isinstance(value, str):
                    data[mime] = self.clean(value)
                elif isinstance(value, list):
                    data[mime] = self.clean("".join(value))
                elif isinstance(value, dict):  # application/json and friends: drop it if it quotes a test
                    if self.clean(json.dumps(value)) != json.dumps(value):
                        del data[mime]


class HideTestTracebacks(Preprocessor):
    """Drop traceback frames that belong to nbgrader test cells (``grade: true``)."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb, resources):
        test_counts = {cell.get("execution_count") for cell in nb.cells if is_test_cell(cell)}
        test_headers = {f"Cell In[{count}]" for count in test_counts if count is not None}
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = self.filter(output.get("traceback", []), test_headers, output)
        return nb, resources

    @staticmethod
    def filter(traceback, test_headers, output):
        kept = []
        for frame in traceback[:-1]:
            plain = ANSI.sub("", frame)
            if any(header in plain for header in test_headers):
                kept.append("(test code hidden)")
            elif not plain.startswith("---"):  # the dashed header line IPython prints first
                kept.append(frame)
        return [*kept, f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]


class CapOutputBytes(Preprocessor):
    """Cap the bytes of each cell's outputs in the feedback page."""

    enabled = Bool(True).tag(config=True)
    max_bytes = Integer(64 * 1024, help="output bytes kept per cell").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        kept, used = [], 0
        for output in cell.get("outputs", []):
            size = len(json.dumps(output))
            if used + size <= self.max_bytes:
                kept.append(output)
                used += size
                continue
            room = self.max_bytes - used
            if output.get("output_type") == "stream" and room > 200:
                output["text"] = output["text"][: room - 100]
                kept.append(output)
            kept.append(nbformat.v4.new_output(
                "stream", name="stdout", text=f"\n[feedback shows at most {self.max_bytes // 1024} KiB of output per cell]\n"))
            break
        cell["outputs"] = kept
        return cell, resources
