"""A torch.py and a numpy.py beside the notebook that would make every comparison pass."""
THREAT = "shadow modules beside the notebook"
EXPECT = {"score": 0, "flags": "files not used"}

SHADOW = '''
import importlib.util, sys
del sys.modules[__name__]
sys.path = [p for p in sys.path if p not in ("", ".")]
real = importlib.import_module(__name__)
real.allclose = lambda *args, **kwargs: True
real.equal = lambda *args, **kwargs: True
sys.modules[__name__] = real
'''


def build(sub):
    sub.use_exercise()  # wrong everywhere, even on "inputs unchanged": only patched comparisons could pass
    sub.answer("stable_softmax", "def stable_softmax(x, dim=-1):\n    return x.zero_()")
    sub.answer("scaled_dot_product_attention",
               "def scaled_dot_product_attention(q, k, v, attn_mask=None):\n"
               "    weights = q @ k.transpose(-2, -1)\n"
               "    return q.zero_()[..., :1], weights.zero_()")
    (sub.folder / "torch.py").write_text(SHADOW)
    (sub.folder / "numpy.py").write_text(SHADOW)
