"""A loop that ignores the interrupt (SIGINT and KeyboardInterrupt), in the last cell."""
THREAT = "infinite loops, SIGINT-ignoring loops and many slow cells"
EXPECT = {"score": "full", "status": "cell-timeout"}


def build(sub):
    sub.add_cell("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                 "while True:\n    try:\n        pass\n    except KeyboardInterrupt:\n        pass")
