"""A notebook cut off half way (an interrupted upload)."""
THREAT = "truncated, ancient, huge and non-UTF-8 files"
EXPECT = {"score": 0, "status": "refused", "reason": "invalid JSON"}


def build(sub):
    text = sub.text()
    sub.write_bytes(text[: len(text) // 2].encode())
