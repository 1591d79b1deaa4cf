"""Assignment 06's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained. Modules are built inside
the driver from the learner's class and given weights drawn here (in the inputs); caches are the
driver's own, so nothing the learner's notebook changed in ``attnlab`` can vouch for its code.

Shapes avoid ``H == D`` (then ``C = D**2`` and scaling by ``1/D`` looks like ``1/sqrt(C)``) and
use ``T != S`` wherever a cache is involved, so distinct mistakes give distinct outputs.
"""

import torch

from attnlab_grader.authority import SDPA_OPS, Case, Part

# The task: no F.scaled_dot_product_attention (caught when it runs), and none of attnlab's
# repeat_kv, GroupedQueryAttention, mha_to_gqa (caught in the answer cells' source).
FORBIDDEN_NAMES = frozenset({"repeat_kv", "GroupedQueryAttention", "mha_to_gqa"})


def forbidden(*cells):
    return dict(forbidden_ops=SDPA_OPS, forbidden_names=FORBIDDEN_NAMES, answer_cells=cells)


# ----------------------------------------------------------------------------- drivers
def drive_repeat_kv(learner, inputs):
    x = inputs["x"]
    if inputs["transposed"]:  # a non-contiguous view, as split_heads returns: (B, S, Hkv, D) -> (B, Hkv, S, D)
        x = x.transpose(1, 2)
    return learner["repeat_kv"](x, inputs["n_rep"])


def drive_gqa(learner, inputs):
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    if inputs["transposed"]:  # non-contiguous views: (B, T, H, D) -> (B, H, T, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if "attn_mask" in inputs:
        result = learner["grouped_query_attention"](q, k, v, inputs["attn_mask"])
    else:
        result = learner["grouped_query_attention"](q, k, v)
    if not (isinstance(result, tuple) and len(result) == 2):
        return result  # compared as it is: not the tuple (output, weights)
    return {"output": result[0], "weights": result[1]}


def drive_gqa_refuses(learner, inputs):
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    H, Hkv = q.shape[1], k.shape[1]
    try:
        learner["grouped_query_attention"](q, k, v)
    except ValueError as error:
        if f"{H}" not in str(error) or f"{Hkv}" not in str(error):
            raise AssertionError(f"the ValueError must name H={H} and Hkv={Hkv}, got {str(error)!r}") from None
        raise
    return "returned normally"


def drive_module(learner, inputs):
    c = inputs["config"]
    module = learner["GroupedQueryAttention"](c["C"], c["H"], c["Hkv"], bias=c["bias"])
    theirs = module.state_dict()
    for name, tensor in inputs["state"].items():  # the given layers, with Hkv * D key/value features
        if name not in theirs or tuple(theirs[name].shape) != tuple(tensor.shape):
            got = tuple(theirs[name].shape) if name in theirs else "missing"
            raise RuntimeError(f"your module's {name} is {got}, expected shape {tuple(tensor.shape)}")
    module.load_state_dict(inputs["state"], strict=False)
    with torch.no_grad():
        if "attn_mask" in inputs:
            result = module.eval()(inputs["x"], attn_mask=inputs["attn_mask"])
        else:
            result = module.eval()(inputs["x"])
    if not (isinstance(result, tuple) and len(result) == 2):
        return result  # compared as it is: not the tuple (output, weights)
    return {"output": result[0], "weights": result[1]}


