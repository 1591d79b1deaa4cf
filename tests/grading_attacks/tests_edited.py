"""Wrong answers, with every test cell unlocked, replaced by `pass` and worth 100 points."""
THREAT = "bad, duplicate or missing nbgrader metadata"
EXPECT = {"score": 0}


def build(sub):
    sub.use_exercise()
    for cell in sub.notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            cell.source = "pass"
            meta.update(locked=False, points=100)
