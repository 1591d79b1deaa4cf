"""Meta's complex-number rotation without the final .type_as(x): bfloat16 and float16 inputs come back as float32."""
# feedback: bfloat16 x must give a bfloat16 output
# cell: apply_rope_interleaved
def apply_rope_interleaved(x, cos, sin):
    D = x.shape[-1]
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    turn = torch.complex(cos[..., : D // 2].float(), sin[..., : D // 2].float())  # e^(i angle)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * turn).flatten(-2)  # float32 whatever x was
