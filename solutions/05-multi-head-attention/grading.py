"""Assignment 05's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained. Expected values come
from the same driver run on the reference solution (the source notebook's own cells); the
notebook's own tests compare against ``torch.nn.MultiheadAttention``.

The task forbids ``torch.nn.MultiheadAttention``, ``F.scaled_dot_product_attention`` and
attnlab's ``split_heads``, ``merge_heads`` and ``MultiHeadAttention``: every driver reports which
of them ran while the learner's code ran (``sys.setprofile``: their code objects, and the C
function behind ``F.scaled_dot_product_attention``, whose math path dispatches no operator of its
own); PyTorch's fused kernels are also caught by their aten operators.
"""

import torch

from attnlab_grader.authority import SDPA_OPS, Case, Part

FORBIDDEN_NAMES = frozenset({"MultiheadAttention", "multi_head_attention_forward"})


def forbidden(*cells):
    """What a part forbids, looked for in the answer cells it grades (the module uses all three)."""
    return dict(forbidden_ops=SDPA_OPS, forbidden_names=FORBIDDEN_NAMES, answer_cells=cells)


HEADS = ("split_heads", "merge_heads")
MODULE = ("split_heads", "merge_heads", "MultiHeadAttention")
PAIRS = [(2, 3), (3, 5), (4, 2), (8, 3), (1, 7), (6, 4), (2, 8), (4, 6), (5, 2), (3, 7)]  # (H, D): D != H, so D != sqrt(C)


# ------------------------------------------------------------------------ drivers (run in the sandbox)


def drive_heads(learner, inputs):
    """split_heads / merge_heads on one input (made non-contiguous here where asked)."""
    import sys

    import attnlab

    watched = {attnlab.split_heads.__code__: "attnlab.split_heads", attnlab.merge_heads.__code__: "attnlab.merge_heads"}
    used = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in watched and watched[frame.f_code] not in used:
            used.append(watched[frame.f_code])
        elif event == "c_call" and arg is torch.nn.functional.scaled_dot_product_attention and not used:
            used.append("torch.nn.functional.scaled_dot_product_attention")  # whichever kernel it then runs

    check = inputs["check"]
    x = inputs["x"]
    if inputs.get("layout") == "transposed":  # (B, C, T) -> (B, T, C) or (B, H, D, T) -> (B, H, T, D): a view
        x = x.transpose(-1, -2)
    elif inputs.get("layout") == "sliced":  # every other position: a view with strides
        x = x[:, ::2]
    sys.setprofile(profile)
    if sys.getprofile() is not profile:
        used.append("(the grader's watch was switched off)")
    try:
        if check == "split":
            said = {"split_heads(x, n_heads)": learner["split_heads"](x, inputs["n_heads"])}
        elif check == "merge":
            said = {"merge_heads(x)": learner["merge_heads"](x)}
        elif check == "own code":  # only the watch decides: an error costs the other parts
            said = {}
            try:
                learner["merge_heads"](learner["split_heads"](x, inputs["n_heads"]))
            except NotImplementedError:
                raise
            except Exception:
                pass
        else:  # "refuse": C is not divisible by H
            try:
                learner["split_heads"](x, inputs["n_heads"])
            except ValueError as error:
                message = str(error)
                said = {"raises ValueError": True,
                        "its message names C and H": all(str(n) in message for n in (x.shape[-1], inputs["n_heads"]))}
            else:
                said = {"raises ValueError": False, "its message names C and H": False}
    finally:
        sys.setprofile(None)
    said["forbidden function called"] = used[0] if used else "none"
    return said


