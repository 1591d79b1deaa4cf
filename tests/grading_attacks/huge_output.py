"""Prints a 30 MB line, and a flood of display outputs."""
THREAT = "huge outputs"
EXPECT = {"score": "full", "feedback_below_bytes": 2 << 20}


def build(sub):
    sub.add_cell("print('x' * 30_000_000)")
    sub.add_cell("from IPython.display import display, HTML\nfor i in range(2000):\n    display(HTML('<b>y</b>' * 1000))")
