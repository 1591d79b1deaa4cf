"""Chapter 7: our Llama-style model against Hugging Face's ``LlamaForCausalLM``.

The reference is code nobody here wrote: ``transformers.LlamaForCausalLM`` built
from a ``transformers.LlamaConfig`` with random weights (nothing is downloaded),
eager attention, grouped-query heads and a non-default ``rope_theta``. Its
weights (all of them perturbed away from their initial values, norms included)
are copied into ``attnlab.llama.LlamaLM`` with ``load_hf_llama_state_dict``.

The batch is left-padded; Hugging Face gets the same ``attention_mask`` and
``position_ids`` computed its own way (``cumsum - 1``, pads set to 1). Logits
are compared at real tokens only: a pad query attends to nothing, which we turn
into a zero output and Hugging Face's eager softmax into a uniform average;
both are meaningless and never feed a real token.

Tolerance: float32 ``ATOL = 1e-4``, ``rtol=0``; measured max differences are
about 4e-6 at a logit scale of about 7 (printed with ``pytest -s``). Greedy tokens must be identical, with
and without a cache on either side, and equal to ``transformers``' own
``generate``.
"""

import inspect

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnlab.generation import generate_with_logits  # noqa: E402
from attnlab.llama import LlamaConfig, LlamaLM, load_hf_llama_state_dict  # noqa: E402
from attnlab.tokenizer import CharTokenizer  # noqa: E402

ATOL = 1e-4  # float32; measured up to 4.2e-6 (logits up to ~7)
TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")
PROMPTS = ["the cat sat", "a dog", "hi", "sun and moon"]
NEW = 8
SIZES = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64, rope_theta=100.0, rms_eps=1e-5)
# transformers 5 renamed forward's past_key_values to cache; accept either.
CACHE_KW = "cache" if "cache" in inspect.signature(transformers.LlamaForCausalLM.forward).parameters else "past_key_values"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(
        vocab_size=TOK.vocab_size,
        hidden_size=SIZES["d_model"],
        intermediate_size=SIZES["ffn_hidden"],
        num_hidden_layers=SIZES["n_layers"],
        num_attention_heads=SIZES["n_heads"],
        num_key_value_heads=SIZES["n_kv_heads"],
        max_position_embeddings=64,
        rms_norm_eps=SIZES["rms_eps"],
        rope_theta=SIZES["rope_theta"],
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        pad_token_id=TOK.pad_id,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():  # HF initialises with std 0.02 and norms at 1: make every weight count
        for name, param in hf.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.3 if "embed" not in name else 1.0)
    ours = LlamaLM(LlamaConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES)).eval()
    load_hf_llama_state_dict(ours, hf.state_dict())
    return hf, ours


@pytest.fixture(scope="module")
def batch():
    return TOK(PROMPTS, padding_side="left")


def hf_position_ids(mask: torch.Tensor) -> torch.Tensor:
    """What ``transformers``' generate does for left padding: count real tokens, pads get 1."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def max_diff_at_real_tokens(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    real = mask.bool()  # (B, T)
    return (ours[real] - theirs[real]).abs().max().item()  # (n_real, V)


@torch.no_grad()
def hf_greedy(hf, ids, mask, use_cache: bool):
    """Greedy decoding written against Hugging Face's forward: (tokens (B, N), logits (B, N, V))."""
    tokens, step_logits = [], []
    seq, m = ids, mask
    cache = transformers.DynamicCache(config=hf.config) if use_cache else None
    feed = ids
    for _ in range(NEW):
        pos = hf_position_ids(m)[:, -feed.shape[1]:]
        kwargs = {CACHE_KW: cache, "use_cache": True} if use_cache else {"use_cache": False}
        logits = hf(input_ids=feed, attention_mask=m, position_ids=pos, **kwargs).logits[:, -1]
        token = logits.argmax(-1)
        tokens.append(token)
        step_logits.append(logits)
        seq = torch.cat([seq, token[:, None]], dim=1)
        m = torch.cat([m, torch.ones_like(m[:, :1])], dim=1)
        feed = token[:, None] if use_cache else seq
    return torch.stack(tokens, 1), torch.stack(step_logits, 1)


def test_weight_mapping_is_complete(models):
    hf, ours = models
    hf_state = hf.state_dict()
    for name, tensor in ours.state_dict().items():
        hf_name = name if name == "lm_head.weight" else f"model.{name}"
        assert torch.equal(tensor, hf_state[hf_name]), name
    assert len(ours.state_dict()) == len([n for n in hf_state if not n.endswith("inv_freq")])
    bad = dict(hf_state)
    bad.pop("model.norm.weight")
    with pytest.raises(ValueError, match=r"missing \['model.norm.weight'\]"):
        load_hf_llama_state_dict(ours, bad)


@torch.no_grad()
def test_forward_logits_match(models, batch):
    hf, ours = models
    ids, mask = batch
    theirs = hf(input_ids=ids, attention_mask=mask, position_ids=hf_position_ids(mask), use_cache=False).logits
    mine = ours(ids, mask)
    diff = max_diff_at_real_tokens(mine, theirs, mask)
    print(f"forward, left-padded batch: max |logit diff| at real tokens = {diff:.2e} "
          f"(logit scale {theirs.abs().max().item():.1f})")
    assert diff <= ATOL
    assert torch.isfinite(mine).all()


@pytest.mark.parametrize("hf_cache", [False, True], ids=["hf-no-cache", "hf-cache"])
@pytest.mark.parametrize("our_cache", [False, True], ids=["ours-no-cache", "ours-cache"])
def test_greedy_generation_matches(models, batch, hf_cache, our_cache):
    hf, ours = models
    ids, mask = batch
    want_tokens, want_logits = hf_greedy(hf, ids, mask, use_cache=hf_cache)
    tokens, logits = generate_with_logits(ours, ids, mask, NEW, use_cache=our_cache)
    diff = (logits - want_logits).abs().max().item()
    print(f"greedy, hf cache={hf_cache}, ours cache={our_cache}: max |logit diff| = {diff:.2e}")
    assert torch.equal(tokens, want_tokens)
    assert diff <= ATOL


def test_matches_transformers_generate(models, batch):
    hf, ours = models
    ids, mask = batch
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, use_cache=True,
            pad_token_id=TOK.pad_id,
        )
    tokens, _ = generate_with_logits(ours, ids, mask, NEW, prefill_chunk=4)
    assert torch.equal(tokens, out[:, ids.shape[1]:])
