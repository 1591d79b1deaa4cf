"""Chapter 7: the graders' diagnosis helpers and ``LlamaLM.forward_with_mask``.

``greedy_with_mistake`` replays cached greedy decoding with one classic mistake;
with none it must agree with the package's generation, and each mistake must
really change the logits (else the diagnosis could name a harmless variant).
"""

import pytest
import torch

from attnlab.diagnose import GENERATION_MISTAKES, explain_cache_update, explain_generation_mismatch, greedy_with_mistake
from attnlab.generation import generate_with_logits
from attnlab.llama import LlamaConfig, LlamaLM
from attnlab.masks import attention_mask_for, position_ids
from attnlab.tokenizer import CharTokenizer

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = LlamaLM(LlamaConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                ffn_hidden=64, max_seq_len=64)).eval()
    ids, mask = TOK(["the cat sat", "a dog", "hi"], padding_side="left")
    return model, ids, mask


def test_forward_with_mask_matches_forward(setup):
    model, ids, mask = setup
    with torch.no_grad():
        want = model(ids, attention_mask=mask)
        got = model.forward_with_mask(ids, attention_mask_for(mask, ids.shape[1]), position_ids(mask))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="n_layers=2"):
        model.forward_with_mask(ids, attention_mask_for(mask, ids.shape[1]), position_ids(mask), caches=[None])


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_no_mistake_is_the_package_generation(setup, chunk):
    model, ids, mask = setup
    tokens, logits = greedy_with_mistake(model, ids, mask, 6, chunk)
    want_tokens, want_logits = generate_with_logits(model, ids, mask, 6, use_cache=False)
    assert torch.equal(tokens, want_tokens)
    assert torch.allclose(logits, want_logits, atol=1e-5, rtol=0)
    assert explain_generation_mismatch(model, ids, mask, logits + 1.0, chunk).startswith("cached logits differ")


@pytest.mark.parametrize("mistake", sorted(GENERATION_MISTAKES))
def test_each_mistake_changes_the_logits_and_is_named(setup, mistake):
    model, ids, mask = setup
    _, want = generate_with_logits(model, ids, mask, 6, use_cache=False)
    _, wrong = greedy_with_mistake(model, ids, mask, 6, 3, mistake)
    assert (wrong - want).abs().max() > 1e-3
    assert GENERATION_MISTAKES[mistake] in explain_generation_mismatch(model, ids, mask, wrong, 3)
    with pytest.raises(ValueError, match="unknown mistake"):
        greedy_with_mistake(model, ids, mask, 2, mistake="nope")


def test_explain_cache_update():
    k = torch.randn(1, 2, 3, 4)
    assert explain_cache_update(0, 3, 3, k, k) is None
    assert "never appends" in explain_cache_update(0, 0, 3, k, k)
    assert "appends twice" in explain_cache_update(0, 6, 3, k, k)
    assert "never appends" in explain_cache_update(2, 3, 1, k[:, :, -1:], k)
    bad = k.clone()
    bad[:, :, 0] = 0
    assert "wrong slot" in explain_cache_update(2, 3, 1, bad, k)


def test_explain_cache_update_names_the_slots_and_types():
    k = torch.randn(1, 2, 4, 3)
    assert "must be an int" in explain_cache_update(2, torch.tensor(4), 2, k, k)
    assert "must return (k_all, v_all) tensors" in explain_cache_update(2, 4, 2, None, k)
    assert "dtype torch.float64" in explain_cache_update(2, 4, 2, k.double(), k)
    new_wrong = k.clone()
    new_wrong[:, :, 3] = 0  # only this update's slot: not an overwrite of the old ones
    message = explain_cache_update(2, 4, 2, new_wrong, k)
    assert "slots [3]" in message and "overwrites" not in message


def test_chunk_positions_restart_is_named_only_for_a_chunked_prefill(setup):
    model, ids, mask = setup
    _, want = generate_with_logits(model, ids, mask, 4, use_cache=False)
    _, one_shot = greedy_with_mistake(model, ids, mask, 4, None, "chunk_positions_restart")
    assert torch.allclose(one_shot, want, atol=1e-5)  # one chunk: its positions are the whole prompt's
    assert "prefill chunk" not in explain_generation_mismatch(model, ids, mask, one_shot + 1.0, None)
