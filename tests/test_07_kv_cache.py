"""Chapter 7: KV caches, rotary embeddings and cached greedy generation.

The reference for cached decoding is the same model without a cache: every step
recomputes the whole sequence, so it has no cache, offset or position
bookkeeping to get wrong. Cached generation must give identical greedy tokens
and the same logits within ``ATOL = 1e-5`` (float32, ``rtol=0``); the largest
difference measured here is 6e-7 (printed with ``pytest -s``).

Each known bug of the brief's catalogue for this chapter is injected (a tiny
subclass or a monkeypatched module function) and shown to be caught.
"""

import pytest
import torch

import attnlab.generation
import attnlab.llama
from attnlab.cache import ConcatKVCache, KVCache, cache_nbytes, flops_per_token
from attnlab.generation import generate, generate_with_logits
from attnlab.gqa import kv_bytes_per_token
from attnlab.heads import repeat_kv
from attnlab.llama import LlamaConfig, LlamaLM, RotaryAttention
from attnlab.masks import padding_mask, position_ids
from attnlab.multihead import MultiHeadAttention
from attnlab.rotary import apply_rotary, rotary_cos_sin
from attnlab.tokenizer import CharTokenizer

ATOL = 1e-5  # float32 logits, cached vs uncached; measured max 6e-7
TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")
PROMPTS = ["the cat sat", "a dog", "hi", "sun and moon"]
NEW = 10


