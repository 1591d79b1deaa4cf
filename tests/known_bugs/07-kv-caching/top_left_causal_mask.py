"""A top-left causal mask (tril of the (T, S) block) used with a cache, where T != S."""
# feedback: top-left causal
# cell: decode_mask
def decode_mask(attention_mask, T):
    '''Causal (offset-aware) and padding mask for the last T of S positions.

    Shapes:
        attention_mask: (B, S), 1 = real token
        returns: (B, 1, T, S) bool, True = may attend
    '''
    S = attention_mask.shape[1]
    query_pos = torch.arange(S - T, S, device=attention_mask.device)[:, None]  # (T, 1): absolute positions
    key_pos = torch.arange(S, device=attention_mask.device)[None, :]  # (1, S)
    causal = torch.ones(T, S, dtype=torch.bool).tril()  # (T, S)
    real_keys = (attention_mask != 0)[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
    return real_keys & causal  # (B, 1, T, S)
