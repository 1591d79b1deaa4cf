"""Chapter 7: ``LlamaLM.from_hf`` builds what a real ``transformers.LlamaConfig`` describes, or refuses.

The reference is ``transformers.LlamaForCausalLM`` (pinned for the tests; built
from a config with random weights, nothing downloaded), its weights perturbed so
that norms and biases matter. One small model per supported option: the
``llama3`` and ``linear`` rotary scalings, an explicit ``head_dim`` (so that
``H * D != C``), attention and MLP biases, tied embeddings, and all of them at
once. For each: logits of a left-padded batch at real tokens, and our cached,
chunked greedy generation against ``transformers``' own ``generate`` (tokens,
and the logits it returns), with the fast and the teaching path.

Tolerance: float32 ``ATOL = 1e-4``, ``rtol=0``; measured up to about 1.5e-5 at a
logit scale of about 10 (printed with ``pytest -s``). Each option is also shown
to matter: the same weights without it give logits off by more than 1e-2, so
the test cannot pass by ignoring it.
"""

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnlab.generation import generate_with_logits  # noqa: E402
from attnlab.llama import LlamaLM, llama_config_from_hf, load_hf_llama_state_dict  # noqa: E402

ATOL = 1e-4  # float32; measured up to ~1.5e-5
VOCAB, PROMPT, NEW = 40, 20, 8
LLAMA3 = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
              high_freq_factor=4.0, original_max_position_embeddings=16)
LINEAR = dict(rope_type="linear", rope_theta=500.0, factor=4.0)
OPTIONS = {
    "default": {},
    "llama3": dict(rope_parameters=LLAMA3),
    "linear": dict(rope_parameters=LINEAR),
    "head_dim": dict(head_dim=16),
    "attention_bias": dict(attention_bias=True),
    "mlp_bias": dict(mlp_bias=True),
    "tied": dict(tie_word_embeddings=True),
    "everything": dict(rope_parameters=LLAMA3, head_dim=12, attention_bias=True, mlp_bias=True,
                       tie_word_embeddings=True),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hf_model(**options):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
        bos_token_id=None, eos_token_id=None, pad_token_id=0, **options,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # HF initialises with std 0.02, norms at 1 and biases at 0: make every weight count
        for name, param in hf.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 1.0 if "embed" in name else 0.3)
    return config, hf


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, PROMPT))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    mask[2, :12] = 0
    return ids.masked_fill(mask == 0, 0), mask


def hf_position_ids(mask):
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


@pytest.mark.parametrize("impl", ["fast", "teaching"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_from_hf_matches_transformers(option, impl, batch):
    config, hf = hf_model(**OPTIONS[option])
    ours = LlamaLM.from_hf(config, hf.state_dict(), attention_impl=impl)
    ids, mask = batch
    real = mask.bool()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, position_ids=hf_position_ids(mask)).logits
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                          output_logits=True, return_dict_in_generate=True)
        got = ours(ids, mask)
    diff = (got[real] - want[real]).abs().max().item()
    tokens, logits = generate_with_logits(ours, ids, mask, NEW, prefill_chunk=7)
    gen_diff = (logits - torch.stack(out.logits, dim=1)).abs().max().item()
    print(f"{option} ({impl}): forward {diff:.1e}, cached chunked generation {gen_diff:.1e} "
          f"(logits up to {want[real].abs().max():.1f})")
    assert diff <= ATOL
    assert torch.equal(tokens, out.sequences[:, PROMPT:]), "greedy tokens differ from transformers' generate"
    assert gen_diff <= ATOL
    uncached, _ = generate_with_logits(ours, ids, mask, NEW, use_cache=False)
    assert torch.equal(uncached, tokens)
    if option == "tied":
        assert ours.lm_head.weight is ours.embed_tokens.weight


@pytest.mark.parametrize("option", ["llama3", "linear", "head_dim", "attention_bias", "mlp_bias", "tied"])
def test_each_option_matters(option, batch):
    """The same weights run without the option give clearly different logits: the grid is not vacuous."""
    config, hf = hf_model(**OPTIONS[option])
    ids, mask = batch
    ours = LlamaLM.from_hf(config, hf.state_dict())
    plain = dataclasses.replace(ours.config, rope_scaling=None, attention_bias=False, mlp_bias=False,
                                tie_word_embeddings=False)
    if option == "head_dim":
        plain = dataclasses.replace(plain, head_dim=None, d_model=64)  # H * D = 64: the usual layout
        with pytest.raises(ValueError, match="shape mismatch"):
            load_hf_llama_state_dict(LlamaLM(plain), hf.state_dict())
        return
    state = {k: v for k, v in hf.state_dict().items() if not k.endswith(".bias")}
    if option == "tied":
        state["lm_head.weight"] = torch.randn_like(state["model.embed_tokens.weight"])  # untied: a new head
        with pytest.raises(ValueError, match="not tied"):
            LlamaLM.from_hf(config, state)
        return
    other = load_hf_llama_state_dict(LlamaLM(plain).eval(), state)
    with torch.no_grad():
        gap = (other(ids, mask) - ours(ids, mask))[mask.bool()].abs().max().item()
    assert gap > 1e-2, f"{option}: ignoring it changes the logits by only {gap:.1e}"


REFUSED = [
    (dict(rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                               original_max_position_embeddings=16)), r"rope_type='yarn'"),
    (dict(rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)), r"rope_type='dynamic'"),
    (dict(hidden_act="gelu"), r"hidden_act='gelu'"),
    (dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5)),
     r"partial_rotary_factor=0.5"),
]


@pytest.mark.parametrize("options,message", REFUSED, ids=["yarn", "dynamic", "gelu", "partial-rotary"])
def test_unsupported_settings_are_refused_by_name(options, message):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=64, **options,
    )
    with pytest.raises(ValueError, match=message):
        llama_config_from_hf(config)


def test_other_architectures_are_refused():
    with pytest.raises(ValueError, match="model_type='mistral'"):
        llama_config_from_hf(transformers.MistralConfig(hidden_size=32, num_attention_heads=4))


def test_from_hf_copies_and_keeps_the_dtype(batch):
    config, hf = hf_model()
    hf = hf.double()
    ours = LlamaLM.from_hf(config, hf.state_dict(), max_seq_len=40)
    assert ours.lm_head.weight.dtype == torch.float64 and ours.config.max_seq_len == 40
    with torch.no_grad():
        before = ours.embed_tokens.weight.clone()
        hf.model.embed_tokens.weight.add_(1.0)  # the model does not share storage with the state dict
    assert torch.equal(ours.embed_tokens.weight, before)
