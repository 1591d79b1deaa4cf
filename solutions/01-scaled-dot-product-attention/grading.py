"""Assignment 01's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained.
"""

import torch

from attnlab.testing import SDPA_OPS, SOFTMAX_OPS
from attnlab_grader.authority import Case, Part

FORBIDDEN_OPS = SOFTMAX_OPS | SDPA_OPS
FORBIDDEN_NAMES = frozenset({"softmax", "log_softmax", "scaled_dot_product_attention", "_softmax"})


def drive_softmax(learner, inputs):
    return learner["stable_softmax"](inputs["x"], dim=inputs["dim"])


def drive_attention(learner, inputs):
    return learner["scaled_dot_product_attention"](inputs["q"], inputs["k"], inputs["v"],
                                                    attn_mask=inputs.get("attn_mask"))


def drive_attention_transposed(learner, inputs):
    # (X, Y, T, D) -> (Y, X, T, D) and (X, D, T) -> (X, T, D): views whose strides are not contiguous
    q, k, v = (inputs[name].transpose(0, 1) for name in ("q", "k", "v"))
    if inputs["swap_last"]:
        q, k, v = (t.transpose(-2, -1).contiguous().transpose(-2, -1) for t in (q, k, v))
    return learner["scaled_dot_product_attention"](q, k, v)


def drive_attention_twice(learner, inputs):
    first = learner["scaled_dot_product_attention"](inputs["q"], inputs["k"], inputs["v"])
    second = learner["scaled_dot_product_attention"](inputs["q"], inputs["k"], inputs["v"])
    return first[0], second[0]


def shape_of(g, low, high, count):
    return [int(n) for n in torch.randint(low, high, (count,), generator=g)]


def attention_case(g, lead, T, S, D, Dv, scale=1.0, mask_shape=None, dtype=torch.float32, label="", tolerance=1e-5):
    q = torch.randn(*lead, T, D, generator=g) * scale
    k = torch.randn(*lead, S, D, generator=g) * scale
    v = torch.randn(*lead, S, Dv, generator=g)
    inputs = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype)}
    if mask_shape is not None:
        mask = torch.rand(mask_shape, generator=g) < 0.6
        mask[..., int(torch.randint(0, S, (1,), generator=g))] = True  # every query sees at least one key
        inputs["attn_mask"] = mask
    return Case(drive_attention, inputs, label=label or f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}",
                atol=tolerance, rtol=max(tolerance, 1e-4), exact_dtype=dtype != torch.float32)


def softmax_parts(g):
    basics = Case(drive_softmax, {"x": torch.randn(3, 5, generator=g) * 3, "dim": -1}, label="a (3, 5) input, dim=-1",
                  exact_dtype=False)
    hidden = [
        Case(drive_softmax, {"x": torch.randn(6, generator=g) + 1000.0, "dim": 0}, label="logits near 1000",
             exact_dtype=False),
        Case(drive_softmax, {"x": (torch.randn(2, 5, generator=g) + 11.0).half(), "dim": -1},
             label="float16 logits near 11", atol=2e-3, rtol=2e-3, exact_dtype=False),
        Case(drive_softmax, {"x": torch.tensor([[0.5, float("-inf"), 1.5], [float("-inf")] * 3]), "dim": -1},
             label="a row of all -inf must give zeros", atol=0.0, rtol=0.0, exact_dtype=False),
    ]
    for shape, dim in [((4, 7), 0), ((3, 5, 6), 1), ((2, 3, 4, 5), -2)]:
        hidden.append(Case(drive_softmax, {"x": torch.randn(shape, generator=g) * 5, "dim": dim},
                           label=f"shape {shape}, dim={dim}", exact_dtype=False))
    return [
        Part("test_stable_softmax_visible", [basics], forbidden_ops=FORBIDDEN_OPS, forbidden_names=FORBIDDEN_NAMES,
             answer_cells=("stable_softmax",)),
        Part("test_stable_softmax_hidden", hidden, forbidden_ops=FORBIDDEN_OPS, forbidden_names=FORBIDDEN_NAMES,
             answer_cells=("stable_softmax",)),
    ]