def drive_module(learner, inputs):
    """Build the learner's module, load the given weights, run forward; report what the check needs."""
    import sys

    import attnlab

    watched = {attnlab.split_heads.__code__: "attnlab.split_heads", attnlab.merge_heads.__code__: "attnlab.merge_heads",
               attnlab.MultiHeadAttention.forward.__code__: "attnlab.MultiHeadAttention",
               attnlab.MultiHeadAttention.attend.__code__: "attnlab.MultiHeadAttention",
               torch.nn.MultiheadAttention.forward.__code__: "torch.nn.MultiheadAttention",
               torch.nn.functional.multi_head_attention_forward.__code__: "torch.nn.MultiheadAttention"}
    used = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in watched and watched[frame.f_code] not in used:
            used.append(watched[frame.f_code])
        elif event == "c_call" and arg is torch.nn.functional.scaled_dot_product_attention and not used:
            used.append("torch.nn.functional.scaled_dot_product_attention")  # whichever kernel it then runs

    C, H = inputs["d_model"], inputs["n_heads"]
    x, context, mask = inputs["x"], inputs.get("context"), inputs.get("attn_mask")
    sys.setprofile(profile)
    if sys.getprofile() is not profile:
        used.append("(the grader's watch was switched off)")
    try:
        if inputs["check"] == "own code":  # only the watch decides: an error costs the other parts
            try:
                with torch.no_grad():
                    learner["MultiHeadAttention"](C, H, bias=inputs["bias"])(x, attn_mask=mask, context=context)
            except NotImplementedError:
                raise
            except Exception:
                pass
            return {"forbidden function called": used[0] if used else "none"}
        module = learner["MultiHeadAttention"](C, H, bias=inputs["bias"])
        with torch.no_grad():
            for name, tensor in inputs["weights"].items():
                layer, param = name.split(".")
                getattr(getattr(module, layer), param).copy_(tensor)
        module = module.to(inputs.get("dtype", torch.float32))
        with torch.no_grad():
            result = module(x, attn_mask=mask, context=context)
            again = module(x, attn_mask=mask, context=context) if inputs["check"] == "twice" else None
    finally:
        sys.setprofile(None)
    said = {"forbidden function called": used[0] if used else "none"}
    out, weights = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    check = inputs["check"]
    if check == "shapes":
        for name, value in (("output", out), ("weights", weights)):
            plain = type(value) is torch.Tensor
            said[name] = (type(value).__name__, tuple(value.shape) if plain else None, value.dtype if plain else None)
    elif check == "output":
        said["output"] = out
    elif check == "weights":  # with the output right (its own parts), right weights are the output's weights
        said["weights"] = weights
    elif check == "twice":
        said["the same output twice"] = type(out) is torch.Tensor and type(again[0]) is torch.Tensor \
            and torch.equal(out, again[0])
    return said


# ------------------------------------------------------------------------ cases (drawn from the secret seed)


def draw(g, low, high):
    return int(torch.randint(low, high, (1,), generator=g))


def distinct_sizes(g, count, low=1, high=7):
    """``count`` different sizes, so that no two axes can be confused."""
    sizes = torch.randperm(high - low, generator=g)[:count] + low
    return [int(n) for n in sizes]


def heads_parts(g):
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    split, merge, non_contiguous = [], [], []
    for n in range(6):
        B, T, H, D = distinct_sizes(g, 4)
        x = torch.randn(B, T, H * D, generator=g).to(dtypes[n % 4])
        split.append(Case(drive_heads, {"check": "split", "x": x, "n_heads": H}, atol=0, rtol=0,
                          label=f"x of shape {tuple(x.shape)}, {x.dtype}, H={H}"))
        heads = torch.randn(B, H, T, D, generator=g).to(dtypes[n % 4])
        merge.append(Case(drive_heads, {"check": "merge", "x": heads}, atol=0, rtol=0,
                          label=f"heads of shape {tuple(heads.shape)}, {heads.dtype}"))
    errors = []
    for _ in range(3):
        H = draw(g, 3, 9)
        C = H * draw(g, 2, 6) + draw(g, 1, H)  # not divisible by H
        while str(H) in str(C):  # the message must name both, so neither may hide in the other
            C += H
        errors.append(Case(drive_heads, {"check": "refuse", "x": torch.zeros(2, 3, C), "n_heads": H},
                           label=f"C={C}, H={H}"))
    B, T, H, D = distinct_sizes(g, 4)
    non_contiguous += [
        Case(drive_heads, {"check": "split", "x": torch.randn(B, H * D, T, generator=g), "n_heads": H,
                           "layout": "transposed"}, atol=0, rtol=0,
             label=f"split_heads of a transposed (non-contiguous) x of shape {(B, T, H * D)}, H={H}"),
        Case(drive_heads, {"check": "split", "x": torch.randn(B, 2 * T, H * D, generator=g), "n_heads": H,
                           "layout": "sliced"}, atol=0, rtol=0,
             label=f"split_heads of x[:, ::2] (non-contiguous), of shape {(B, T, H * D)}, H={H}"),
        Case(drive_heads, {"check": "merge", "x": torch.randn(B, H, D, T, generator=g), "layout": "transposed"},
             atol=0, rtol=0, label=f"merge_heads of a transposed (non-contiguous) input of shape {(B, H, T, D)}"),
    ]
    return [
        Part("test_split_heads", split, **forbidden("split_heads")),
        Part("test_merge_heads", merge, **forbidden("merge_heads")),
        Part("test_split_heads_errors", errors, **forbidden("split_heads")),
        Part("test_heads_non_contiguous", non_contiguous, **forbidden(*HEADS)),
    ]


