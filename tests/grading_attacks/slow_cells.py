"""Many cells, each just under the per-cell limit, after the first test: the notebook's limit stops them."""
THREAT = "infinite loops, SIGINT-ignoring loops and many slow cells"
EXPECT = {"score": "partial", "status": "time-limit"}


def build(sub):
    for _ in range(8):
        sub.add_cell(f"import time\ntime.sleep({sub.cell_timeout - 2})", after="test_stable_softmax_visible")
