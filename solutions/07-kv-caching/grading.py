"""Assignment 07's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained. A cache is built from the
learner's class and driven through a fixed sequence of updates; a model is built inside the
driver from a seed in the inputs (``attnlab.LlamaLM``, the same weights here and in the sandbox);
the learner's checker is handed decoders that are wrong everywhere or in one place only, built
inside the driver.

Generation cases are drawn so that no greedy choice is a near tie (the top two logits differ by
more than ``MARGIN`` at every step), so a correct decoder's tokens cannot flip on rounding.
"""

import torch

from attnlab import CharTokenizer, LlamaConfig, LlamaLM, generate_with_logits
from attnlab_grader.authority import Case, Part

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")
WORDS = "the cat sat on a mat while sun and moon rise over hills far away".split()
MARGIN = 1e-3
# The task: none of attnlab's caches, generation or masks, nothing from attnlab.diagnose.
FORBIDDEN_NAMES = frozenset({"KVCache", "ConcatKVCache", "generate", "generate_with_logits", "attention_mask_for",
                             "causal_mask", "diagnose", "greedy_with_mistake"})
CACHE_CELLS = ("kv_cache",)
GENERATE_CELLS = ("kv_cache", "decode_mask", "greedy_generate")


def rules(*cells, ops=frozenset()):
    return dict(forbidden_ops=frozenset(ops), forbidden_names=FORBIDDEN_NAMES, answer_cells=cells)


# ----------------------------------------------------------------------------- drivers
def drive_cache(learner, inputs):
    c = inputs["config"]
    cache = learner["KVCache"](c["B"], c["Hkv"], c["capacity"], c["D"], dtype=inputs["dtype"])
    result = {"length of a new cache": cache.length}
    for n, (k, v) in enumerate(zip(inputs["k"], inputs["v"])):
        if inputs["copies"]:  # the caller changes its own tensors after the update: the cache must not see it
            k, v = k.clone(), v.clone()
        if inputs["transposed"]:  # non-contiguous views: (B, T, Hkv, D) -> (B, Hkv, T, D)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        k_all, v_all = cache.update(k, v)
        snapshot = [t.clone() if isinstance(t, torch.Tensor) else t for t in (k_all, v_all)]  # views change later
        result[f"update {n + 1} (T={k.shape[2]})"] = {"length afterwards": cache.length, "keys returned": snapshot[0],
                                                      "values returned": snapshot[1]}
        if inputs["copies"]:
            k.add_(1000.0)
            v.mul_(-1.0)
    return result


def drive_preallocated(learner, inputs):
    c = inputs["config"]
    cache = learner["KVCache"](c["B"], c["Hkv"], c["capacity"], c["D"], dtype=inputs["dtype"])
    buffers = (cache.k, cache.v)
    result = {"shape of cache.k after __init__": tuple(buffers[0].shape),
              "shape of cache.v after __init__": tuple(buffers[1].shape),
              "dtype of cache.k": buffers[0].dtype, "dtype of cache.v": buffers[1].dtype}
    pointers = (buffers[0].data_ptr(), buffers[1].data_ptr())
    same, views = True, True
    for k, v in zip(inputs["k"], inputs["v"]):
        k_all, v_all = cache.update(k, v)
        same = same and cache.k is buffers[0] and cache.v is buffers[1] \
            and (cache.k.data_ptr(), cache.v.data_ptr()) == pointers
        views = views and isinstance(k_all, torch.Tensor) and isinstance(v_all, torch.Tensor) \
            and (k_all.data_ptr(), v_all.data_ptr()) == pointers
    result["update keeps writing into the same cache.k and cache.v"] = same
    result["update returns views of cache.k and cache.v"] = views
    return result