def module_inputs(g, H, D, B, T, S=None, bias=True, mask=None, check="output", dtype=None):
    """The inputs of one forward call: weights, x, context (if S is given) and a mask kind."""
    C = H * D
    weights = {}
    for layer in ("q_proj", "k_proj", "v_proj", "o_proj"):
        weights[f"{layer}.weight"] = torch.randn(C, C, generator=g) / C ** 0.5
        if bias:
            weights[f"{layer}.bias"] = torch.randn(C, generator=g) * 0.5
    inputs = {"check": check, "d_model": C, "n_heads": H, "bias": bias, "weights": weights,
              "x": torch.randn(B, T, C, generator=g) * 2}
    keys = T
    if S is not None:
        inputs["context"], keys = torch.randn(B, S, C, generator=g), S
    if mask == "causal":
        inputs["attn_mask"] = torch.ones(T, keys, dtype=torch.bool).tril(keys - T)
    elif mask == "padding":
        lengths = torch.randint(1, keys + 1, (B,), generator=g)
        inputs["attn_mask"] = (torch.arange(keys)[None, :] < lengths[:, None])[:, None, :].expand(B, T, keys).clone()
    elif mask == "random":
        allowed = torch.rand(B, T, keys, generator=g) < 0.6
        allowed[..., draw(g, 0, keys)] = True  # every query sees a key
        inputs["attn_mask"] = allowed
    if dtype is not None:
        inputs["dtype"] = dtype
        inputs["x"] = inputs["x"].to(dtype)
        if "context" in inputs:
            inputs["context"] = inputs["context"].to(dtype)
    return inputs


def module_parts(g):
    def case(H, D, check, exact_dtype=False, **options):
        B, T = draw(g, 1, 5), draw(g, 1, 7)
        inputs = module_inputs(g, H, D, B, T, check=check, **options)
        S = options.get("S")
        what = f"x ({B}, {T}, {H * D}), H={H}, D={D}" + (f", context with S={S}" if S else "") \
            + (f", a {options['mask']} mask" if options.get("mask") else "") + ("" if options.get("bias", True) else ", no bias")
        return Case(drive_module, inputs, exact_dtype=exact_dtype, atol=1e-5, rtol=1e-4, label=what)

    shapes = [case(H, D, "shapes", exact_dtype=True, S=S, dtype=dtype)
              for (H, D), S, dtype in zip(PAIRS[:4], (None, 3, 6, 1), (torch.float32, torch.float64) * 2)]
    outputs = [case(H, D, "output", bias=n % 3 != 0) for n, (H, D) in enumerate(PAIRS[:8])]
    masks = [case(H, D, "output", S=[None, draw(g, 2, 9)][n % 2], mask=["causal", "padding", "random"][n % 3])
             for n, (H, D) in enumerate(PAIRS[2:8])]
    weights = [case(H, D, "weights", S=[None, draw(g, 2, 9)][n % 2], mask=[None, "causal", "random"][n % 3])
               for n, (H, D) in enumerate(PAIRS[4:10])]
    twice = [case(4, 3, "twice", S=5, mask=mask) for mask in ("causal", "random")]
    B, T, H, D = distinct_sizes(g, 4)
    own = [Case(drive_heads, {"check": "own code", "x": torch.randn(B, T, H * D, generator=g), "n_heads": H},
                label="split_heads and merge_heads, called once"),
           case(3, 4, "own code", mask="causal")]
    return [
        Part("test_mha_shapes", shapes, **forbidden(*MODULE)),
        Part("test_mha_matches_torch", outputs, **forbidden(*MODULE)),
        Part("test_mha_masks", masks, **forbidden(*MODULE)),
        Part("test_mha_weights", weights, **forbidden(*MODULE)),
        Part("test_mha_inputs_unchanged", twice, **forbidden(*MODULE)),
        Part("test_own_code", own, **forbidden(*MODULE)),
    ]


def parts(generator):
    return heads_parts(generator) + module_parts(generator)
