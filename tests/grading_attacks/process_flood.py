"""Starts hundreds of processes and a double-forked daemon meant to outlive grading."""
THREAT = "process floods and daemons"
EXPECT = {"score": "full"}

CODE = '''
import os, subprocess, time
children = []
for _ in range(300):
    try:
        children.append(subprocess.Popen(["sleep", "600"], start_new_session=True))
    except OSError as error:
        print("stopped at", len(children), type(error).__name__)
        break
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
'''


def build(sub):
    sub.add_cell(CODE)
