"""The notebook renamed by a download ('attention (1).ipynb'): still graded, and flagged."""
THREAT = "renamed notebooks"
EXPECT = {"score": "full", "flags": "renamed"}


def build(sub):
    sub.rename("attention (1).ipynb")