def drive_module_cache(learner, inputs):
    class RecordingCache:
        """The grader's own cache: stores whatever it is given, and records the head counts."""

        def __init__(self):
            self.k = self.v = None
            self.heads = []

        @property
        def length(self):
            return 0 if self.k is None else self.k.shape[2]

        def update(self, k, v):
            self.heads.append(int(k.shape[1]))
            self.k = k.clone() if self.k is None else torch.cat([self.k, k], dim=2)  # (B, Hkv, S, D)
            self.v = v.clone() if self.v is None else torch.cat([self.v, v], dim=2)
            return self.k, self.v

    c = inputs["config"]
    module = learner["GroupedQueryAttention"](c["C"], c["H"], c["Hkv"], bias=c["bias"])
    theirs = module.state_dict()
    for name, tensor in inputs["state"].items():  # the given layers, with Hkv * D key/value features
        if name not in theirs or tuple(theirs[name].shape) != tuple(tensor.shape):
            got = tuple(theirs[name].shape) if name in theirs else "missing"
            raise RuntimeError(f"your module's {name} is {got}, expected shape {tuple(tensor.shape)}")
    module.load_state_dict(inputs["state"], strict=False)
    module.eval()
    cache, x, outputs = RecordingCache(), inputs["x"], []
    with torch.no_grad():
        for start, end in inputs["chunks"]:
            S = end  # T = end - start queries after `start` cached positions: query i sits at start + i
            mask = torch.ones(end - start, S, dtype=torch.bool).tril(start)  # (T, S), offset-aware causal
            out, _ = module(x[:, start:end], attn_mask=mask, cache=cache)
            outputs.append(out)
    return {"outputs of each call": outputs, "K/V heads your module gave the cache at each call": cache.heads,
            "positions in the cache": cache.length}


