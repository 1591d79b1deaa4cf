"""The batch check compares the prefill only, never a decoding step: an attention wrong only when decoding goes unnoticed."""
# feedback: check one decoding step too
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
    if not (torch.isfinite(batch).all()):
        return float("inf")
    worst = 0.0
    for b, L in enumerate(lengths):
        q1, k1, v1 = qkv[:, b:b + 1, :, S - L:].to(dtype)
        real = torch.ones(1, L, dtype=torch.long)
        alone, _ = attend(q1, k1, v1, padded_causal_mask(real))
        worst = max(worst, (batch[b, :, S - L:].float() - alone[0].float()).abs().max().item())
    return worst
