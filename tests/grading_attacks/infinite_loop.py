"""A cell that never ends."""
THREAT = "infinite loops, SIGINT-ignoring loops and many slow cells"
EXPECT = {"score": "full"}


def build(sub):
    sub.add_cell("while True:\n    pass")