def drive_cache_refuses(learner, inputs):
    c = inputs["config"]
    cache = learner["KVCache"](c["B"], c["Hkv"], c["capacity"], c["D"], dtype=torch.float32)
    for k, v in zip(inputs["fill_k"], inputs["fill_v"]):
        cache.update(k, v)
    length, k_buffer, v_buffer = cache.length, cache.k.clone(), cache.v.clone()
    try:
        cache.update(inputs["k"], inputs["v"])
    except ValueError as error:
        if cache.length != length:
            raise AssertionError(f"the refused update changed length from {length} to {cache.length}: "
                                 "check everything before changing the cache") from None
        if not (torch.equal(cache.k, k_buffer) and torch.equal(cache.v, v_buffer)):
            raise AssertionError("the refused update wrote into the buffers: check everything before writing") \
                from None
        named = inputs["must_name"]
        if named is not None and str(named) not in str(error):
            raise AssertionError(f"the ValueError must name the offending value {named}, got {str(error)!r}") \
                from None
        raise
    return "returned normally"


def drive_decode_mask(learner, inputs):
    mask = learner["decode_mask"](inputs["attention_mask"], inputs["T"])
    if inputs["with_dtype"]:  # the mask must be boolean, whatever the dtype of attention_mask
        return {"the mask": mask, "its dtype": getattr(mask, "dtype", None)}
    return mask


def drive_generate(learner, inputs):
    import attnlab

    torch.manual_seed(inputs["seed"])  # the same weights here and in the grader
    model = attnlab.LlamaLM(attnlab.LlamaConfig(**inputs["config"])).to(inputs["dtype"]).eval()
    ids, mask, n = inputs["input_ids"], inputs["attention_mask"], inputs["max_new_tokens"]
    result = learner["greedy_generate"](model, ids, mask, n, prefill_chunk=inputs["prefill_chunk"])
    if inputs["report"].startswith("tokens"):
        report = {"tokens": result[0], "logits": result[1]}
        if inputs["report"] == "tokens, logits and dtype":
            report["dtype of the tokens"] = getattr(result[0], "dtype", None)
            report["the logits carry an autograd graph (not run under torch.no_grad())"] = \
                getattr(result[1], "requires_grad", None)
        return report
    if inputs["report"] == "nothing":
        return "returned"
    caches, (B, P), S = result[2], ids.shape, ids.shape[1] + n - 1  # the last token is not fed back
    real = torch.cat([mask, torch.ones(B, n - 1, dtype=mask.dtype)], dim=1) != 0  # (B, S)
    report = {"number of caches": len(caches)}
    for layer, cache in enumerate(caches):
        entry = {"one of your KVCaches": isinstance(cache, learner["KVCache"]),
                 "buffer shape (B, Hkv, capacity, D)": tuple(cache.k.shape), "buffer dtype": cache.k.dtype,
                 "length": cache.length}
        fits = cache.k.dim() == 4 and cache.k.shape[0] == B and cache.k.shape[2] >= S
        for name, buffer in (("keys", cache.k), ("values", cache.v)):
            # (B, Hkv, S, D) -> (B, S, Hkv, D) -> (real positions, Hkv, D): pad positions hold anything
            entry[f"cached {name} at the real positions"] = buffer[:, :, :S].transpose(1, 2)[real] if fits else None
        report[f"layer {layer}"] = entry
    return report


