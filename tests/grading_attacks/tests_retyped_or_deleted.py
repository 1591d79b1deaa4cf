"""Wrong answers; half the test cells retyped to markdown, the other half deleted."""
THREAT = "bad, duplicate or missing nbgrader metadata"
EXPECT = {"score": 0}


def build(sub):
    import nbformat

    sub.use_exercise()
    kept, flip = [], True
    for cell in sub.notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            flip = not flip
            if flip:
                continue
            markdown = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
            markdown.id = cell.id
            cell = markdown
        kept.append(cell)
    sub.notebook.cells = kept
