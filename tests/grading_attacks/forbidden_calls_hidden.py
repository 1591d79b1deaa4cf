"""Forbidden calls reached in ways no name search finds: a getattr on a built string, an alias made elsewhere."""
THREAT = "forbidden calls"
EXPECT = {"score": 0}


def build(sub):
    sub.add_cell("import torch.nn.functional as _F\n_attend = getattr(_F, 'scaled_dot' + '_product_attention')\n"
                 "_normalise = getattr(torch, 'soft' + 'max')", after="imports")
    sub.answer("stable_softmax", "def stable_softmax(x, dim=-1):\n    return _normalise(x, dim)")
    sub.answer("scaled_dot_product_attention",
               "def scaled_dot_product_attention(q, k, v, attn_mask=None):\n"
               "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
               "    if attn_mask is not None:\n"
               "        scores = scores.masked_fill(~attn_mask, float('-inf'))\n"
               "    return _attend(q, k, v, attn_mask=attn_mask), stable_softmax(scores)")