def attention_parts(g):
    forbidden = dict(forbidden_ops=FORBIDDEN_OPS, forbidden_names=FORBIDDEN_NAMES,
                     answer_cells=("stable_softmax", "scaled_dot_product_attention"))
    visible = [attention_case(g, (2,), 3, 5, 4, 6)]
    shapes = []
    for _ in range(8):
        lead = tuple(shape_of(g, 1, 4, int(torch.randint(0, 3, (1,), generator=g))))
        T, S, D, Dv = shape_of(g, 1, 24, 4)
        shapes.append(attention_case(g, lead, T, S, D, Dv))
    masks = []
    for n, mask_shape in enumerate(["TS", "B1TS", "BHTS", "11S"] * 2):
        B, H, T, S, D = shape_of(g, 1, 7, 5)
        shape = {"TS": (T, S), "B1TS": (B, 1, T, S), "BHTS": (B, H, T, S), "11S": (1, 1, 1, S)}[mask_shape]
        masks.append(attention_case(g, (B, H), T, S, D, D, mask_shape=shape,
                                    label=f"q ({B}, {H}, {T}, {D}), k ({B}, {H}, {S}, {D}), a {shape} mask"))
    large = [attention_case(g, (2,), 6, 9, 16, 5, scale=40.0, label="logits in the thousands")]
    q, k, v = (torch.randn(3, n, 8, generator=g) for n in (4, 7, 7))
    unchanged = [Case(drive_attention_twice, {"q": q, "k": k, "v": v},
                      label="called twice on the same inputs, which must not change", exact_dtype=False)]
    dtypes = [
        Case(drive_softmax, {"x": torch.randn(2, 5, generator=g, dtype=torch.float64), "dim": -1},
             label="float64 logits give float64", atol=1e-12, rtol=1e-10),
        Case(drive_softmax, {"x": (torch.randn(3, 6, generator=g) * 4).bfloat16(), "dim": 1},
             label="bfloat16 logits give bfloat16", atol=1e-2, rtol=1e-2),
        attention_case(g, (2,), 3, 4, 8, 5, dtype=torch.float64, label="float64 q, k, v give float64"),
        attention_case(g, (1, 2), 3, 6, 8, 4, dtype=torch.float16, label="float16 q, k, v give float16",
                       tolerance=5e-3),
    ]
    transposed = []
    for T, S, swap_last in ((3, 5, False), (6, 4, True)):
        X, Y, D = shape_of(g, 2, 5, 3)
        inputs = {"q": torch.randn(X, Y, T, D, generator=g), "k": torch.randn(X, Y, S, D, generator=g),
                  "v": torch.randn(X, Y, S, D, generator=g), "swap_last": swap_last}
        transposed.append(Case(drive_attention_transposed, inputs, exact_dtype=False,
                               label=f"non-contiguous (transposed) q and k of shape ({Y}, {X}, {T}, {D})"))
    own = [Case(drive_softmax, {"x": torch.randn(4, 3, generator=g), "dim": -1}, exact_dtype=False,
                label="your stable_softmax"),
           attention_case(g, (2,), 4, 5, 6, 3, label="your attention")]
    return [
        Part("test_attention_visible", visible, **forbidden),
        Part("test_attention_random_shapes", shapes, **forbidden),
        Part("test_attention_masks", masks, **forbidden),
        Part("test_attention_large_logits", large, **forbidden),
        Part("test_attention_inputs_unchanged", unchanged, **forbidden),
        Part("test_dtypes", dtypes, **forbidden),
        Part("test_attention_noncontiguous", transposed, **forbidden),
        Part("test_own_code", own, **forbidden),
    ]


def parts(generator):
    return softmax_parts(generator) + attention_parts(generator)
