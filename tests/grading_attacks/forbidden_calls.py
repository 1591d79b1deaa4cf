"""Correct values, computed with the library calls the task forbids (torch.softmax, F.scaled_dot_product_attention)."""
THREAT = "forbidden calls"
EXPECT = {"score": 0, "flags": "grader's check failed"}


def build(sub):
    sub.answer("stable_softmax", "def stable_softmax(x, dim=-1):\n    return torch.softmax(x, dim=dim)")
    sub.answer("scaled_dot_product_attention",
               "def scaled_dot_product_attention(q, k, v, attn_mask=None):\n"
               "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
               "    if attn_mask is not None:\n"
               "        scores = scores.masked_fill(~attn_mask, float('-inf'))\n"
               "    weights = scores.softmax(dim=-1)\n"
               "    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), weights")