def drive_kv_heads(learner, inputs):
    c = inputs["config"]
    module = learner["GroupedQueryAttention"](c["C"], c["H"], c["Hkv"], bias=c["bias"])
    shapes = {name: tuple(getattr(module, name).weight.shape) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    with torch.no_grad():
        out, weights = module(inputs["x"])
    return {"weight shapes (out, in)": shapes, "number of parameters": sum(p.numel() for p in module.parameters()),
            "output shape": tuple(out.shape), "weights shape": tuple(weights.shape)}


def drive_mha_to_gqa(learner, inputs):
    cls, c = learner["GroupedQueryAttention"], inputs["config"]
    mha = cls(c["C"], c["H"], c["H"], bias=c["bias"])
    mha.load_state_dict(inputs["state"])
    gqa = learner["mha_to_gqa"](mha, c["Hkv"])
    result = {"a new GroupedQueryAttention": isinstance(gqa, cls) and gqa is not mha,
              "its n_kv_heads": getattr(gqa, "n_kv_heads", None),
              "its weights": {name: t.detach().clone() for name, t in gqa.state_dict().items()}}
    with torch.no_grad():
        result["its output"] = gqa.eval()(inputs["x"], attn_mask=inputs["attn_mask"])[0]
    return result


def drive_mha_to_gqa_independent(learner, inputs):
    cls, c = learner["GroupedQueryAttention"], inputs["config"]
    mha = cls(c["C"], c["H"], c["H"], bias=c["bias"])
    mha.load_state_dict(inputs["state"])
    before = {name: t.clone() for name, t in mha.state_dict().items()}

    def changed():
        return sorted(name for name, t in mha.state_dict().items() if not torch.equal(t, before[name]))

    gqa = learner["mha_to_gqa"](mha, c["Hkv"])
    changed_by_conversion = changed()
    storages = {t.untyped_storage().data_ptr() for t in mha.state_dict().values()}
    shared = sorted(name for name, t in gqa.state_dict().items() if t.untyped_storage().data_ptr() in storages)
    with torch.no_grad():
        for p in gqa.parameters():
            p.add_(1.0)  # as training the converted layer would
    return {"parameters of mha that mha_to_gqa changed in place": changed_by_conversion,
            "parameters of the result that share their storage with mha": shared,
            "parameters of mha that changed when the result was trained": changed()}


def drive_mha_to_gqa_refuses(learner, inputs):
    cls, c = learner["GroupedQueryAttention"], inputs["config"]
    layer = cls(c["C"], c["H"], c["layer_Hkv"], bias=False)
    try:
        learner["mha_to_gqa"](layer, c["Hkv"])
    except ValueError as error:
        named = inputs["must_name"]
        if str(named) not in str(error):
            raise AssertionError(f"the ValueError must name the offending value {named}, got {str(error)!r}") from None
        raise
    return "returned normally"


# ------------------------------------------------------------------------------ inputs
def draw(g, low, high):
    return int(torch.randint(low, high, (1,), generator=g))


def head_dim_not(g, H, low=2, high=7):
    """A head dimension D != H (so 1/D and 1/sqrt(C) differ)."""
    D = draw(g, low, high)
    return D + 1 if D == H else D


def gqa_state(g, C, H, Hkv, bias, mha=False):
    """Random weights (and non-zero biases) for a GroupedQueryAttention(C, H, Hkv)."""
    kv = C if mha else Hkv * (C // H)
    state = {}
    for name, rows in (("q_proj", C), ("k_proj", kv), ("v_proj", kv), ("o_proj", C)):
        state[f"{name}.weight"] = torch.randn(rows, C, generator=g) / C ** 0.5
        if bias:
            state[f"{name}.bias"] = torch.randn(rows, generator=g) * 0.5
    return state


def repeat_kv_parts(g):
    cases = []
    for n, n_rep in enumerate([2, 3, 1, 4, 2, 3]):
        B, Hkv, S, D = draw(g, 1, 4), draw(g, 2, 5), draw(g, 2, 7), draw(g, 2, 6)  # Hkv > 1: tiling shows
        transposed = n % 2 == 1
        x = torch.randn(B, S, Hkv, D, generator=g) if transposed else torch.randn(B, Hkv, S, D, generator=g)
        dtype = [torch.float32, torch.float64, torch.float16][n % 3]
        label = (f"x of shape {(B, Hkv, S, D)}{' (a non-contiguous view)' if transposed else ''}, "
                 f"{dtype}, n_rep={n_rep}")
        cases.append(Case(drive_repeat_kv, {"x": x.to(dtype), "n_rep": n_rep, "transposed": transposed},
                          label=label, atol=0.0, rtol=0.0, exact_dtype=False))
    return [Part("test_repeat_kv", cases, **forbidden("repeat_kv"))]


def gqa_case(g, B, H, Hkv, T, S, D, mask_kind, transposed=False, dtype=torch.float32):
    shape = (lambda heads, n: (B, n, heads, D)) if transposed else (lambda heads, n: (B, heads, n, D))
    inputs = {"q": torch.randn(shape(H, T), generator=g).to(dtype), "k": torch.randn(shape(Hkv, S), generator=g).to(dtype),
              "v": torch.randn(shape(Hkv, S), generator=g).to(dtype), "transposed": transposed}
    if mask_kind == "causal (T, S)":
        inputs["attn_mask"] = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    elif mask_kind == "padding (B, 1, 1, S)":
        lengths = torch.randint(1, S + 1, (B,), generator=g)
        inputs["attn_mask"] = (torch.arange(S)[None, :] < lengths[:, None])[:, None, None, :]
    elif mask_kind == "per head (B, H, T, S)":
        mask = torch.rand(B, H, T, S, generator=g) < 0.6
        mask[..., draw(g, 0, S)] = True  # every query sees a key
        inputs["attn_mask"] = mask
    elif mask_kind == "(B, 1, T, S)":
        mask = torch.rand(B, 1, T, S, generator=g) < 0.6
        mask[..., draw(g, 0, S)] = True
        inputs["attn_mask"] = mask
    label = (f"q ({B}, {H}, {T}, {D}), k and v ({B}, {Hkv}, {S}, {D}), {mask_kind}"
             f"{', non-contiguous q, k, v' if transposed else ''}")
    tolerance = dict(atol=2e-3, rtol=2e-3) if dtype == torch.float16 else dict(atol=1e-5, rtol=1e-4)
    return inputs, label, tolerance


def gqa_function_parts(g):
    cases = []
    groups = [(1, 4), (2, 2), (2, 3), (3, 2), (4, 1), (1, 1), (2, 4), (3, 1)]  # (Hkv, G)
    kinds = ["no mask", "causal (T, S)", "padding (B, 1, 1, S)", "per head (B, H, T, S)", "(B, 1, T, S)"]
    for n, (Hkv, G) in enumerate(groups):
        H = Hkv * G
        B, T = draw(g, 1, 4), draw(g, 1, 6)
        S, D = T + draw(g, 0, 4), head_dim_not(g, H)
        inputs, label, tolerance = gqa_case(g, B, H, Hkv, T, S, D, kinds[n % len(kinds)], transposed=n % 3 == 2)
        cases.append(Case(drive_gqa, inputs, label=label, exact_dtype=False, **tolerance))
    dtypes = []
    for dtype, (Hkv, G) in ((torch.float64, (2, 3)), (torch.float16, (2, 2)), (torch.float64, (1, 4))):
        H = Hkv * G
        inputs, label, tolerance = gqa_case(g, 2, H, Hkv, 3, 5, head_dim_not(g, H), "causal (T, S)", dtype=dtype)
        dtypes.append(Case(drive_gqa, inputs, label=f"{label}, {dtype}", exact_dtype=True, **tolerance))
    refusals = []
    for H, Hkv in ((6, 4), (9, 2), (5, 3), (8, 3), (7, 2)):
        q, k = torch.randn(1, H, 2, 4, generator=g), torch.randn(1, Hkv, 2, 4, generator=g)
        refusals.append(Case(drive_gqa_refuses, {"q": q, "k": k, "v": torch.randn(1, Hkv, 2, 4, generator=g)},
                             label=f"H={H} query heads over Hkv={Hkv} key/value heads", raises="ValueError"))
    cells = ("repeat_kv", "grouped_query_attention")
    return [Part("test_gqa_function", cases, **forbidden(*cells)),
            Part("test_gqa_function_dtypes", dtypes, **forbidden(*cells)),
            Part("test_gqa_function_errors", refusals, **forbidden(*cells))]


def module_config(g, Hkv, G, bias):
    H = Hkv * G
    D = head_dim_not(g, H)
    return {"C": H * D, "H": H, "Hkv": Hkv, "bias": bias}


def module_parts(g):
    cells = ("repeat_kv", "grouped_query_attention", "GroupedQueryAttention")
    matches = []
    for n, (Hkv, G) in enumerate([(1, 4), (2, 2), (2, 3), (4, 1), (3, 2), (1, 1)]):
        config = module_config(g, Hkv, G, bias=n % 3 != 2)
        B, T = draw(g, 1, 4), draw(g, 2, 7)
        inputs = {"config": config, "state": gqa_state(g, config["C"], config["H"], Hkv, config["bias"]),
                  "x": torch.randn(B, T, config["C"], generator=g)}
        if n % 3 == 0:
            inputs["attn_mask"] = torch.ones(T, T, dtype=torch.bool).tril()  # (T, S)
            mask = "a causal (T, T) mask"
        elif n % 3 == 1:
            lengths = torch.randint(1, T + 1, (B,), generator=g)
            padded = torch.ones(T, T, dtype=torch.bool).tril()[None] & (torch.arange(T)[None, :] < lengths[:, None])[:, None, :]
            padded[..., 0] = True
            inputs["attn_mask"] = padded  # (B, T, S)
            mask = "a (B, T, T) causal and padding mask"
        else:
            mask = "no mask"
        label = f"C={config['C']}, H={config['H']}, Hkv={Hkv}, x ({B}, {T}, {config['C']}), {mask}"
        matches.append(Case(drive_module, inputs, label=label, exact_dtype=False, atol=1e-5, rtol=1e-4))

    cached = []
    for n, (Hkv, G) in enumerate([(2, 2), (1, 4), (2, 3), (3, 1)]):
        config = module_config(g, Hkv, G, bias=True)
        B, prefill = draw(g, 1, 3), draw(g, 1, 4)
        chunks = [(0, prefill), (prefill, prefill + 2)] + [(t, t + 1) for t in range(prefill + 2, prefill + 4)]
        inputs = {"config": config, "state": gqa_state(g, config["C"], config["H"], Hkv, True),
                  "x": torch.randn(B, chunks[-1][1], config["C"], generator=g), "chunks": chunks}
        label = (f"C={config['C']}, H={config['H']}, Hkv={Hkv}: prefill {prefill} positions, a chunk of 2, "
                 "then one token at a time, with a cache")
        cached.append(Case(drive_module_cache, inputs, label=label, exact_dtype=False, atol=1e-5, rtol=1e-4))

    heads = []
    for C, H, Hkv in ((48, 8, 2), (36, 6, 3), (20, 4, 4), (40, 4, 1)):
        heads.append(Case(drive_kv_heads, {"config": {"C": C, "H": H, "Hkv": Hkv, "bias": True},
                                           "x": torch.randn(2, 3, C, generator=g)},
                          label=f"GroupedQueryAttention({C}, {H}, {Hkv})", exact_dtype=False))
    return [Part("test_gqa_module_matches", matches, **forbidden(*cells)),
            Part("test_gqa_cache", cached, **forbidden(*cells)),
            Part("test_gqa_kv_heads", heads, **forbidden(*cells))]


def conversion_parts(g):
    cells = ("GroupedQueryAttention", "mha_to_gqa")
    pooled = []
    for n, (H, Hkv) in enumerate([(8, 2), (6, 3), (6, 2), (4, 1), (4, 4), (9, 3)]):
        D = head_dim_not(g, H, 2, 6)
        config = {"C": H * D, "H": H, "Hkv": Hkv, "bias": n % 3 != 2}
        T = draw(g, 2, 6)
        inputs = {"config": config, "state": gqa_state(g, H * D, H, H, config["bias"], mha=True),
                  "x": torch.randn(2, T, H * D, generator=g), "attn_mask": torch.ones(T, T, dtype=torch.bool).tril()}
        pooled.append(Case(drive_mha_to_gqa, inputs, label=f"H={H} heads of D={D} pooled to Hkv={Hkv}"
                           + ("" if config["bias"] else ", no biases"), exact_dtype=False, atol=1e-6, rtol=1e-5))
    independent = []
    for H, Hkv, bias in ((4, 2, True), (6, 3, False), (4, 4, True)):
        D = head_dim_not(g, H, 2, 5)
        config = {"C": H * D, "H": H, "Hkv": Hkv, "bias": bias}
        independent.append(Case(drive_mha_to_gqa_independent,
                                {"config": config, "state": gqa_state(g, H * D, H, H, bias, mha=True)},
                                label=f"H={H}, Hkv={Hkv}" + ("" if bias else ", no biases")))
    refusals = []
    for H, layer_Hkv, Hkv, named, why in ((4, 4, 3, 3, "4 heads are not divisible by n_kv_heads=3"),
                                          (6, 6, 4, 4, "6 heads are not divisible by n_kv_heads=4"),
                                          (4, 4, 0, 0, "n_kv_heads=0"),
                                          (6, 6, -2, -2, "n_kv_heads=-2"),
                                          (8, 2, 1, 2, "a layer with Hkv=2 < H=8 is not multi-head")):
        config = {"C": H * 2, "H": H, "layer_Hkv": layer_Hkv, "Hkv": Hkv}
        refusals.append(Case(drive_mha_to_gqa_refuses, {"config": config, "must_name": named}, label=why,
                             raises="ValueError"))
    return [Part("test_mha_to_gqa", pooled, **forbidden(*cells)),
            Part("test_mha_to_gqa_independent", independent, **forbidden(*cells)),
            Part("test_mha_to_gqa_errors", refusals, **forbidden(*cells))]


def parts(generator):
    return repeat_kv_parts(generator) + gqa_function_parts(generator) + module_parts(generator) \
        + conversion_parts(generator)