def drive_compare(learner, inputs):
    import attnlab
    from attnlab.diagnose import greedy_with_mistake

    torch.manual_seed(inputs["seed"])
    model = attnlab.LlamaLM(attnlab.LlamaConfig(**inputs["config"])).to(inputs["dtype"]).eval()
    ids, mask, n, chunk = inputs["input_ids"], inputs["attention_mask"], inputs["max_new_tokens"], inputs["chunk"]
    row, step, d = inputs["row"], inputs["step"], inputs["delta"]

    def decoder(where=None, amount=0.0, only=None, flip=None, mistake=None, least_likely=None):
        def generate_fn(model, input_ids, attention_mask, max_new_tokens, prefill_chunk=None):
            if mistake is not None:
                tokens, logits = greedy_with_mistake(model, input_ids, attention_mask, max_new_tokens,
                                                     prefill_chunk, mistake)
                return tokens, logits, None
            tokens, logits = attnlab.generate_with_logits(model, input_ids, attention_mask, max_new_tokens,
                                                          prefill_chunk=prefill_chunk)
            chunked = prefill_chunk is not None
            if where is not None and (only is None or only == ("chunked" if chunked else "one-shot")):
                logits = logits.clone()
                logits[where] += amount
            if least_likely is not None:  # one logit, away from the maximum
                logits = logits.clone()
                logits[least_likely][logits[least_likely].argmin()] += amount
            if flip is not None:
                tokens = tokens.clone()
                tokens[flip] = (tokens[flip] + 1) % logits.shape[-1]
            return tokens, logits, None
        return generate_fn

    everything = (slice(None), slice(None), slice(None))
    flaws = {  # kind -> (what is wrong, the decoder, the prefill_chunk the check is given)
        "correct": ("a correct cached decoder", decoder(), chunk),
        "everywhere": (f"logits off by +{d:g} everywhere", decoder(everything, d), chunk),
        "negative": (f"logits off by -{d:g} everywhere", decoder(everything, -d), chunk),
        "row": (f"logits off by +{d:g} in batch row {row} only", decoder((row, slice(None), slice(None)), d), chunk),
        "last step": (f"logits off by +{d:g} at the last step only",
                      decoder((slice(None), n - 1, slice(None)), d), chunk),
        "chunked": (f"logits off by +{d:g} only with a chunked prefill (prefill_chunk={chunk})",
                    decoder(everything, d, only="chunked"), chunk),
        "one-shot": (f"logits off by +{d:g} only with a one-shot prefill (prefill_chunk=None)",
                     decoder(everything, d, only="one-shot"), None),
        "one place": (f"logits off by -{d:g} at one place only (row {row}, step {step}, the least likely token)",
                      decoder(amount=-d, least_likely=(row, step)), chunk),
        "token": (f"one token wrong (row {row}, step {step}), every logit right", decoder(flip=(row, step)), chunk),
    }
    check = learner["compare_cached_uncached"]
    result = {}
    for kind in inputs["flaws"]:
        what, generate_fn, prefill_chunk = flaws[kind]
        result[what] = check(generate_fn, model, ids, mask, n, prefill_chunk=prefill_chunk)
    for mistake in inputs["mistakes"]:  # wrong everywhere: whether it is caught, not by exactly how much
        got = check(decoder(mistake=mistake), model, ids, mask, n, prefill_chunk=chunk)
        caught = (not got[1] <= inputs["caught_above"]) if isinstance(got[1], float) else got[1]
        result[f"a decoder with the mistake {mistake!r}: (same tokens, max_diff > {inputs['caught_above']:g})"] = \
            (got[0], caught)
    return result


# ------------------------------------------------------------------------------ inputs
def draw(g, low, high):
    return int(torch.randint(low, high, (1,), generator=g))


