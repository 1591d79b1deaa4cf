"""Tiled attention: accepts is_causal=True with more queries than keys (T > S) instead of refusing it."""
# feedback: instead of raising ValueError
# cell: tiled_attention
def tiled_attention(q, k, v, block_q, block_k, is_causal=False, attn_mask=None):
    """softmax(q k^T / sqrt(D), masked) v, block by block, with the log-sum-exp of each row.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask: broadcastable to (*, T, S)
        returns: output (*, T, Dv) in q's dtype; lse (*, T) in float32 or wider
    """
    T, S = q.shape[-2], k.shape[-2]
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be >= 1, got block_q={block_q}, block_k={block_k}")
    work = torch.promote_types(q.dtype, torch.float32)  # accumulate in float32 or wider
    offset = S - T  # query i sits at position offset + i
    if attn_mask is not None:
        attn_mask = attn_mask.expand(*q.shape[:-1], S)  # (*, T, S), a view: nothing allocated
    outputs, lses = [], []
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        q_block = q[..., q0:q1, :].to(work) / math.sqrt(q.shape[-1])  # (*, bq, D), scaled once
        m = torch.full_like(q_block[..., :1], float("-inf"))  # (*, bq, 1) running maximum
        l = torch.zeros_like(m)  # (*, bq, 1) running denominator
        acc = torch.zeros_like(m)  # (*, bq, 1), broadcast to (*, bq, Dv) by the first block
        k_stop = min(S, offset + q1) if is_causal else S  # the block's last query sees keys < offset + q1
        for k0 in range(0, k_stop, block_k):
            k1 = min(k0 + block_k, S)
            scores = q_block @ k[..., k0:k1, :].to(work).transpose(-2, -1)  # (*, bq, D) @ (*, D, bk) -> (*, bq, bk)
            if is_causal:
                key_pos = torch.arange(k0, k1, device=q.device)  # (bk,)
                query_pos = torch.arange(offset + q0, offset + q1, device=q.device)  # (bq,)
                scores = scores.masked_fill(key_pos > query_pos[:, None], float("-inf"))
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask[..., q0:q1, k0:k1], float("-inf"))
            m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))  # (*, bq, 1)
            shift = m_new.clamp_min(torch.finfo(work).min)  # still -inf (all masked so far): no -inf - -inf
            rescale = torch.exp(m - shift)  # (*, bq, 1): the old sums shrink when the maximum grows
            p = torch.exp(scores - shift)  # (*, bq, bk), unnormalised weights
            l = l * rescale + p.sum(dim=-1, keepdim=True)
            acc = acc * rescale + p @ v[..., k0:k1, :].to(work)  # (*, bq, bk) @ (*, bk, Dv) -> (*, bq, Dv)
            m = m_new
        outputs.append(acc / l.clamp_min(torch.finfo(work).tiny))  # fully masked rows: 0 / tiny = 0
        lses.append((m + torch.log(l)).squeeze(-1))  # (*, bq); -inf for fully masked rows
    return torch.cat(outputs, dim=-2).to(q.dtype), torch.cat(lses, dim=-1)  # (*, T, Dv), (*, T)
