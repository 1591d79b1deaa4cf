"""Chapter 3: positions. Sinusoids, the two pairings of rotary embeddings, and porting between them.

The references are code and formulas nobody here wrote:

* ``transformers.models.llama.modeling_llama``: ``LlamaRotaryEmbedding`` (the
  cos/sin tables), ``apply_rotary_pos_emb`` (the half-split rotation) and
  ``LlamaAttention`` (a whole attention layer, eager, grouped-query);
* Meta's original Llama code (``llama/model.py``), transcribed below: the
  interleaved rotation as a complex multiplication (``torch.polar``,
  ``torch.view_as_complex``) and its attention layer;
* the permutation of Hugging Face's ``convert_llama_weights_to_hf.py``,
  transcribed below;
* the sinusoid formula of "Attention Is All You Need", with ``math.sin``.

Tolerances: float32 ``ATOL = 1e-5`` (measured differences are below 1e-6 for the
rotations, ~1e-6 for the attention weights); the tables and the permutations are
compared exactly.
"""

import math

import pytest
import torch

from attnlab import (
    apply_rotary,
    apply_rotary_interleaved,
    half_split_channel_order,
    half_split_to_interleaved,
    interleaved_to_half_split,
    relative_position_error,
    rotary_cos_sin,
    rotate_half,
    sinusoidal_embeddings,
)
from attnlab.diagnose_positions import (
    cos_sin_mistakes,
    explain_cos_sin_mismatch,
    explain_interleaved_mismatch,
    explain_qk_conversion_mismatch,
    explain_rope_mismatch,
    interleaved_mistakes,
    qk_conversion_mistakes,
    rope_mistakes,
)

ATOL = 1e-5
RELATIVE_TOL = 1e-4  # relative_position_error of a correct rotation in float32: measured up to 2.3e-5 (D=64, P=96)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers.models.llama.modeling_llama")


def hf_rotary(hf, head_dim, base):
    """Hugging Face's own cos/sin module for one head size and base."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                         rope_parameters={"rope_type": "default", "rope_theta": float(base)})
    return hf.LlamaRotaryEmbedding(config)


def random_positions(g, B, T):
    """(B, T) positions as after a cache (a common offset) or under left padding (one per row)."""
    starts = torch.randint(0, 50, (B, 1), generator=g)
    return starts + torch.arange(T)  # (B, 1) + (T,) -> (B, T)


# ------------------------------------------------- Meta's reference code, transcribed


def meta_precompute_freqs_cis(dim, positions, theta):
    """``precompute_freqs_cis`` of Meta's llama/model.py, at the given positions."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    freqs = positions[..., None].float() * freqs  # torch.outer(t, freqs), one row per position
    return torch.polar(torch.ones_like(freqs), freqs)  # complex64


def meta_apply_rotary_emb(x, freqs_cis):
    """``apply_rotary_emb`` of Meta's llama/model.py for one tensor in (B, H, T, D) layout.

    freqs_cis: (T, D/2) or (B, T, D/2), complex.
    """
    x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    freqs = freqs_cis[:, None] if freqs_cis.dim() == 3 else freqs_cis
    return torch.view_as_real(x_ * freqs).flatten(3).type_as(x)