def make_model(
    n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0, max_seq_len: int = 64, impl: str = "fast"
) -> LlamaLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads,
        ffn_hidden=64, max_seq_len=max_seq_len, attention_impl=impl,
    )
    return LlamaLM(config).eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: intra-op threads only add synchronisation (3 s vs 10-30 s on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> LlamaLM:
    return make_model()


@pytest.fixture(scope="module")
def left_batch():
    return TOK(PROMPTS, padding_side="left")


@pytest.fixture(scope="module")
def reference(model, left_batch):
    """Uncached greedy tokens and logits for the left-padded batch."""
    ids, mask = left_batch
    return generate_with_logits(model, ids, mask, NEW, use_cache=False)


def assert_same(got, want, label: str) -> None:
    tokens, logits = got
    ref_tokens, ref_logits = want
    diff = (logits - ref_logits).abs().max().item()
    print(f"{label}: max |logit diff| = {diff:.2e}")
    assert torch.equal(tokens, ref_tokens), f"{label}: greedy tokens differ"
    assert diff <= ATOL, f"{label}: logits differ by {diff:.2e} > {ATOL}"


def differs(got, want) -> bool:
    tokens, logits = got
    return not torch.equal(tokens, want[0]) or (logits - want[1]).abs().max().item() > 1e-3


# ================================================================== the cache
def kv(B=2, H=2, T=3, D=4, dtype=torch.float32):
    return torch.randn(B, H, T, D, dtype=dtype), torch.randn(B, H, T, D, dtype=dtype)


def check_cache_contract(cache_cls) -> None:
    """Append chunks of 3, 1, 2, 1 positions; each call returns all of them, in order."""
    torch.manual_seed(1)
    cache = cache_cls(batch_size=2, n_kv_heads=2, capacity=10, head_dim=4)
    seen_k, seen_v = [], []
    for t in (3, 1, 2, 1):
        k, v = kv(T=t)
        k_before, v_before = k.clone(), v.clone()
        seen_k.append(k_before)
        seen_v.append(v_before)
        k_all, v_all = cache.update(k, v)
        assert torch.equal(k, k_before) and torch.equal(v, v_before), "update modified the caller's tensors"
        assert torch.equal(k_all, torch.cat(seen_k, dim=2)), "returned keys are not all keys so far, in order"
        assert torch.equal(v_all, torch.cat(seen_v, dim=2)), "returned values are not all values so far, in order"
        assert cache.length == k_all.shape[2] == sum(x.shape[2] for x in seen_k), "wrong length"


class NeverAppends(KVCache):
    """Bug: returns this call's keys only, storing nothing."""

    def update(self, k, v):
        self.check_update(k, v, self.length)
        return k, v


class AppendsTwice(KVCache):
    """Bug: the update runs twice (e.g. once in the layer, once in the model)."""

    def update(self, k, v):
        super().update(k, v)
        return super().update(k, v)


class OverwritesSlotZero(KVCache):
    """Bug: writes every call at slot 0 instead of at ``length``."""

    def update(self, k, v):
        new = self.check_update(k, v, self._length)
        self.k[:, :, :new].copy_(k)
        self.v[:, :, :new].copy_(v)
        self._length += new
        return self.k[:, :, : self._length], self.v[:, :, : self._length]


@pytest.mark.parametrize("cache_cls", [KVCache, ConcatKVCache])
def test_cache_contract(cache_cls):
    check_cache_contract(cache_cls)


@pytest.mark.parametrize("bug", [NeverAppends, AppendsTwice, OverwritesSlotZero])
def test_cache_contract_catches_bugs(bug):
    with pytest.raises((AssertionError, ValueError)):
        check_cache_contract(bug)


def test_kv_cache_is_preallocated_and_returns_views():
    cache = KVCache(batch_size=2, n_kv_heads=2, capacity=8, head_dim=4)
    assert cache.k.shape == cache.v.shape == (2, 2, 8, 4)
    ptr = cache.k.data_ptr()
    for t in (3, 1, 1):
        k_all, v_all = cache.update(*kv(T=t))
        assert k_all.data_ptr() == ptr and v_all.data_ptr() == cache.v.data_ptr(), "not a view of the buffer"
    assert cache.k.data_ptr() == ptr, "the buffer was reallocated: grew by concatenation?"
    assert cache.length == 5
    assert cache.nbytes == 2 * 2 * 2 * 8 * 4 * 4  # k and v, (B, Hkv, capacity, D), float32


def test_concat_cache_grows():
    cache = ConcatKVCache(batch_size=2, n_kv_heads=2, capacity=8, head_dim=4)
    assert cache.nbytes == 0 and cache.length == 0
    cache.update(*kv(T=3))
    assert cache.nbytes == 2 * 2 * 2 * 3 * 4 * 4


@pytest.mark.parametrize("cache_cls", [KVCache, ConcatKVCache])
def test_reset(cache_cls):
    cache = cache_cls(batch_size=2, n_kv_heads=2, capacity=4, head_dim=4)
    cache.update(*kv(T=4))
    cache.reset()
    assert cache.length == 0
    k, v = kv(T=2)
    k_all, v_all = cache.update(k, v)
    assert torch.equal(k_all, k) and torch.equal(v_all, v)


REFUSALS = [
    ("overflow", lambda: kv(T=4), r"overflow.*length 3.*T=4.*capacity 6"),
    ("batch", lambda: kv(B=3), r"batch size.*B=3.*batch_size=2"),
    ("heads", lambda: kv(H=4), r"head count.*4 heads.*Hkv=2"),
    ("head_dim", lambda: kv(D=8), r"head_dim.*D=8.*head_dim=4"),
    ("dtype", lambda: kv(dtype=torch.float64), r"dtype.*float64.*float32"),
    ("device", lambda: (torch.zeros(2, 2, 1, 4, device="meta"),) * 2, r"device.*meta.*cpu"),
    ("k vs v", lambda: (kv()[0], kv(T=2)[1]), r"same shape.*\(2, 2, 3, 4\).*\(2, 2, 2, 4\)"),
    ("3-D", lambda: (torch.zeros(2, 3, 4),) * 2, r"\(B, Hkv, T, D\).*\(2, 3, 4\)"),
]


@pytest.mark.parametrize("cache_cls", [KVCache, ConcatKVCache])
@pytest.mark.parametrize("name,make,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_update_leaves_cache_unchanged(cache_cls, name, make, message):
    cache = cache_cls(batch_size=2, n_kv_heads=2, capacity=6, head_dim=4)
    cache.update(*kv(T=3))
    before = (cache.length, cache.k.clone(), cache.v.clone())
    with pytest.raises(ValueError, match=message):
        cache.update(*make())
    assert cache.length == before[0]
    assert torch.equal(cache.k, before[1]) and torch.equal(cache.v, before[2])
    cache.update(*kv(T=3))  # still usable: fills the capacity exactly
    assert cache.length == 6


def test_constructor_refusals():
    with pytest.raises(ValueError, match="capacity=0"):
        KVCache(batch_size=1, n_kv_heads=1, capacity=0, head_dim=4)
    with pytest.raises(ValueError, match="dtype"):
        KVCache(batch_size=1, n_kv_heads=1, capacity=4, head_dim=4, dtype=torch.long)


@pytest.mark.parametrize("n_kv_heads", [8, 4, 2, 1])
def test_cache_memory_shrinks_by_group_size(n_kv_heads):
    """MHA (Hkv = H = 8), GQA (4, 2), MQA (1): the caches hold Hkv heads, H / Hkv times fewer bytes."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=TOK.vocab_size, d_model=64, n_layers=2, n_heads=8, n_kv_heads=n_kv_heads)
    lm = LlamaLM(config)
    B, capacity = 2, 32
    mha_bytes = kv_bytes_per_token(2, 8, 8, dtype_bytes=4) * capacity * B
    caches = lm.new_caches(B, capacity)
    assert cache_nbytes(caches) * (8 // n_kv_heads) == mha_bytes
    assert cache_nbytes(caches) == kv_bytes_per_token(2, n_kv_heads, 8, dtype_bytes=4) * capacity * B
    ids, mask = TOK(PROMPTS[:2], padding_side="left")
    lm(ids, mask, caches=caches)  # the model's updates fit caches of Hkv heads
    assert all(cache.length == ids.shape[1] for cache in caches)


class RepeatsBeforeCache(RotaryAttention):
    """Bug: expands K/V to H heads before the cache (so the cache stores G copies)."""

    def split(self, q, k, v):
        q, k, v = super().split(q, k, v)
        g = self.config.group_size
        return q, repeat_kv(k, g), repeat_kv(v, g)  # (B, Hkv, T, D) -> (B, H, T, D)

    def attend(self, q, k, v, attn_mask):
        return MultiHeadAttention.attend(self, q, k, v, attn_mask)


def test_caching_repeated_kv_is_caught(model, left_batch, reference):
    ids, mask = left_batch
    buggy = make_model()
    for block in buggy.layers:
        good = block.self_attn
        block.self_attn = RepeatsBeforeCache(good.config, good.rope_theta)
        block.self_attn.load_state_dict(good.state_dict())
    # Its outputs are right (so an output test alone misses it) ...
    assert_same(generate_with_logits(buggy, ids, mask, NEW, use_cache=False), reference, "repeat before cache")
    # ... but caches sized for Hkv heads refuse its H-head keys, naming the mistake.
    with pytest.raises(ValueError, match="head count mismatch.*4 heads.*Hkv=2"):
        generate(buggy, ids, mask, NEW)
    # Given caches that take H heads, it would use G = 2 times the memory.
    caches = [
        KVCache(batch_size=ids.shape[0], n_kv_heads=4, capacity=32, head_dim=8) for _ in buggy.layers
    ]
    buggy(ids, mask, caches=caches)
    assert cache_nbytes(caches) == 2 * cache_nbytes(model.new_caches(ids.shape[0], 32))


# ================================================================= rotary
def test_rotary_relative_position():
    """q·k after rotation depends only on the position difference m - n."""
    torch.manual_seed(0)
    D = 16
    q, k = torch.randn(1, 1, 1, D, dtype=torch.float64), torch.randn(1, 1, 1, D, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        cq, sq = rotary_cos_sin(torch.tensor([[m]]), D, dtype=torch.float64)
        ck, sk = rotary_cos_sin(torch.tensor([[n]]), D, dtype=torch.float64)
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum().item()

    for diff in (0, 1, 5):
        scores = [score(n + diff, n) for n in (0, 3, 17, 40)]
        assert max(scores) - min(scores) < 1e-5, (diff, scores)  # angles are float32: ~1e-6 error
    assert abs(score(5, 0) - score(6, 0)) > 1e-3  # and it does depend on the difference


def test_rotary_preserves_norm_and_position_zero_is_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8)
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 7, 8, 9]])  # (B, T), e.g. a left-padded row
    cos, sin = rotary_cos_sin(pos, 8)
    y = apply_rotary(x, cos, sin)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(y[0, :, 0], x[0, :, 0]) and torch.allclose(y[1, :, :2], x[1, :, :2])
    assert not torch.allclose(y[0, :, 1], x[0, :, 1])
    # per-row positions: row 1's position 7 equals row 0 rotated by (T, D) tables at position 7
    cos7, sin7 = rotary_cos_sin(torch.tensor([7]), 8)
    assert torch.allclose(y[1, :, 2:3], apply_rotary(x[1:2, :, 2:3], cos7, sin7)[0])


def test_rotary_refusals():
    with pytest.raises(ValueError, match="head_dim=7"):
        rotary_cos_sin(torch.tensor([[0]]), 7)
    with pytest.raises(ValueError, match=r"\(1, 3, 8\)"):
        cos, sin = rotary_cos_sin(torch.zeros(1, 3, dtype=torch.long), 8)
        apply_rotary(torch.zeros(1, 2, 4, 8), cos, sin)


# ====================================================== cached == uncached
def test_single_prompt_cached_equals_uncached(model):
    ids, mask = TOK(["the cat sat"])
    want = generate_with_logits(model, ids, mask, NEW, use_cache=False)
    assert_same(generate_with_logits(model, ids, mask, NEW, use_cache=True), want, "single prompt")


def test_left_padded_batch_cached_equals_uncached(model, left_batch, reference):
    ids, mask = left_batch
    ids_before, mask_before = ids.clone(), mask.clone()
    assert_same(generate_with_logits(model, ids, mask, NEW), reference, "left-padded batch")
    assert_same(
        generate_with_logits(model, ids, mask, NEW, cache_cls=ConcatKVCache), reference, "concat cache"
    )
    assert torch.equal(ids, ids_before) and torch.equal(mask, mask_before), "generate modified its inputs"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 100])
def test_chunked_prefill_equals_uncached(model, left_batch, reference, chunk):
    ids, mask = left_batch
    got = generate_with_logits(model, ids, mask, NEW, prefill_chunk=chunk)
    assert_same(got, reference, f"prefill_chunk={chunk}")


@pytest.mark.parametrize("n_kv_heads", [4, 1])
def test_mha_and_mqa_cached_equals_uncached(left_batch, n_kv_heads):
    lm = make_model(n_kv_heads=n_kv_heads, seed=3)
    ids, mask = left_batch
    want = generate_with_logits(lm, ids, mask, NEW, use_cache=False)
    assert_same(generate_with_logits(lm, ids, mask, NEW, prefill_chunk=4), want, f"Hkv={n_kv_heads}")


def test_left_padding_matches_each_prompt_alone(model, reference):
    tokens, logits = reference
    for row, text in enumerate(PROMPTS):
        ids, mask = TOK([text])
        alone = generate_with_logits(model, ids, mask, NEW)
        assert_same((tokens[row:row + 1], logits[row:row + 1]), alone, f"left-padded row {row}")


def test_right_padding_generates_differently(model):
    ids, mask = TOK(PROMPTS, padding_side="right")
    tokens = generate(model, ids, mask, NEW)
    padded_rows = [row for row in range(len(PROMPTS)) if mask[row, -1] == 0]
    assert padded_rows
    wrong = [row for row in padded_rows if not torch.equal(tokens[row], generate(model, *TOK([PROMPTS[row]]), NEW)[0])]
    assert wrong == padded_rows, "right padding should continue after the pads, not after the prompt"


def test_no_nan_on_pad_queries(model, left_batch):
    ids, mask = left_batch
    assert torch.isfinite(model(ids, mask)).all()
    caches = model.new_caches(ids.shape[0], 32)
    assert torch.isfinite(model(ids[:, :3], mask[:, :3], caches=caches)).all()  # row 2: all pads so far
    assert torch.isfinite(model(ids[:, 3:], mask, caches=caches)).all()


def test_generation_refusals(model):
    ids, mask = TOK(["abc"])
    with pytest.raises(ValueError, match=r"P=3.*max_new_tokens=62.*max_seq_len 64"):
        generate(model, ids, mask, 62)
    long_ids = torch.ones(1, 65, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len 64"):
        generate(model, long_ids, None, 1)
    with pytest.raises(ValueError, match=r"max_seq_len 64"):
        model(long_ids)
    with pytest.raises(ValueError, match=r"prompts \[1\] are all padding"):
        generate(model, torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 1], [0, 0, 0]]), 2)
    caches = model.new_caches(1, 8)
    model(ids, mask, caches=caches)
    with pytest.raises(ValueError, match=r"\(B, S\) = \(1, 4\).*\(1, 1\)"):
        model(ids[:, :1], mask[:, :1], caches=caches)  # the mask must cover cached + new
    with pytest.raises(ValueError, match="capacity 65"):
        model.new_caches(1, 65)


# ============================================== known bugs, each caught
def top_left_mask(attention_mask, T):
    """Bug: ``is_causal=True``-style triangle aligned to the top-left (right only when T == S)."""
    S = attention_mask.shape[1]
    return padding_mask(attention_mask) & torch.ones(T, S, dtype=torch.bool).tril()


def positions_restart(attention_mask, T):
    """Bug: positions computed over the new tokens' columns only, restarting at 0 each step."""
    return position_ids(attention_mask[:, -T:])


def mask_dropped(attention_mask, n_new=1):
    """Bug: after the prefill the pad mask is replaced by all ones."""
    return attention_mask.new_ones(attention_mask.shape[0], attention_mask.shape[1] + n_new)


@pytest.mark.parametrize(
    "target,bug",
    [
        (attnlab.llama, ("attention_mask_for", top_left_mask)),
        (attnlab.llama, ("new_token_positions", positions_restart)),
        (attnlab.generation, ("extend_attention_mask", mask_dropped)),
    ],
    ids=["top-left causal mask", "positions restart at 0", "pad mask dropped after prefill"],
)
def test_known_decoding_bugs_are_caught_on_the_teaching_path(left_batch, reference, monkeypatch, target, bug):
    ids, mask = left_batch
    teaching = make_model(impl="teaching")
    monkeypatch.setattr(target, *bug)
    assert differs(generate_with_logits(teaching, ids, mask, NEW, prefill_chunk=4), reference)


def fast_top_left(self, end, new):
    """Bug: the prompt chunk's causal triangle aligned to the top-left."""
    keys = self.keep[:, None, None, :end]
    return keys & torch.ones(new, end, dtype=torch.bool).tril() if new > 1 else keys


def fast_positions_restart(self, end, new):
    """Bug: each call's positions start again at 0."""
    return self.positions[..., :new]


def fast_pad_mask_dropped(self, end, new):
    """Bug: the decode steps forget the prompt's pads."""
    return None if new == 1 else FAST_KEY_MASK(self, end, new)


FAST_KEY_MASK = attnlab.generation.DecodeState.key_mask


@pytest.mark.parametrize(
    "method,bug",
    [("key_mask", fast_top_left), ("position_ids", fast_positions_restart), ("key_mask", fast_pad_mask_dropped)],
    ids=["top-left causal mask", "positions restart at 0", "pad mask dropped after prefill"],
)
def test_known_decoding_bugs_are_caught_on_the_fast_path(model, left_batch, reference, monkeypatch, method, bug):
    """The fast loop keeps its mask and positions instead of rebuilding them: break each, see it caught."""
    ids, mask = left_batch
    assert model.config.attention_impl == "fast"
    monkeypatch.setattr(attnlab.generation.DecodeState, method, bug)
    assert differs(generate_with_logits(model, ids, mask, NEW, prefill_chunk=4), reference)


@pytest.mark.parametrize("bug", [NeverAppends, AppendsTwice, OverwritesSlotZero])
def test_buggy_caches_are_caught_in_generation(model, left_batch, reference, bug):
    ids, mask = left_batch
    try:
        got = generate_with_logits(model, ids, mask, NEW, cache_cls=bug)
    except ValueError as error:  # the offset-aware mask no longer fits the keys, or overflow
        assert any(word in str(error) for word in ("attn_mask", "overflow", "cover the cached"))
    else:
        assert differs(got, reference)


def test_flops_per_token_matches_pytorchs_flop_counter():
    """The chapter's cost formula against torch.utils.flop_counter on the real model (matmuls only).

    The teaching path, whose attention is explicit matrix products the counter sees (it does
    not count the CPU's fused attention kernel); it computes the LM head at every position.
    """
    from torch.utils.flop_counter import FlopCounterMode

    lm = make_model(n_heads=4, n_kv_heads=2, impl="teaching")
    sizes = dict(L=2, C=32, H=4, Hkv=2, F=64, V=TOK.vocab_size)
    S, lm_head = 10, 2 * 32 * TOK.vocab_size
    ids = torch.randint(3, TOK.vocab_size, (1, S))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            lm(ids)  # no cache: all S positions through every layer
        assert counter.get_total_flops() == flops_per_token(S, cached=False, **sizes) + (S - 1) * lm_head
        caches = lm.new_caches(1, S)
        lm(ids[:, :-1], caches=caches)
        with FlopCounterMode(display=False) as counter:
            lm(ids[:, -1:], caches=caches)  # one token after S - 1 cached ones
        assert counter.get_total_flops() == flops_per_token(S, cached=True, **sizes)
