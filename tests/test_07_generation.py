"""Chapter 7: what users expect from ``generate``: EOS, sampling, streaming, logits on request.

References nobody here wrote: ``transformers``' ``generate`` for stopping at
EOS with padded finished rows (same weights, loaded with ``LlamaLM.from_hf``),
and its ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
``TopPLogitsWarper`` for the sampling filters (compared exactly: the same float32
operations). Greedy decoding must stay identical with and without a cache, on
both paths.
"""

import dataclasses

import pytest
import torch

import attnlab.generation

from attnlab.generation import generate, generate_with_logits, stream_generate
from attnlab.llama import LlamaConfig, LlamaLM
from attnlab.sampling import Sampling, choose_next, warp_logits
from attnlab.tokenizer import CharTokenizer

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")
PROMPTS = ["the cat sat", "a dog", "hi", "sun and moon"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_hidden=64, max_seq_len=64)
    return LlamaLM(config).eval()


@pytest.fixture(scope="module")
def batch():
    return TOK(PROMPTS, padding_side="left")


def an_eos_that_stops_some_rows_early(tokens: torch.Tensor) -> int:
    """The token id whose first occurrence ends the most rows before the last step (ties: smallest id)."""
    counts = {}
    for row in tokens.tolist():
        for token in set(row[:-2]):
            counts[token] = counts.get(token, 0) + 1
    return min(counts, key=lambda t: (-counts[t], t))


@pytest.mark.parametrize("impl", ["fast", "teaching"])
def test_stop_at_eos_pads_finished_rows(model, batch, impl):
    ids, mask = batch
    if impl == "teaching":
        twin = LlamaLM(dataclasses.replace(model.config, attention_impl="teaching")).eval()
        twin.load_state_dict(model.state_dict())
        model = twin
    free = generate(model, ids, mask, 20)
    eos = an_eos_that_stops_some_rows_early(free)
    pad = TOK.pad_id
    tokens = generate(model, ids, mask, 20, eos_token_id=eos, pad_token_id=pad)
    padded_rows = 0
    for row, want in zip(tokens.tolist(), free.tolist()):
        stop = want.index(eos) + 1 if eos in want[: len(row)] else len(row)
        assert row[:stop] == want[:stop], "before EOS the tokens are the unconstrained ones"
        assert all(t == pad for t in row[stop:]), "after EOS a row holds only pad_token_id"
        padded_rows += stop < len(row)
    assert padded_rows >= 1, "the test needs a row that finished before the others"
    ended = [eos in row for row in free.tolist()]
    if all(ended):
        assert tokens.shape[1] == max(row.index(eos) + 1 for row in free.tolist()), "stops once all rows ended"
    for use_cache, chunk in ((False, None), (True, 3)):
        same = generate(model, ids, mask, 20, use_cache, chunk, eos_token_id=eos, pad_token_id=pad)
        assert torch.equal(same, tokens)


def test_a_late_stop_flag_still_returns_the_exact_columns(model, batch, monkeypatch):
    """On a GPU the all-finished flag arrives a step or more late: generate trims the extra columns."""
    ids, mask = batch
    free = generate(model, ids, mask, 20)
    eos = sorted({int(t) for t in free[:, 5]})  # every row ends by step 5
    exact = generate(model, ids, mask, 20, eos_token_id=eos, pad_token_id=TOK.pad_id)
    assert exact.shape[1] <= 6, "the test needs every row to end early"
    monkeypatch.setattr(attnlab.generation._StopAtEos, "all_done", lambda self: False)  # never in time
    late, logits = generate_with_logits(model, ids, mask, 20, eos_token_id=eos, pad_token_id=TOK.pad_id)
    assert torch.equal(late, exact) and logits.shape[1] == exact.shape[1]