def meta_attention_weights(x, wq, wk, n_heads, n_kv_heads, positions, theta, mask):
    """The attention weights of Meta's ``Attention.forward`` (no cache), in float32."""
    B, T, _ = x.shape
    D = wq.shape[0] // n_heads
    xq = (x @ wq.T).view(B, T, n_heads, D).transpose(1, 2)  # (B, T, H*D) -> (B, H, T, D)
    xk = (x @ wk.T).view(B, T, n_kv_heads, D).transpose(1, 2)  # (B, Hkv, T, D)
    freqs_cis = meta_precompute_freqs_cis(D, positions, theta)
    xq, xk = meta_apply_rotary_emb(xq, freqs_cis), meta_apply_rotary_emb(xk, freqs_cis)
    xk = xk.repeat_interleave(n_heads // n_kv_heads, dim=1)  # Meta's repeat_kv: (B, H, T, D)
    scores = xq @ xk.transpose(2, 3) / math.sqrt(D) + mask
    return torch.softmax(scores.float(), dim=-1)


def hf_convert_permute(w, n_heads, dim1, dim2):
    """``permute`` of transformers' convert_llama_weights_to_hf.py (Meta -> Hugging Face)."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


# ------------------------------------------------------------------ cos/sin tables


@pytest.mark.parametrize("dtype", DTYPES)
def test_cos_sin_equal_llama_rotary_embedding(hf, dtype):
    g = torch.Generator().manual_seed(0)
    for trial in range(6):
        head_dim = 2 * int(torch.randint(1, 33, (1,), generator=g))
        base = [10000.0, 500000.0, 100.0][trial % 3]
        B, T = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 20, (1,), generator=g))
        positions = random_positions(g, B, T)
        x = torch.zeros(B, 1, T, head_dim, dtype=dtype)
        want_cos, want_sin = hf_rotary(hf, head_dim, base)(x, positions)
        cos, sin = rotary_cos_sin(positions, head_dim, base, dtype)
        assert cos.dtype == sin.dtype == dtype
        assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin), (head_dim, base, dtype)


# ------------------------------------------------------------------ the two pairings


@pytest.mark.parametrize("dtype", DTYPES)
def test_half_split_rotation_equals_hf_apply_rotary_pos_emb(hf, dtype):
    g = torch.Generator().manual_seed(1)
    for trial in range(8):
        B, H, T = (int(n) for n in torch.randint(1, 5, (3,), generator=g))
        head_dim = 2 * int(torch.randint(1, 17, (1,), generator=g))
        positions = random_positions(g, B, T)
        q, k = (torch.randn(B, H, T, head_dim, generator=g).to(dtype) for _ in range(2))
        cos, sin = rotary_cos_sin(positions, head_dim, 10000.0, dtype)
        want_q, want_k = hf.apply_rotary_pos_emb(q, k, cos, sin)
        assert torch.equal(apply_rotary(q, cos, sin), want_q) and torch.equal(apply_rotary(k, cos, sin), want_k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_interleaved_rotation_equals_metas_complex_rotation(dtype):
    g = torch.Generator().manual_seed(2)
    tol = {torch.float32: ATOL, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    for trial in range(8):
        B, H, T = (int(n) for n in torch.randint(1, 5, (3,), generator=g))
        head_dim = 2 * int(torch.randint(1, 17, (1,), generator=g))
        base = [10000.0, 500000.0][trial % 2]
        positions = random_positions(g, B, T)
        x = torch.randn(B, H, T, head_dim, generator=g).to(dtype)
        before = x.clone()
        got = apply_rotary_interleaved(x, *rotary_cos_sin(positions, head_dim, base, dtype))
        want = meta_apply_rotary_emb(x, meta_precompute_freqs_cis(head_dim, positions, base))
        assert torch.equal(x, before), "x must not be modified"
        assert got.dtype == dtype and got.shape == x.shape
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=0)
        # (T, D) tables broadcast over the batch, like apply_rotary's
        cos, sin = rotary_cos_sin(positions[0], head_dim, base, dtype)
        torch.testing.assert_close(apply_rotary_interleaved(x, cos, sin).float(),
                                   meta_apply_rotary_emb(x, meta_precompute_freqs_cis(head_dim, positions[0], base)).float(),
                                   atol=tol, rtol=0)


def test_pairings_differ_except_at_position_zero():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 8, generator=g)
    cos, sin = rotary_cos_sin(torch.arange(6), 8)
    half, inter = apply_rotary(x, cos, sin), apply_rotary_interleaved(x, cos, sin)
    assert torch.equal(half[:, :, 0], x[:, :, 0]) and torch.equal(inter[:, :, 0], x[:, :, 0])
    assert (half[:, :, 1:] - inter[:, :, 1:]).abs().amax(dim=(0, 1, 3)).min() > 0.1
    # ... and they are the same rotation in another channel order
    order = half_split_channel_order(8)
    assert order.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    torch.testing.assert_close(inter[..., order], apply_rotary(x[..., order], cos, sin), atol=0, rtol=0)


def test_rotations_preserve_norms_and_compose():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 9, 16, generator=g, dtype=torch.float64)
    positions = torch.arange(9)
    for rotate in (apply_rotary, apply_rotary_interleaved):
        cos, sin = rotary_cos_sin(positions, 16, dtype=torch.float64)
        out = rotate(x, cos, sin)
        torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
        # rotating by m, then by n, is rotating by m + n
        cos3, sin3 = rotary_cos_sin(torch.full((9,), 3), 16, dtype=torch.float64)
        cos_m3, sin_m3 = rotary_cos_sin(positions + 3, 16, dtype=torch.float64)
        # (the angles are computed in float32, whatever the dtype of the tables)
        torch.testing.assert_close(rotate(out, cos3, sin3), rotate(x, cos_m3, sin_m3), atol=1e-6, rtol=0)


# ------------------------------------------------------------ the relative-position property


@pytest.mark.parametrize("rotate", [apply_rotary, apply_rotary_interleaved], ids=["half_split", "interleaved"])
def test_score_depends_only_on_the_offset(rotate):
    """<R_m q, R_n k> = <q, R_(n-m) k>, for random m, n of both orders."""
    g = torch.Generator().manual_seed(5)
    D = 32
    q, k = (torch.randn(1, 1, 1, D, generator=g, dtype=torch.float64) for _ in range(2))
    for trial in range(20):
        m, n = (int(p) for p in torch.randint(0, 2000, (2,), generator=g))

        def at(x, p):  # float64 tables (rotary_cos_sin computes its angles in float32)
            angles = p * 10000.0 ** -(torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,), p may be < 0
            angles = torch.cat((angles, angles))[None]  # (1, D): the half-split table of one position
            return rotate(x, angles.cos(), angles.sin())

        score = (at(q, m) * at(k, n)).sum()
        relative = (q * at(k, n - m)).sum()
        torch.testing.assert_close(score, relative, atol=1e-9, rtol=1e-9)


def rotary(rotate, base=10000.0):
    return lambda x, positions: rotate(x, *rotary_cos_sin(positions, x.shape[-1], base))


def test_relative_position_error_is_zero_for_rotary_and_large_for_absolute():
    for rotate in (apply_rotary, apply_rotary_interleaved):
        for D, base in [(2, 10000.0), (16, 500000.0), (64, 100.0)]:
            assert relative_position_error(rotary(rotate, base), D, max_position=96) < RELATIVE_TOL
    # rotating the wrong way is still relative (it depends on m - n instead of n - m)
    wrong_way = lambda x, p: apply_rotary(x, rotary_cos_sin(p, x.shape[-1])[0], -rotary_cos_sin(p, x.shape[-1])[1])
    assert relative_position_error(wrong_way, 16) < RELATIVE_TOL
    absolute = lambda x, p: x + sinusoidal_embeddings(p, x.shape[-1])
    assert relative_position_error(absolute, 16) > 0.1
    assert relative_position_error(lambda x, p: x, 16) == 0.0  # relative, and encodes nothing


def test_relative_position_error_sees_localised_breaks():
    def clamped(x, p):  # a cos/sin table of 40 positions, clamped
        return apply_rotary(x, *rotary_cos_sin(p.clamp(max=39), x.shape[-1]))

    assert relative_position_error(clamped, 16, max_position=40) < RELATIVE_TOL
    assert relative_position_error(clamped, 16, max_position=64) > 0.1

    def one_bad_pair(x, p):  # sin from i/D instead of 2i/D: pair 0 is still right
        D = x.shape[-1]
        cos, _ = rotary_cos_sin(p, D)
        angles = p[:, None].float() / 10000.0 ** (torch.arange(0, D, 2) / 2 / D)
        return apply_rotary(x, cos, torch.cat((angles, angles), -1).sin())

    assert relative_position_error(one_bad_pair, 2) < RELATIVE_TOL
    assert relative_position_error(one_bad_pair, 8) > 0.1
    assert relative_position_error(lambda x, p: x * float("nan"), 4) == float("inf")


# ------------------------------------------------------------ porting a checkpoint


@pytest.mark.parametrize("dtype", DTYPES)
def test_permutation_equals_hf_conversion_script(dtype):
    g = torch.Generator().manual_seed(6)
    for n_heads, head_dim, width in [(1, 2, 3), (1, 4, 4), (4, 8, 32), (3, 16, 20), (8, 6, 5)]:
        w = torch.randn(n_heads * head_dim, width, generator=g).to(dtype)
        before = w.clone()
        got = interleaved_to_half_split(w, n_heads)
        assert got.dtype == dtype and got.shape == w.shape
        assert torch.equal(got, hf_convert_permute(w, n_heads, n_heads * head_dim, width))
        assert torch.equal(half_split_to_interleaved(got, n_heads), w)
        assert torch.equal(interleaved_to_half_split(half_split_to_interleaved(w, n_heads), n_heads), w)
        assert torch.equal(w, before), "the input weight must not change"
        got.zero_()
        assert torch.equal(w, before), "the result must not share memory with the input"
        bias = torch.randn(n_heads * head_dim, generator=g).to(dtype)  # a bias is permuted like the rows
        want = hf_convert_permute(bias[:, None], n_heads, n_heads * head_dim, 1)[:, 0]
        assert torch.equal(interleaved_to_half_split(bias, n_heads), want)


def test_permutation_is_its_own_inverse_only_for_tiny_heads():
    """Why tests of a conversion need D >= 6: for D <= 4 both directions coincide."""
    for head_dim in (2, 4):
        order = half_split_channel_order(head_dim)
        assert torch.equal(order, order.argsort())
    for head_dim in (6, 8, 128):
        order = half_split_channel_order(head_dim)
        assert not torch.equal(order, order.argsort())


@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(4, 4), (4, 2), (6, 1)])
def test_converted_meta_attention_equals_hf_llama_attention(hf, n_heads, n_kv_heads):
    """Meta's attention with interleaved rotary == transformers' LlamaAttention with permuted q/k weights."""
    from transformers import LlamaConfig

    g = torch.Generator().manual_seed(7)
    head_dim, width, B, T, base = 8, 24, 3, 7, 500.0
    config = LlamaConfig(hidden_size=width, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         head_dim=head_dim, rope_parameters={"rope_type": "default", "rope_theta": base})
    config._attn_implementation = "eager"
    layer = hf.LlamaAttention(config, layer_idx=0).eval()
    meta_wq = torch.randn(n_heads * head_dim, width, generator=g) / width**0.5
    meta_wk = torch.randn(n_kv_heads * head_dim, width, generator=g) / width**0.5
    x = torch.randn(B, T, width, generator=g)
    positions = random_positions(g, B, T)
    mask = torch.full((T, T), float("-inf")).triu(1)  # (T, T) additive causal mask
    want = meta_attention_weights(x, meta_wq, meta_wk, n_heads, n_kv_heads, positions, base, mask)
    cos_sin = hf_rotary(hf, head_dim, base)(x, positions)

    def hf_weights(wq, wk):
        with torch.no_grad():
            layer.q_proj.weight.copy_(wq)
            layer.k_proj.weight.copy_(wk)
            return layer(x, position_embeddings=cos_sin, attention_mask=mask[None, None])[1]

    converted = hf_weights(interleaved_to_half_split(meta_wq, n_heads),
                           interleaved_to_half_split(meta_wk, n_kv_heads))
    torch.testing.assert_close(converted, want, atol=ATOL, rtol=0)
    # The classic silent bug: load the checkpoint as it is. No error, wrong weights...
    raw = hf_weights(meta_wq, meta_wk)
    assert (raw - want).abs().max() > 1e-2
    # ... and the same for permuting the query weight only.
    q_only = hf_weights(interleaved_to_half_split(meta_wq, n_heads), meta_wk)
    assert (q_only - want).abs().max() > 1e-2


def test_forgotten_permutation_is_invisible_at_position_zero_only():
    """Loading Meta's weights unpermuted gives the right score only where query and key are both at position 0.

    So a test with one token, or with a single position, cannot see the bug.
    """
    g = torch.Generator().manual_seed(8)
    D, width, n_heads = 8, 16, 2
    wq, wk = (torch.randn(n_heads * D, width, generator=g) for _ in range(2))
    x = torch.randn(1, 10, width, generator=g)
    cos, sin = rotary_cos_sin(torch.arange(10), D)

    def scores(wq, wk, rotate):
        q = (x @ wq.T).view(1, 10, n_heads, D).transpose(1, 2)  # (B, T, H*D) -> (B, H, T, D)
        k = (x @ wk.T).view(1, 10, n_heads, D).transpose(1, 2)
        return rotate(q, cos, sin) @ rotate(k, cos, sin).transpose(-2, -1)  # (B, H, T, T)

    want = scores(wq, wk, apply_rotary_interleaved)
    right = scores(interleaved_to_half_split(wq, n_heads), interleaved_to_half_split(wk, n_heads), apply_rotary)
    wrong = scores(wq, wk, apply_rotary)
    torch.testing.assert_close(right, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(wrong[..., 0, 0], want[..., 0, 0], atol=ATOL, rtol=0)  # both at position 0
    assert (wrong - want).abs()[..., 1:, 1:].amax() > 0.1


# ------------------------------------------------------------------ sinusoids


def test_sinusoidal_embeddings_follow_the_paper():
    positions = torch.tensor([0, 1, 5, 17, 300])
    for dim in (2, 6, 16):
        got = sinusoidal_embeddings(positions, dim)
        assert got.shape == (5, dim) and got.dtype == torch.float32
        for row, pos in enumerate(positions.tolist()):
            for i in range(dim // 2):
                angle = pos / 10000 ** (2 * i / dim)
                assert abs(got[row, 2 * i].item() - math.sin(angle)) < 1e-5
                assert abs(got[row, 2 * i + 1].item() - math.cos(angle)) < 1e-5
    batched = sinusoidal_embeddings(torch.stack([positions, positions + 3]), 8, base=100.0)
    assert batched.shape == (2, 5, 8)
    assert torch.equal(batched[1], sinusoidal_embeddings(positions + 3, 8, base=100.0))


def test_sinusoid_dot_products_depend_only_on_the_offset():
    """<PE_m, PE_n> = sum_i cos((m - n) w_i): relative; what breaks it is adding them to the content."""
    pe = sinusoidal_embeddings(torch.arange(50), 32).double()
    gram = pe @ pe.T  # (50, 50)
    for offset in range(-49, 50):
        diagonal = gram.diagonal(offset)
        assert (diagonal - diagonal[0]).abs().max() < 1e-5


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: half_split_channel_order(7), r"head_dim=7"),
        (lambda: half_split_channel_order(0), r"head_dim=0"),
        (lambda: apply_rotary_interleaved(torch.randn(1, 1, 2, 5), torch.ones(2, 5), torch.ones(2, 5)), r"D=5"),
        (lambda: apply_rotary_interleaved(torch.randn(1, 2, 8), torch.ones(2, 8), torch.ones(2, 8)), r"\(1, 2, 8\)"),
        (lambda: apply_rotary_interleaved(torch.randn(1, 1, 3, 8), *rotary_cos_sin(torch.arange(4), 8)),
         r"\(4, 8\).*\(1, 1, 3, 8\)"),
        (lambda: interleaved_to_half_split(torch.randn(12, 4), 5), r"12 rows.*n_heads=5"),
        (lambda: interleaved_to_half_split(torch.randn(12, 4), 4), r"D = 12 rows / n_heads=4 = 3"),
        (lambda: interleaved_to_half_split(torch.randn(12, 4), 0), r"n_heads=0"),
        (lambda: half_split_to_interleaved(torch.randn(2, 12, 4), 2), r"\(2, 12, 4\)"),
        (lambda: half_split_to_interleaved([[1.0, 2.0]], 1), r"list"),
        (lambda: sinusoidal_embeddings(torch.arange(4), 5), r"dim=5"),
        (lambda: sinusoidal_embeddings(torch.arange(4.0), 8), r"float32"),
        (lambda: sinusoidal_embeddings(torch.arange(4), 8, base=-1.0), r"base=-1.0"),
        (lambda: relative_position_error(lambda x, p: x, 9), r"head_dim=9"),
        (lambda: relative_position_error(lambda x, p: x, 8, max_position=1), r"max_position=1"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------------------ diagnosis


def test_every_cos_sin_mistake_is_wrong_and_named():
    positions = torch.tensor([[3, 4, 5, 6], [0, 0, 0, 1]])
    for dtype in (torch.float32, torch.bfloat16):
        right = rotary_cos_sin(positions, 16, 500.0, dtype)
        mistakes = list(cos_sin_mistakes(positions, 16, 500.0, dtype))
        assert len(mistakes) == (7 if dtype == torch.bfloat16 else 6)
        for description, cos, sin in mistakes:
            assert not (torch.allclose(cos.float(), right[0].float(), atol=1e-3)
                        and torch.allclose(sin.float(), right[1].float(), atol=1e-3)), description
            assert description in explain_cos_sin_mismatch((cos, sin), positions, 16, 500.0, dtype)
    assert "tuple" in explain_cos_sin_mismatch(right[0], positions, 16, 500.0, torch.bfloat16)
    assert "shape (2, 4, 8)" in explain_cos_sin_mismatch((right[0][..., :8], right[1]), positions, 16, 500.0,
                                                         torch.bfloat16)
    assert "dtype torch.float32" in explain_cos_sin_mismatch(rotary_cos_sin(positions, 16, 500.0), positions, 16,
                                                             500.0, torch.bfloat16)
    odd = rotary_cos_sin(positions, 16, 500.0)
    odd[0][1, 2, 5] += 0.5
    assert "cos differs" in explain_cos_sin_mismatch(odd, positions, 16, 500.0) and "b=1, t=2, channel=5" in \
        explain_cos_sin_mismatch(odd, positions, 16, 500.0)


def test_every_rotation_mistake_is_wrong_and_named():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 5, 8, generator=g)
    cos, sin = rotary_cos_sin(torch.arange(2, 7), 8)
    for mistakes, explain, right in [
        (rope_mistakes, explain_rope_mismatch, apply_rotary(x, cos, sin)),
        (interleaved_mistakes, explain_interleaved_mismatch, apply_rotary_interleaved(x, cos, sin)),
    ]:
        for description, wrong in mistakes(x, cos, sin):
            assert (wrong - right).abs().max() > 0.1, description
            assert description in explain(wrong, x, cos, sin)
        assert "shape (2, 3, 5, 4)" in explain(right[..., :4], x, cos, sin)
        assert "NaN" in explain(right * float("nan"), x, cos, sin)
    # (B, T, D) tables with B == H broadcast silently against the heads when no head axis is inserted
    x = torch.randn(3, 3, 5, 8, generator=g)
    cos, sin = rotary_cos_sin(torch.arange(5) + torch.tensor([[0], [4], [9]]), 8)  # (B, T, D)
    mistakes = dict((d, out) for d, out in rope_mistakes(x, cos, sin))
    assert len(mistakes) == 6
    no_head_axis = [d for d in mistakes if "head axis" in d][0]
    assert (mistakes[no_head_axis] - apply_rotary(x, cos, sin)).abs().max() > 0.1
    assert "insert a head axis" in explain_rope_mismatch(x * cos + rotate_half(x) * sin, x, cos, sin)


def test_every_conversion_mistake_is_wrong_and_named():
    g = torch.Generator().manual_seed(10)
    wq, wk = torch.randn(4 * 8, 12, generator=g), torch.randn(2 * 8, 12, generator=g)
    right = (interleaved_to_half_split(wq, 4), interleaved_to_half_split(wk, 2))
    mistakes = list(qk_conversion_mistakes(wq, wk, 4, 2))
    assert len(mistakes) == 6
    for description, q, k in mistakes:
        assert not (torch.equal(q, right[0]) and torch.equal(k, right[1])), description
        assert description in explain_qk_conversion_mismatch((q, k), wq, wk, 4, 2)
    assert "tuple" in explain_qk_conversion_mismatch(right[0], wq, wk, 4, 2)


# ------------------------------------------------------------------ the rotations grading.py feeds the checker


def test_the_graders_rotations_are_what_their_labels_say():
    """grading.py labels every rotation it gives the learner's relative_position_error "relative: ...",
    "broken: ..." or "inf: ..." from VERDICTS, a table written from the definitions; the reference checker
    must agree (below 1e-3, above 5e-2), for any draw and any seed of the learner's own q and k."""
    import nbformat

    from attnlab_grader.authority import load_spec, reference_namespace
    from course import SOLUTIONS

    folder = SOLUTIONS / "03-positions"
    spec = load_spec(folder / "grading.py")
    reference = reference_namespace(nbformat.read(folder / "rope.ipynb", as_version=4))
    checked = set()
    for draw in range(3):
        for part in spec.parts(torch.Generator().manual_seed(draw)):
            for case in part.cases:
                if case.driver is not spec.drive_checker:
                    continue
                for seed in (case.inputs["seed"], 1000 + draw):
                    said = case.driver(reference, {**case.inputs, "seed": seed})
                    for label, verdict in said.items():
                        assert verdict == label.split(":")[0], (case.label, seed, label, verdict)
                        checked.add(case.inputs["rotations"][label])
    assert checked == set(spec.DESCRIPTIONS), f"never tried: {set(spec.DESCRIPTIONS) - checked}"


def test_diagnosis_names_no_mistake_that_equals_the_right_answer_and_respects_exact_dtype():
    x = torch.randn(1, 2, 3, 8, generator=torch.Generator().manual_seed(11))
    cos, sin = rotary_cos_sin(torch.zeros(3, dtype=torch.long), 8)  # position 0 everywhere: no rotation is right
    wrong = x + 1.0
    message = explain_rope_mismatch(wrong, x, cos, sin)
    assert "did not rotate" not in message and "largest error" in message
    cos, sin = rotary_cos_sin(torch.arange(3), 8)
    in_float64 = apply_rotary(x.double(), cos.double(), sin.double())
    assert "dtype" in explain_rope_mismatch(in_float64, x, cos, sin)
    assert "dtype" not in explain_rope_mismatch(in_float64 + 1.0, x, cos, sin, exact_dtype=False)
