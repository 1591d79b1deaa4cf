"""The notebook saved as UTF-16."""
THREAT = "truncated, ancient, huge and non-UTF-8 files"
EXPECT = {"score": 0, "status": "refused", "reason": "not UTF-8"}


def build(sub):
    sub.write_bytes(sub.text().encode("utf-16"))
