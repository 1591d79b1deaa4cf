"""Writes into the course folder, its config, another student's folder and the gradebook."""
THREAT = "writes to course files, the gradebook or other students"
EXPECT = {"score": "full"}

CODE = '''
import glob, os, sqlite3
course = {course!r}
targets = [course, os.path.abspath("../../.."), os.path.abspath("..")]
for root in targets:
    for action in (
        lambda: open(os.path.join(root, "pwned.txt"), "w").write("pwned"),
        lambda: open(os.path.join(root, "nbgrader_config.py"), "a").write("\\nc.Execute.timeout = 1\\n"),
        lambda: open(os.path.join(root, "submitted", "honest-reference", {assignment!r}, "extra.py"), "w").write("x"),
        lambda: sqlite3.connect(os.path.join(root, "gradebook.db")).execute("UPDATE grade SET manual_score=0").connection.commit(),
    ):
        try:
            action()
            print("wrote into", root)
        except Exception as error:
            print(type(error).__name__)
for path in glob.glob("/**/gradebook.db", recursive=True)[:5]:
    print("found", path)
'''


def build(sub):
    sub.add_cell(CODE.format(course=str(sub.course), assignment=sub.assignment))
