"""Chapter 4: padding, padding masks and position ids.

The key property: a padded batch gives, at every real position, the outputs that
each sequence gives when it runs alone. The "alone" runs use only ``torch.arange``
and ``torch.tril`` for positions and masks, not ``attnlab.masks``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.attention import scaled_dot_product_attention
from attnlab.masks import attention_mask_for, causal_mask, padding_mask, position_ids
from attnlab.tokenizer import CharTokenizer

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,!?")
TEXTS = ["hello world", "hi", "attention!", "a"]
C, H = 16, 4  # model width and heads of the tiny model; D = C // H = 4
ATOL = 1e-5  # float32: padded batch vs. each sequence alone


# ----------------------------------------------------------------- tokenizer


def test_encode_decode_round_trip():
    for text in TEXTS + ["", "the quick brown fox, jumps!"]:
        assert TOK.decode(TOK.encode(text)) == text
    assert TOK.decode(torch.tensor(TOK.encode("abc"))) == "abc"


def test_vocabulary_layout():
    tok = CharTokenizer("abc")
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size == 6
    assert tok.encode("cab") == [5, 3, 4]
    assert tok.encode("ab", add_bos=True, add_eos=True) == [1, 3, 4, 2]
    assert tok.decode([1, 3, 0, 4, 2, 0]) == "ab"  # special tokens are skipped


def test_decode_can_show_special_tokens_one_piece_per_id():
    tok = CharTokenizer("abc")
    ids = [1, 3, 0, 4, 2, 0]
    assert tok.decode(ids, skip_special_tokens=False) == "<bos>a<pad>b<eos><pad>"
    assert tok.decode(torch.tensor(ids), skip_special_tokens=False) == "<bos>a<pad>b<eos><pad>"
    with pytest.raises(ValueError, match="skip_special_tokens must be a bool, got 'no'"):
        tok.decode(ids, skip_special_tokens="no")


def test_left_and_right_padding_layouts():
    tok = CharTokenizer("abc")
    ids, mask = tok(["abc", "a", "cb"], padding_side="left")
    assert ids.tolist() == [[3, 4, 5], [0, 0, 3], [0, 5, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    ids, mask = tok(["abc", "a", "cb"], padding_side="right")
    assert ids.tolist() == [[3, 4, 5], [3, 0, 0], [5, 4, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    ids, mask = tok(["ab"], padding_side="left", max_length=4)
    assert ids.tolist() == [[0, 0, 3, 4]] and mask.tolist() == [[0, 0, 1, 1]]
    ids, mask = tok(["a", "b"], add_bos=True)
    assert ids.tolist() == [[1, 3], [1, 4]] and mask.tolist() == [[1, 1], [1, 1]]


def test_default_padding_side_is_left():
    ids, mask = TOK(TEXTS)
    left_ids, left_mask = TOK(TEXTS, padding_side="left")
    assert torch.equal(ids, left_ids) and torch.equal(mask, left_mask)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_tensors_are_consistent(side):
    ids, mask = TOK(TEXTS, padding_side=side)
    lengths = [len(t) for t in TEXTS]
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.shape == mask.shape == (len(TEXTS), max(lengths))
    assert set(mask.unique().tolist()) <= {0, 1}
    assert mask.sum(-1).tolist() == lengths
    assert torch.all(ids[mask == 0] == TOK.pad_id) and torch.all(ids[mask == 1] != TOK.pad_id)
    assert [TOK.decode(row) for row in ids] == TEXTS
    for row, text in zip(ids, TEXTS):
        real = row[row != TOK.pad_id]
        assert real.tolist() == TOK.encode(text)
        edge = row[-1] if side == "left" else row[0]
        assert edge != TOK.pad_id, "left padding ends every row with a real token; right starts with one"


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: TOK(TEXTS, padding_side="middle"), r"'middle'"),
        (lambda: TOK(["abc", "xyZ"]), r"\['Z'\]"),
        (lambda: TOK.encode("héllo"), r"\['é'\]"),
        (lambda: TOK(["hello", "hi"], max_length=3), r"max_length=3.*\{0: 5\}"),
        (lambda: TOK(["hi"], max_length=0), r"max_length.*0"),
        (lambda: TOK([]), r"empty batch"),
        (lambda: TOK("hello"), r"list of str.*str"),
        (lambda: TOK(["", ""]), r"empty"),
        (lambda: CharTokenizer("abca"), r"\['a'\]"),
        (lambda: CharTokenizer(""), r"''"),
        (lambda: TOK.decode([3, 99, -1]), r"\[99, -1\]"),
        (lambda: TOK.decode(torch.zeros(2, 2, dtype=torch.long)), r"\(2, 2\)"),
    ],
)
def test_tokenizer_rejects_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------ padding mask, position ids


def test_padding_mask_shape_values_and_no_aliasing():
    _, mask = TOK(TEXTS)
    keys = padding_mask(mask)
    assert keys.dtype == torch.bool and keys.shape == (len(TEXTS), 1, 1, mask.shape[1])
    assert torch.equal(keys[:, 0, 0], mask == 1)
    assert torch.equal(padding_mask(mask.bool()), keys)
    bool_mask = mask.bool()
    padding_mask(bool_mask).fill_(False)
    assert torch.equal(bool_mask, mask == 1), "the caller's mask must not share memory with the result"


@pytest.mark.parametrize("T", [1, 2, 5, 11])
def test_attention_mask_for_matches_an_explicit_loop(T):
    _, mask = TOK(TEXTS, padding_side="left")
    B, S = mask.shape
    expected = torch.zeros(B, 1, T, S, dtype=torch.bool)
    for b in range(B):
        for i in range(T):
            for j in range(S):
                expected[b, 0, i, j] = bool(mask[b, j] == 1) and j <= S - T + i
    got = attention_mask_for(mask, T)
    assert got.dtype == torch.bool and got.shape == (B, 1, T, S)
    assert torch.equal(got, expected)


def test_masks_are_built_on_the_device_of_the_input():
    # A bool mask: its 0/1 values need no check, which a meta tensor could not answer.
    mask = torch.ones(2, 5, dtype=torch.bool, device="meta")
    assert padding_mask(mask).device.type == "meta"
    assert attention_mask_for(mask, 3).device.type == "meta"
    assert attention_mask_for(mask, 3).shape == (2, 1, 3, 5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_position_ids_count_real_tokens_only(side):
    _, mask = TOK(TEXTS, padding_side=side)
    original = mask.clone()
    pos = position_ids(mask)
    assert torch.equal(mask, original), "position_ids must not modify its input"
    assert pos.dtype == torch.long and pos.shape == mask.shape
    for row_pos, row_mask, text in zip(pos, mask, TEXTS):
        assert torch.equal(row_pos[row_mask == 1], torch.arange(len(text)))  # as if run alone
        assert torch.all(row_pos[row_mask == 0] == 0)
    # Hugging Face's formula agrees at every real position (it fills pads with 1 instead of 0).
    hf = mask.long().cumsum(-1) - 1
    hf = hf.masked_fill(mask == 0, 1)
    assert torch.equal(pos[mask == 1], hf[mask == 1])
    assert torch.equal(position_ids(mask.bool()), pos)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda f: f(torch.ones(5, dtype=torch.long)), r"2-D.*\(5,\)"),
        (lambda f: f(torch.ones(1, 2, 5, dtype=torch.long)), r"2-D.*\(1, 2, 5\)"),
        (lambda f: f(torch.tensor([[0, 1, 2, 1, -1]])), r"\[-1, 2\]"),
        (lambda f: f(torch.ones(2, 3)), r"torch\.float32"),
        (lambda f: f(torch.ones(2, 0, dtype=torch.long)), r"\(2, 0\)"),
        (lambda f: f([[1, 1]]), r"list"),
    ],
)
@pytest.mark.parametrize(
    "function",
    [padding_mask, position_ids, lambda m: attention_mask_for(m, 1)],
    ids=["padding_mask", "position_ids", "attention_mask_for"],
)
def test_attention_mask_checks(function, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(function)


@pytest.mark.parametrize(("T", "pattern"), [(6, r"T=6.*S=5"), (0, r"T=0"), (1.0, r"T=1\.0")])
def test_attention_mask_for_rejects_bad_query_counts(T, pattern):
    with pytest.raises(ValueError, match=pattern):
        attention_mask_for(torch.ones(2, 5, dtype=torch.long), T)


# ------------------------------------------- a tiny attention layer: padded vs. alone


def tiny_layer(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    return nn.ModuleDict(
        {
            "tok": nn.Embedding(TOK.vocab_size, C),
            "pos": nn.Embedding(32, C),  # learned absolute positions: padding must not shift them
            "q": nn.Linear(C, C),
            "k": nn.Linear(C, C),
            "v": nn.Linear(C, C),
            "o": nn.Linear(C, C),
        }
    )


def split_heads(x: torch.Tensor) -> torch.Tensor:
    B, S, _ = x.shape
    return x.view(B, S, H, C // H).transpose(1, 2)  # (B, S, C) -> (B, S, H, D) -> (B, H, S, D)


@torch.no_grad()
def run_layer(layer, ids, positions, mask, dtype=torch.float32, attend=scaled_dot_product_attention):
    """One attention layer; the queries are the last ``T = mask.shape[-2]`` positions.

    Shapes: ids, positions (B, S); mask broadcastable to (B, H, T, S); returns (B, T, C).
    """
    T = mask.shape[-2]
    x = layer["tok"](ids) + layer["pos"](positions)  # (B, S, C)
    q = split_heads(layer["q"](x[:, -T:])).to(dtype)  # (B, H, T, D)
    k = split_heads(layer["k"](x)).to(dtype)  # (B, H, S, D)
    v = split_heads(layer["v"](x)).to(dtype)  # (B, H, S, D)
    out, _ = attend(q, k, v, mask)  # (B, H, T, D)
    B = out.shape[0]
    out = out.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
    return layer["o"](out.float())


def run_alone(layer, text: str) -> torch.Tensor:
    """One unpadded sequence, with masks and positions built without attnlab.masks: (L, C)."""
    ids = torch.tensor([TOK.encode(text)])  # (1, L)
    L = ids.shape[1]
    mask = torch.ones(L, L, dtype=torch.bool).tril()  # (L, L)
    return run_layer(layer, ids, torch.arange(L)[None], mask)[0]


def run_padded(layer, ids, mask, dtype=torch.float32):
    """A padded batch through the layer, the way the package says to do it: (B, S, C)."""
    return run_layer(layer, ids, position_ids(mask), attention_mask_for(mask, ids.shape[1]), dtype=dtype)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sequence_alone(side):
    layer = tiny_layer()
    ids, mask = TOK(TEXTS, padding_side=side, max_length=13)
    batch = run_padded(layer, ids, mask)
    assert torch.isfinite(batch).all()
    for b, text in enumerate(TEXTS):
        torch.testing.assert_close(batch[b][mask[b] == 1], run_alone(layer, text), atol=ATOL, rtol=0)


def test_padded_batch_check_catches_common_mistakes():
    layer = tiny_layer()
    ids, mask = TOK(TEXTS, padding_side="left")
    S = ids.shape[1]
    short = TEXTS.index("hi")  # a row with pads
    alone = run_alone(layer, TEXTS[short])
    real = mask[short] == 1

    unshifted = run_layer(layer, ids, torch.arange(S).expand_as(ids), attention_mask_for(mask, S))
    assert not torch.allclose(unshifted[short][real], alone, atol=1e-3), "position ids not shifted"

    no_pad_mask = run_layer(layer, ids, position_ids(mask), causal_mask(S))
    assert not torch.allclose(no_pad_mask[short][real], alone, atol=1e-3), "pad keys attended to"


def test_left_padding_puts_every_last_token_in_the_last_column():
    """Generation reads the last column; under right padding that is a pad for short rows."""
    layer = tiny_layer()
    for side, ok in (("left", True), ("right", False)):
        ids, mask = TOK(TEXTS, padding_side=side)
        last = run_padded(layer, ids, mask)[:, -1]  # (B, C)
        short = TEXTS.index("hi")
        matches = torch.allclose(last[short], run_alone(layer, "hi")[-1], atol=ATOL, rtol=0)
        assert matches == ok, side


def test_decode_step_with_cached_positions_equals_running_alone():
    """One new token per row, attending to S cached + 1 new keys (the KV-cache situation)."""
    layer = tiny_layer()
    prompts, new_chars = TEXTS, "xyz!"
    ids, mask = TOK(prompts, padding_side="left")
    new_ids = torch.tensor([TOK.encode(c) for c in new_chars])  # (B, 1)
    ids = torch.cat([ids, new_ids], dim=1)  # (B, S + 1)
    mask = torch.cat([mask, torch.ones_like(new_ids)], dim=1)  # (B, S + 1): the mask grows with the keys
    step = run_layer(layer, ids, position_ids(mask), attention_mask_for(mask, 1))[:, 0]  # (B, C)
    for b, (prompt, c) in enumerate(zip(prompts, new_chars)):
        torch.testing.assert_close(step[b], run_alone(layer, prompt + c)[-1], atol=ATOL, rtol=0)
    # Dropping the pad mask after the prefill is a classic bug; it shows up on padded rows.
    S1 = ids.shape[1]
    leaky = run_layer(layer, ids, position_ids(mask), causal_mask(1, S1))[:, 0]
    short = prompts.index("hi")
    assert not torch.allclose(leaky[short], step[short], atol=1e-3)


# ------------------------------------------------ fully masked rows: zeros, never NaN


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float32, 1e-6), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)]
)
def test_pad_query_rows_are_zero_not_nan(dtype, atol):
    ids, mask = TOK(TEXTS, padding_side="left")
    S = ids.shape[1]
    attn_mask = attention_mask_for(mask, S)  # (B, 1, S, S)
    empty_rows = ~attn_mask.any(-1)  # (B, 1, S): queries that may attend to nothing
    assert torch.equal(empty_rows[:, 0], mask == 0), "under left padding exactly the pad queries are empty"

    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(len(TEXTS), H, S, C // H, generator=gen) for _ in range(3))
    out, weights = scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=attn_mask)
    assert out.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    pad = empty_rows.expand(-1, H, -1)  # (B, H, S)
    assert torch.all(out[pad] == 0) and torch.all(weights[pad] == 0)
    # Real rows: weights sum to one and agree with PyTorch's attention on the same inputs.
    torch.testing.assert_close(
        weights[~pad].float().sum(-1), torch.ones(int((~pad).sum())), atol=atol * 2, rtol=0
    )
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # float32 reference
    torch.testing.assert_close(out[~pad].float(), expected[~pad], atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_padded_batch_in_low_precision_is_finite_and_close(dtype):
    layer = tiny_layer()
    ids, mask = TOK(TEXTS, padding_side="left")
    low = run_padded(layer, ids, mask, dtype=dtype)
    full = run_padded(layer, ids, mask)
    assert torch.isfinite(low).all()
    real = mask == 1
    torch.testing.assert_close(low[real], full[real], atol=5e-2, rtol=0)


# ------------------------------------- the Llama-style model: left padding vs right padding


def _small_llama():
    from attnlab import LlamaConfig, LlamaLM

    torch.manual_seed(0)
    return LlamaLM(LlamaConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=48)).eval()


def test_llama_left_padded_generation_equals_one_at_a_time_and_right_padding_does_not():
    from attnlab import generate

    model = _small_llama()
    prompts = ["the cat sat", "hi", "attention is"]
    alone = [generate(model, torch.tensor([TOK.encode(p)]), max_new_tokens=8)[0] for p in prompts]
    ids, mask = TOK(prompts, padding_side="left")
    left = generate(model, ids, mask, max_new_tokens=8)
    for a, b in zip(alone, left):
        assert torch.equal(a, b)
    ids, mask = TOK(prompts, padding_side="right")
    right = generate(model, ids, mask, max_new_tokens=8)
    assert not torch.equal(right[1], alone[1]), "the padded short prompt must go wrong under right padding"


def test_llama_rejects_bad_attention_masks_and_long_prompts():
    from attnlab import generate

    model = _small_llama()
    ids, mask = TOK(["hello", "hi"], padding_side="left")
    with pytest.raises(ValueError, match=r"found values \[2\]"):
        model(ids, attention_mask=mask * 2)
    with pytest.raises(ValueError, match=r"torch\.float32"):
        model(ids, attention_mask=mask.float())
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 4\)"):
        model(ids, attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match=r"P=50.*max_seq_len 48"):
        generate(model, torch.ones(1, 50, dtype=torch.long) * 3, max_new_tokens=1)
    with pytest.raises(ValueError, match=r"S=49.*max_seq_len 48"):
        model(torch.ones(1, 49, dtype=torch.long) * 3)


# ----------------------------------------------- feedback that names the mistake (diagnose)


def test_explain_padded_mask_and_position_ids_name_the_mistake():
    from attnlab.diagnose import explain_padded_mask_mismatch, explain_position_ids_mismatch

    _, mask = TOK(TEXTS, padding_side="left")
    B, S = mask.shape
    T = 2
    causal_only = causal_mask(T, S).expand(B, 1, T, S)
    assert "dropped the padding mask" in explain_padded_mask_mismatch(causal_only, mask, T)
    top_left = padding_mask(mask) & torch.ones(T, S, dtype=torch.bool).tril()
    assert "top-left" in explain_padded_mask_mismatch(top_left, mask, T)
    assert "shape" in explain_padded_mask_mismatch(attention_mask_for(mask, T)[:, 0], mask, T)
    unshifted = torch.arange(S).expand(B, S)
    assert "not shifted for left padding" in explain_position_ids_mismatch(unshifted, mask)
    assert "start at 1" in explain_position_ids_mismatch(position_ids(mask) + mask, mask)


def test_explanations_never_blame_right_answers():
    """Given the right answer, every chapter-4 explanation says so (the position-ids one used to blame it)."""
    from attnlab.diagnose_padding import (explain_left_pad_mismatch, explain_padded_batch_mismatch,
                                          explain_padded_mask_mismatch, explain_position_ids_mismatch, is_right)

    _, mask = TOK(TEXTS, padding_side="left")
    gaps = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 1]])
    for m in (mask, gaps, gaps.bool()):
        assert is_right(explain_position_ids_mismatch(position_ids(m), m))
        for T in (1, 3, m.shape[1]):
            assert is_right(explain_padded_mask_mismatch(attention_mask_for(m, T), m, T))
    sequences = [[5, 6, 7], [8], [9, 10]]
    assert is_right(explain_left_pad_mismatch((torch.tensor([[5, 6, 7], [0, 0, 8], [0, 9, 10]]),
                                               torch.tensor([[1, 1, 1], [0, 0, 1], [0, 1, 1]])), sequences))

    def reference_left_pad(seqs):
        S = max(len(s) for s in seqs)
        return (torch.tensor([[0] * (S - len(s)) + s for s in seqs]),
                torch.tensor([[0] * (S - len(s)) + [1] * len(s) for s in seqs]))

    def attention_mask_for_all(m, T=None):
        return attention_mask_for(m, m.shape[1] if T is None else T)

    assert "all match" in explain_padded_batch_mismatch(sequences, reference_left_pad, position_ids, attention_mask_for_all)


def test_explanations_name_only_the_wrong_piece_and_every_mistake_that_fits():
    from attnlab.diagnose_padding import (explain_padded_batch_mismatch, explain_padded_mask_mismatch,
                                          explain_position_ids_mismatch)

    sequences = [[5, 6, 7], [8], [9, 10]]

    def reference_left_pad(seqs):
        S = max(len(s) for s in seqs)
        return (torch.tensor([[0] * (S - len(s)) + s for s in seqs]),
                torch.tensor([[0] * (S - len(s)) + [1] * len(s) for s in seqs]))

    def mask_for(m, T=None):
        return attention_mask_for(m, m.shape[1] if T is None else T)

    def unshifted(m):
        return torch.arange(m.shape[1]).expand(m.shape).clone()

    said = explain_padded_batch_mismatch(sequences, reference_left_pad, unshifted, mask_for)
    assert said.startswith("position_ids:") and "not shifted" in said and "padded_causal_mask" not in said

    def mutating(m):
        positions = position_ids(m)
        m.fill_(1)
        return positions

    assert "changed its input attention_mask in place" in explain_padded_batch_mismatch(
        sequences, reference_left_pad, mutating, mask_for)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    both = explain_padded_mask_mismatch(causal_mask(1, 4).expand(2, 1, 1, 4), mask, 1)
    assert "dropped the padding mask" in both and "pad queries (rows)" in both  # the same mask for T = 1
    assert "torch.long" in explain_position_ids_mismatch(position_ids(mask).float(), mask)
    assert "assume left padding" in explain_position_ids_mismatch(
        torch.tensor([[0, 0, 0, 0, 2]]), torch.tensor([[1, 1, 0, 0, 1]]))
