"""The reference answer saved in nbformat 3 (an old Jupyter): upgraded and graded."""
THREAT = "truncated, ancient, huge and non-UTF-8 files"
EXPECT = {"score": "full"}


def build(sub):
    import nbformat

    sub.write_bytes(nbformat.writes(nbformat.convert(sub.notebook, 3), version=3).encode())
