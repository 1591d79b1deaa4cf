"""Right only on the visible tests' inputs (looked up), zeros everywhere else."""
THREAT = "memorised visible inputs"
EXPECT = {"score": 0}

CODE = '''
import torch, torch.nn.functional as F
_g = torch.Generator().manual_seed(0)
_q, _k, _v = torch.randn(2, 3, 4, generator=_g), torch.randn(2, 5, 4, generator=_g), torch.randn(2, 5, 6, generator=_g)
_known = {(tuple(_q.shape), float(_q.sum())): (F.scaled_dot_product_attention(_q, _k, _v),
                                                torch.softmax(_q @ _k.transpose(-2, -1) / 2, -1))}

def scaled_dot_product_attention(q, k, v, attn_mask=None):
    hit = _known.get((tuple(q.shape), float(q.sum())))
    if hit:
        return hit
    return torch.zeros(*q.shape[:-1], v.shape[-1]), torch.zeros(*q.shape[:-1], k.shape[-2])

def stable_softmax(x, dim=-1):
    if tuple(x.shape) == (2, 3):
        return torch.tensor([[0.0900, 0.2447, 0.6652], [1 / 3, 1 / 3, 1 / 3]])
    return torch.zeros_like(x)
'''


def build(sub):
    sub.wrong_answers()
    sub.add_cell(CODE, after="scaled_dot_product_attention")