def cache_parts(g):
    basics, appends = [], []
    for n, sizes in enumerate([(3, 1), (1, 1, 2)]):
        B, Hkv, D = draw(g, 1, 4), draw(g, 1, 4), draw(g, 2, 6)
        config = {"B": B, "Hkv": Hkv, "capacity": sum(sizes) + draw(g, 0, 3), "D": D}
        inputs = {"config": config, "dtype": torch.float32, "copies": False, "transposed": False,
                  "k": [torch.randn(B, Hkv, T, D, generator=g) for T in sizes],
                  "v": [torch.randn(B, Hkv, T, D, generator=g) for T in sizes]}
        basics.append(Case(drive_cache, inputs, label=f"writes of {list(sizes)} positions, B={B}, Hkv={Hkv}, D={D}",
                           atol=0.0, rtol=0.0, exact_dtype=False))
    variants = [("", torch.float32), ("transposed", torch.float32), ("copies", torch.float32),
                ("", torch.float64), ("transposed", torch.float16), ("copies", torch.float32)]
    for n, (variant, dtype) in enumerate(variants):
        B, Hkv, D = draw(g, 1, 4), draw(g, 2 if variant == "transposed" else 1, 5), draw(g, 1, 6)
        sizes = [draw(g, 2, 5)] + [draw(g, 1, 5) for _ in range(draw(g, 1, 5))]  # T > 1 at least once
        capacity = sum(sizes) + (0 if n % 2 else draw(g, 1, 3))  # filled exactly, or with room left
        layout = (lambda T: (B, T, Hkv, D)) if variant == "transposed" else (lambda T: (B, Hkv, T, D))
        inputs = {"config": {"B": B, "Hkv": Hkv, "capacity": capacity, "D": D}, "dtype": dtype,
                  "copies": variant == "copies", "transposed": variant == "transposed",
                  "k": [torch.randn(layout(T), generator=g).to(dtype) for T in sizes],
                  "v": [torch.randn(layout(T), generator=g).to(dtype) for T in sizes]}
        what = {"": "", "transposed": ", non-contiguous k and v",
                "copies": ", the caller changes its k and v after each update"}[variant]
        appends.append(Case(drive_cache, inputs, atol=0.0, rtol=0.0, exact_dtype=False,
                            label=f"writes of {sizes} positions into capacity {capacity}, B={B}, Hkv={Hkv}, D={D}, "
                                  f"{dtype}{what}"))
    preallocated = []
    for dtype in (torch.float16, torch.float64, torch.float32):
        B, Hkv, D = draw(g, 1, 4), draw(g, 1, 4), draw(g, 2, 6)
        sizes = [draw(g, 1, 4) for _ in range(3)]
        inputs = {"config": {"B": B, "Hkv": Hkv, "capacity": sum(sizes) + 1, "D": D}, "dtype": dtype,
                  "k": [torch.randn(B, Hkv, T, D, generator=g).to(dtype) for T in sizes],
                  "v": [torch.randn(B, Hkv, T, D, generator=g).to(dtype) for T in sizes]}
        preallocated.append(Case(drive_preallocated, inputs, label=f"dtype={dtype}, writes of {sizes} positions"))
    refusals = []
    B, Hkv, D, capacity = 2, 3, 8, 7
    config = {"B": B, "Hkv": Hkv, "capacity": capacity, "D": D}

    def refusal(fill, k_shape, v_shape, named, why):
        inputs = {"config": config, "must_name": named,
                  "fill_k": [torch.randn(B, Hkv, T, D, generator=g) for T in fill],
                  "fill_v": [torch.randn(B, Hkv, T, D, generator=g) for T in fill],
                  "k": torch.randn(k_shape, generator=g), "v": torch.randn(v_shape, generator=g)}
        refusals.append(Case(drive_cache_refuses, inputs, label=why, raises="ValueError"))

    cached = draw(g, 3, 6)
    refusal([cached], (B, Hkv, capacity - cached + 1, D), (B, Hkv, capacity - cached + 1, D), capacity,
            f"{cached} cached + {capacity - cached + 1} new positions > capacity {capacity}")
    refusal([4, 3], (B, Hkv, 1, D), (B, Hkv, 1, D), capacity, f"a full cache (capacity {capacity}) given 1 more")
    refusal([2], (5, Hkv, 1, D), (5, Hkv, 1, D), 5, f"k and v of batch size 5 for a cache of batch_size={B}")
    refusal([2], (B, 6, 1, D), (B, 6, 1, D), 6, f"k and v with 6 heads for a cache of n_kv_heads={Hkv}")
    refusal([1], (B, Hkv, 2, 4), (B, Hkv, 2, 4), 4, f"k and v of head_dim 4 for a cache of head_dim={D}")
    refusal([1], (B, Hkv, 2, D), (B, Hkv, 1, D), None, "k of T=2 positions but v of T=1")
    return [Part("test_cache_basics", basics, **rules(*CACHE_CELLS)),
            Part("test_cache_appends", appends, **rules(*CACHE_CELLS)),
            Part("test_cache_preallocated", preallocated, **rules(*CACHE_CELLS, ops={"aten::cat"})),
            Part("test_cache_refuses", refusals, **rules(*CACHE_CELLS))]


