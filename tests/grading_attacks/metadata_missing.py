"""The nbgrader metadata of every cell is gone, or lost its schema_version."""
THREAT = "bad, duplicate or missing nbgrader metadata"
EXPECT = {"score": "full"}


def build(sub):
    for i, cell in enumerate(sub.notebook.cells):
        if i % 2:
            cell.metadata.pop("nbgrader", None)
        elif "nbgrader" in cell.metadata:
            cell.metadata.nbgrader.pop("schema_version", None)
