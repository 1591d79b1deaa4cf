"""nbgrader feedback that explains a failure without quoting hidden test code.

An error in a test cell carries a traceback, and IPython prints the lines
around each frame, so the hidden tests' source would leak into the feedback.
``HideTestTracebacks`` keeps every frame from the learner's own cells (they
need those to find their bug), replaces the frames of test cells with a
placeholder, and keeps the final line: the error and its message, which is
where the tests explain the mistake.
"""

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class HideTestTracebacks(Preprocessor):
    """Drop traceback frames that belong to nbgrader test cells (``grade: true``)."""

    enabled = Bool(True).tag(config=True)  # nbconvert preprocessors are off by default

    def preprocess(self, nb, resources):
        test_counts = {
            cell.get("execution_count")
            for cell in nb.cells
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade") and cell.cell_type == "code"
        }
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
