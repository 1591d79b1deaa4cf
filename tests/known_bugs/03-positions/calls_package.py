"""apply_rope calls the package's apply_rotary instead of rotating the pairs itself."""
# feedback: write the rotary code yourself
# cell: apply_rope
from attnlab import apply_rotary


def apply_rope(x, cos, sin):
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"the head dimension D={D} must be even")
    if tuple(cos.shape) not in ((T, D), (B, T, D)) or cos.shape != sin.shape:
        raise ValueError(f"cos/sin of shape {tuple(cos.shape)} do not fit x of shape {tuple(x.shape)}")
    return apply_rotary(x, cos, sin)
