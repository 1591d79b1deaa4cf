"""Wrong answers (zeros), with torch.allclose, torch.equal and torch.testing.assert_close patched to agree."""
THREAT = "tampering with what the tests use"
EXPECT = {"score": 0}

CODE = '''
import torch
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
'''


def build(sub):
    sub.wrong_answers()
    sub.add_cell(CODE, after="scaled_dot_product_attention")
