"""The right values with an extra leading dimension of size 1, which torch.allclose broadcasts away."""
THREAT = "outputs of the wrong shape that broadcast"
EXPECT = {"score": 0}


def build(sub):
    reference = sub.reference_answer("scaled_dot_product_attention").replace(
        "def scaled_dot_product_attention(", "def _right(")
    softmax = sub.reference_answer("stable_softmax").replace("def stable_softmax(", "def _right_softmax(")
    sub.answer("stable_softmax", softmax + "\n\ndef stable_softmax(x, dim=-1):\n    return _right_softmax(x, dim)[None]")
    sub.answer("scaled_dot_product_attention",
               reference + "\n\ndef scaled_dot_product_attention(q, k, v, attn_mask=None):\n"
               "    out, weights = _right(q, k, v, attn_mask)\n"
               "    return out[None], weights[None]")
