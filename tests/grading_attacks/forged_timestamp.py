"""A timestamp.txt claiming the work was handed in in 1999."""
THREAT = "forged timestamps"
EXPECT = {"score": "full", "flags": "timestamp.txt ignored", "timestamp_not": "1999"}


def build(sub):
    (sub.folder / "timestamp.txt").write_text("1999-01-01 00:00:00.000000 UTC")
