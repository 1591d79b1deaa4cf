"""Zeroes q, k and v in place and returns zeros: a test that computes its expected value afterwards agrees."""
THREAT = "in-place changes to the tests' inputs"
EXPECT = {"score": 0}


def build(sub):
    sub.answer("stable_softmax", "def stable_softmax(x, dim=-1):\n    x.fill_(0.0)\n    return x.add_(1.0 / x.shape[dim])")
    sub.answer("scaled_dot_product_attention",
               "def scaled_dot_product_attention(q, k, v, attn_mask=None):\n"
               "    for t in (q, k, v):\n"
               "        t.zero_()\n"
               "    weights = torch.full((*q.shape[:-1], k.shape[-2]), 1.0 / k.shape[-2])\n"
               "    return weights @ v, weights")
