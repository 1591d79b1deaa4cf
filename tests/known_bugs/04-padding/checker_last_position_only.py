"""The batch check compares only each sequence's last position (the one generation reads): a flaw at an earlier position goes unnoticed."""
# feedback: compare every real position
# cell: batch_vs_alone
def batch_vs_alone(attend, lengths, D=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, S = len(lengths), max(lengths)
    qkv = torch.randn(3, B, 1, S, D, generator=g)
    attention_mask = torch.zeros(B, S, dtype=torch.long)
    for b, L in enumerate(lengths):
        attention_mask[b, S - L:] = 1
    q, k, v = qkv.to(dtype)
    batch, _ = attend(q, k, v, padded_causal_mask(attention_mask))
    step, _ = attend(q[..., -1:, :], k, v, padded_causal_mask(attention_mask, T=1))
    if not (torch.isfinite(batch).all() and torch.isfinite(step).all()):
        return float("inf")
    worst = 0.0
    for b, L in enumerate(lengths):
        q1, k1, v1 = qkv[:, b:b + 1, :, S - L:].to(dtype)
        real = torch.ones(1, L, dtype=torch.long)
        alone, _ = attend(q1, k1, v1, padded_causal_mask(real))
        alone_step, _ = attend(q1[..., -1:, :], k1, v1, padded_causal_mask(real, T=1))
        worst = max(worst, (batch[b, :, -1].float() - alone[0, :, -1].float()).abs().max().item(),
                    (step[b].float() - alone_step[0].float()).abs().max().item())
    return worst