def test_eos_matches_transformers_generate(batch):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=TOK.pad_id,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            param.normal_(0.0, 1.0 if "embed" in name else 0.3) if not name.endswith("norm.weight") else None
    ours = LlamaLM.from_hf(config, hf.state_dict())
    ids, mask = batch
    free = generate(ours, ids, mask, 24)
    eos = [an_eos_that_stops_some_rows_early(free), int(free[0, 1])]
    with torch.no_grad():
        want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                           eos_token_id=eos, pad_token_id=TOK.pad_id)[:, ids.shape[1]:]
    got = generate(ours, ids, mask, 24, eos_token_id=eos, pad_token_id=TOK.pad_id)
    assert (got == TOK.pad_id).any(), "the test needs a row that finished early"
    assert torch.equal(got, want), f"ours {got.tolist()}\ntransformers {want.tolist()}"


def test_warpers_match_transformers():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    logits = 3 * torch.randn(5, 50)
    logits[0, :10] = 2.0  # ties at the top-k boundary
    for temperature, top_k, top_p in [(0.7, None, None), (1.0, 5, None), (1.0, None, 0.8), (1.3, 10, 0.6),
                                      (1.0, 50, 1.0), (0.5, 1, None)]:
        want = logits.clone()
        if temperature != 1.0:
            want = transformers.TemperatureLogitsWarper(temperature)(None, want)
        if top_k is not None:
            want = transformers.TopKLogitsWarper(top_k)(None, want)
        if top_p is not None and top_p < 1.0:
            want = transformers.TopPLogitsWarper(top_p)(None, want)
        got = warp_logits(logits, temperature, top_k, top_p)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), (temperature, top_k, top_p)
        assert torch.equal(got[~torch.isinf(got)], want[~torch.isinf(want)]), (temperature, top_k, top_p)


def test_sampling_is_seeded_and_draws_only_allowed_tokens(model, batch):
    ids, mask = batch

    def sample(seed, **kw):
        return generate(model, ids, mask, 12, do_sample=True, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(1, temperature=0.8, top_k=5), sample(1, temperature=0.8, top_k=5))
    assert not torch.equal(sample(1, temperature=1.5), sample(2, temperature=1.5))
    assert torch.equal(sample(3, top_k=1), generate(model, ids, mask, 12)), "top_k=1 is greedy"
    torch.manual_seed(0)
    logits = torch.randn(3, 30)
    allowed = ~torch.isinf(warp_logits(logits, 1.0, 4, 0.7))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        token = choose_next(logits, Sampling(do_sample=True, top_k=4, top_p=0.7, generator=g))
        assert allowed[torch.arange(3), token].all()


def test_streaming_gives_the_tokens_as_they_come(model, batch):
    ids, mask = batch
    seen = []
    tokens = generate(model, ids, mask, 7, on_token=seen.append)
    assert torch.equal(torch.stack(seen, 1), tokens)
    assert torch.equal(torch.stack(list(stream_generate(model, ids, mask, 7)), 1), tokens)
    with_logits, logits = generate_with_logits(model, ids, mask, 7)
    assert torch.equal(with_logits, tokens) and logits.shape == (4, 7, TOK.vocab_size)


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=0.5), "only apply with do_sample=True"),
    (dict(do_sample=True, temperature=0.0), "temperature must be a number > 0"),
    (dict(do_sample=True, top_k=0), "top_k must be a positive int"),
    (dict(do_sample=True, top_p=1.5), r"top_p must be a number in \(0, 1\]"),
    (dict(do_sample=True, generator=3), "generator must be a torch.Generator"),
    (dict(eos_token_id=99), r"eos_token_id.*\[0, 31\).*99"),
    (dict(pad_token_id=2), "needs an eos_token_id"),
    (dict(eos_token_id=3, pad_token_id=-1), "pad_token_id"),
    (dict(on_token=5), "on_token must be callable"),
])
def test_bad_options_raise_value_error_naming_them(model, batch, kwargs, message):
    ids, mask = batch
    with pytest.raises(ValueError, match=message):
        generate(model, ids, mask, 3, **kwargs)
