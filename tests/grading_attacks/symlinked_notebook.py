"""The notebook is a symbolic link to another student's submission."""
THREAT = "reads of solutions, the gradebook or hidden tests"
EXPECT = {"score": 0, "status": "refused", "reason": "link"}


def build(sub):
    sub.link_to(sub.course / "submitted" / "honest-reference" / sub.assignment / sub.name)
