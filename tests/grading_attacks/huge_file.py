"""A 40 MB notebook: refused before it is parsed."""
THREAT = "truncated, ancient, huge and non-UTF-8 files"
EXPECT = {"score": 0, "status": "refused", "reason": "over the"}


def build(sub):
    import nbformat

    sub.notebook.cells.append(nbformat.v4.new_markdown_cell("z" * 40_000_000))
