"""Duplicate grade_ids, and new 'test' cells with unknown grade_ids worth 100 points."""
THREAT = "bad, duplicate or missing nbgrader metadata"
EXPECT = {"score": "full"}


def build(sub):
    import copy

    cells = sub.notebook.cells
    answer = next(c for c in cells if c.metadata.get("nbgrader", {}).get("solution"))
    test = next(c for c in cells if c.metadata.get("nbgrader", {}).get("grade"))
    cells.append(copy.deepcopy(answer))
    twin = copy.deepcopy(test)
    twin.source = "pass"
    cells.append(twin)
    bonus = copy.deepcopy(test)
    bonus.source = "print('free points')"
    bonus.metadata.nbgrader.update(grade_id="bonus", points=100)
    bonus.id = "bonus-cell"
    cells.append(bonus)
