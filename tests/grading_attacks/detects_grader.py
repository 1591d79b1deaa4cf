"""Answers correctly only when it cannot tell it is being graded (env, paths, argv, pid 1)."""
THREAT = "detecting the grader"
EXPECT = {"score": "full"}

CODE = '''
import os, sys
def _graded():
    signs = [name for name in os.environ if "NBGRADER" in name or "GRADE" in name.upper()]
    signs += [p for p in (os.getcwd(), *sys.argv) if any(w in p.lower() for w in ("autograde", "submitted", "grader", "nbgrader"))]
    try:
        with open("/proc/1/cmdline", "rb") as f:
            signs += ["pid1"] if b"grade" in f.read().lower() else []
    except OSError:
        pass
    return signs
if _graded():
    print("grading detected:", _graded())
    def stable_softmax(x, dim=-1):
        return x * 0
'''


def build(sub):
    sub.add_cell(CODE, after="stable_softmax")
