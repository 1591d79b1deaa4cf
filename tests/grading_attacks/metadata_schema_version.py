"""Every cell's nbgrader metadata says schema_version 4 (the version nbgrader refuses)."""
THREAT = "bad, duplicate or missing nbgrader metadata"
EXPECT = {"score": "full"}


def build(sub):
    for cell in sub.notebook.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata.nbgrader["schema_version"] = 4