def left_padded_mask(g, B, S, dtype):
    pads = torch.randint(0, S, (B,), generator=g)
    return (torch.arange(S)[None, :] >= pads[:, None]).to(dtype)  # (B, S) left padding, every row has a real token


def mask_parts(g):
    visible = []
    for T_of_S, label in ((lambda S: S, "T = S, no padding"), (lambda S: 1, "T = 1 after S - 1 cached positions"),
                          (lambda S: max(1, S - 2), "T = S - 2 after 2 cached positions")):
        S = draw(g, 3, 9)
        visible.append(Case(drive_decode_mask, {"attention_mask": torch.ones(1, S, dtype=torch.long), "T": T_of_S(S),
                                                "with_dtype": True},
                            label=f"{label} (S={S})", atol=0.0, rtol=0.0, exact_dtype=False))
    hidden = []
    for n in range(10):
        B, S = draw(g, 1, 5), draw(g, 1, 12)
        T = [S, 1, draw(g, 1, S + 1)][n % 3]
        dtype = [torch.long, torch.int32, torch.bool][n % 3]
        mask = left_padded_mask(g, B, S, dtype)
        hidden.append(Case(drive_decode_mask, {"attention_mask": mask, "T": T, "with_dtype": False}, atol=0.0, rtol=0.0,
                           exact_dtype=False,
                           label=f"T={T} queries after {S - T} cached positions, left-padded {dtype} mask "
                                 f"{mask.long().tolist()}"))
    return [Part("test_decode_mask_visible", visible, **rules("decode_mask")),
            Part("test_decode_mask_hidden", hidden, **rules("decode_mask"))]


def model_config(g, n_heads, n_kv_heads, d_model, n_layers):
    return {"vocab_size": TOK.vocab_size, "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
            "n_kv_heads": n_kv_heads, "ffn_hidden": 2 * d_model, "max_seq_len": 64}


def prompts(g, count):
    return [" ".join(WORDS[draw(g, 0, len(WORDS))] for _ in range(draw(g, 1, 4))) for _ in range(count)]


