"""Multiplies the integer attention_mask by the causal mask: the result is a long tensor of 0/1, not a boolean mask."""
# feedback: dtype
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
    causal = key_pos <= query_pos  # (T, S)
    return attention_mask[:, None, None, :] * causal  # (B, 1, T, S)
