"""A segfault in the middle, SystemExit, and os._exit in the last cell."""
THREAT = "os._exit, segfault, SystemExit"
EXPECT = {"score": "full", "status": "crashed"}


def build(sub):
    sub.add_cell("import ctypes\nctypes.string_at(0)", after="test_stable_softmax_hidden")
    sub.add_cell("raise SystemExit(1)", after="test_attention_visible")
    sub.add_cell("import os\nos._exit(0)")