def margin(config, seed, dtype, ids, mask, n):
    """The smallest gap between the top two logits over every greedy choice (uncached, the package's)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaLM(LlamaConfig(**config)).to(dtype).eval()
    _, logits = generate_with_logits(model, ids, mask, n, use_cache=False)
    top = logits.topk(2, dim=-1).values  # (B, N, 2)
    return float((top[..., 0] - top[..., 1]).min())


def generation_inputs(g, config, count, n, chunk, dtype=torch.float32, report="tokens and logits"):
    """Prompts and a model seed whose greedy choices are clear (no near ties)."""
    for _ in range(50):
        texts, seed = prompts(g, count), draw(g, 0, 2 ** 31 - 1)
        ids, mask = TOK(texts, padding_side="left")
        ids = ids.masked_fill(mask == 0, draw(g, 3, TOK.vocab_size))  # pads hold any id: they are masked
        if margin(config, seed, dtype, ids, mask, n) > MARGIN:
            break
    else:
        raise RuntimeError("grading.py: no generation case without near ties in 50 draws")
    return {"config": config, "seed": seed, "dtype": dtype, "input_ids": ids, "attention_mask": mask,
            "max_new_tokens": n, "prefill_chunk": chunk, "report": report}, texts


def generation_parts(g):
    single = []
    for H, Hkv, C, layers in ((4, 4, 32, 2), (4, 1, 32, 2), (8, 2, 64, 1), (2, 1, 16, 3)):
        inputs, texts = generation_inputs(g, model_config(g, H, Hkv, C, layers), 1, draw(g, 4, 9), None,
                                          report="tokens, logits and dtype")
        single.append(Case(drive_generate, inputs, label=f"H={H}, Hkv={Hkv}, prompt {texts[0]!r}",
                           atol=1e-4, rtol=1e-4, exact_dtype=False))
    padded = []
    for H, Hkv in ((4, 2), (4, 4), (4, 1)):
        inputs, texts = generation_inputs(g, model_config(g, H, Hkv, 32, 2), draw(g, 2, 5), draw(g, 4, 9), None)
        padded.append(Case(drive_generate, inputs, label=f"H={H}, Hkv={Hkv}, left-padded prompts {texts}",
                           atol=1e-4, rtol=1e-4, exact_dtype=False))
    chunked = []
    for chunk, Hkv, count in ((1, 2, 2), (3, 1, 3), (draw(g, 2, 6), 4, 1), (100, 2, 2)):
        inputs, texts = generation_inputs(g, model_config(g, 4, Hkv, 32, 2), count, draw(g, 4, 8), chunk)
        chunked.append(Case(drive_generate, inputs, label=f"prefill_chunk={chunk}, Hkv={Hkv}, prompts {texts}",
                            atol=1e-4, rtol=1e-4, exact_dtype=False))
    caches = []
    for H, Hkv, chunk, dtype in ((4, 1, 3, torch.float32), (4, 4, None, torch.float32), (4, 2, 2, torch.float64)):
        inputs, texts = generation_inputs(g, model_config(g, H, Hkv, 32, 2), 3, draw(g, 3, 7), chunk, dtype,
                                          report="caches")
        caches.append(Case(drive_generate, inputs, label=f"H={H}, Hkv={Hkv}, prefill_chunk={chunk}, a {dtype} model, "
                                                         f"prompts {texts}", atol=1e-4, rtol=1e-4, exact_dtype=False))
    inputs, texts = generation_inputs(g, model_config(g, 4, 2, 32, 2), 3, 4, 2, report="nothing")
    unchanged = [Case(drive_generate, inputs, label=f"prefill_chunk=2, prompts {texts}")]
    return [Part("test_generate_single", single, **rules(*GENERATE_CELLS)),
            Part("test_generate_padded", padded, **rules(*GENERATE_CELLS)),
            Part("test_generate_chunked", chunked, **rules(*GENERATE_CELLS)),
            Part("test_generate_caches", caches, **rules(*GENERATE_CELLS)),
            Part("test_generate_inputs_unchanged", unchanged, **rules(*GENERATE_CELLS))]


def compare_parts(g):
    cases = []
    for dtype, delta, atol in ((torch.float32, 0.01 * (1 + draw(g, 0, 5)), 2e-5), (torch.float64, 1e-7, 1e-10)):
        n, chunk = draw(g, 4, 7), draw(g, 2, 4)
        inputs, texts = generation_inputs(g, model_config(g, 4, 2, 32, 2), 3, n, chunk, dtype)
        B = inputs["input_ids"].shape[0]
        inputs = {key: inputs[key] for key in ("config", "seed", "dtype", "input_ids", "attention_mask",
                                               "max_new_tokens")}
        everything = dtype == torch.float32  # float64: the flaws that only its precision shows
        inputs.update(chunk=chunk, row=draw(g, 1, B), step=draw(g, 1, n - 1), delta=delta, caught_above=1e-3,
                      flaws=["correct", "everywhere", "negative", "row", "last step", "chunked", "one-shot",
                             "one place", "token"] if everything else ["correct", "everywhere", "one place"],
                      mistakes=["pad_mask_dropped", "positions_restart", "top_left_mask"] if everything else [])
        cases.append(Case(drive_compare, inputs, atol=atol, rtol=1e-3,
                          label=f"a {dtype} model, prompts {texts}, {n} new tokens"))
    return [Part("test_compare", cases, **rules("compare_cached_uncached"))]


def parts(generator):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: on a busy machine extra threads only wait for each other
    try:
        return cache_parts(generator) + mask_parts(generator) + generation_parts(generator) \
            + compare_parts(generator)
    finally:
        torch.set_num_threads(threads)
