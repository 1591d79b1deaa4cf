"""Shell escapes and magics that delete the released exercises and the solutions."""
THREAT = "shell escapes"
EXPECT = {"score": "full", "flags": "magics removed"}


def build(sub):
    course = sub.course
    sub.add_cell(f"!rm -rf {course}/exercises {course}/solutions\nlisting = !ls {course}\n%sx touch {course}/pwned")
    sub.add_cell(f"%%bash\nrm -rf {course}/exercises\ntouch {course}/pwned2")
    sub.add_cell(f"get_ipython().system('rm -rf {course}/exercises ~/*')")
