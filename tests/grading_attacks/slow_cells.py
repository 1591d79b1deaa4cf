"""Many cells, each just under the per-cell limit, after the first test: the notebook's limit stops them.

The tests after them never run in the notebook, but the grader's own checks of the (correct)
answers run in a sandbox of their own, and decide."""
THREAT = "infinite loops, SIGINT-ignoring loops and many slow cells"
EXPECT = {"score": "full", "status": "time-limit"}


def build(sub):
    for _ in range(8):
        sub.add_cell(f"import time\ntime.sleep({sub.cell_timeout - 2})", after="test_stable_softmax_visible")
