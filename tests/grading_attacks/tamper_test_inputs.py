"""Replaces torch.randn (and friends) so the tests' inputs are zeros, on which a zero answer is right."""
THREAT = "tampering with what the tests use"
EXPECT = {"score": 0}

CODE = '''
import torch
for name in ("randn", "rand", "randint", "randn_like", "ones", "full", "tensor"):
    original = getattr(torch, name)
    setattr(torch, name, lambda *args, _original=original, **kwargs: _original(*args, **kwargs) * 0)
'''


def build(sub):
    sub.wrong_answers()
    sub.add_cell(CODE, after="scaled_dot_product_attention")
