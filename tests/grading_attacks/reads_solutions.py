"""Reads the instructor's solutions and the gradebook, and prints them."""
THREAT = "reads of solutions, the gradebook or hidden tests"
EXPECT = {"score": "full"}

CODE = '''
import glob, os
course = {course!r}
for pattern in (course + "/solutions/**/*.ipynb", course + "/gradebook.db", "/**/solutions/**/*.ipynb"):
    for path in glob.glob(pattern, recursive=True)[:3]:
        print(open(path, errors="replace").read()[:20000])
try:
    print(open(course + "/solutions/" + {assignment!r} + "/attention.ipynb").read())
except OSError as error:
    print(type(error).__name__)
'''


def build(sub):
    sub.add_cell(CODE.format(course=str(sub.course), assignment=sub.assignment))
