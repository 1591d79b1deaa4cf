"""Assignment 01's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained.
"""

import torch

from attnlab_grader.authority import SDPA_OPS, SOFTMAX_OPS, Case, Part

FORBIDDEN_OPS = SOFTMAX_OPS | SDPA_OPS
FORBIDDEN_NAMES = frozenset({"softmax", "log_softmax", "scaled_dot_product_attention", "_softmax"})


def drive_softmax(learner, inputs):
    return learner["stable_softmax"](inputs["x"], dim=inputs["dim"])


def drive_attention(learner, inputs):
    return learner["scaled_dot_product_attention"](inputs["q"], inputs["k"], inputs["v"],
                                                    attn_mask=inputs.get("attn_mask"))


def drive_attention_twice(learner, inputs):
    first = learner["scaled_dot_product_attention"](inputs["q"], inputs["k"], inputs["v"])
    second = learner["scaled_dot_product_attention"](inputs["q"], inputs["k"], inputs["v"])
    return first[0], second[0]


def shape_of(g, low, high, count):
    return [int(n) for n in torch.randint(low, high, (count,), generator=g)]


def attention_case(g, lead, T, S, D, Dv, scale=1.0, mask_shape=None, dtype=torch.float32, label=""):
    q = torch.randn(*lead, T, D, generator=g) * scale
    k = torch.randn(*lead, S, D, generator=g) * scale
    v = torch.randn(*lead, S, Dv, generator=g)
    inputs = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype)}
    if mask_shape is not None:
        mask = torch.rand(mask_shape, generator=g) < 0.6
        mask[..., int(torch.randint(0, S, (1,), generator=g))] = True  # every query sees at least one key
        inputs["attn_mask"] = mask
    return Case(drive_attention, inputs, label=label or f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}",
                atol=1e-5, rtol=1e-4)


def softmax_parts(g):
    basics = Case(drive_softmax, {"x": torch.randn(3, 5, generator=g) * 3, "dim": -1}, label="a (3, 5) input, dim=-1")
    hidden = [
        Case(drive_softmax, {"x": torch.randn(6, generator=g) + 1000.0, "dim": 0}, label="logits near 1000"),
        Case(drive_softmax, {"x": (torch.randn(2, 5, generator=g) + 11.0).half(), "dim": -1},
             label="float16 logits near 11", atol=2e-3, rtol=2e-3),
        Case(drive_softmax, {"x": torch.tensor([[0.5, float("-inf"), 1.5], [float("-inf")] * 3]), "dim": -1},
             label="a row of all -inf must give zeros", atol=0.0, rtol=0.0),
    ]
    for shape, dim in [((4, 7), 0), ((3, 5, 6), 1), ((2, 3, 4, 5), -2)]:
        hidden.append(Case(drive_softmax, {"x": torch.randn(shape, generator=g) * 5, "dim": dim},
                           label=f"shape {shape}, dim={dim}"))
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
                      label="called twice on the same inputs, which must not change")]
    return [
        Part("test_attention_visible", visible, **forbidden),
        Part("test_attention_random_shapes", shapes, **forbidden),
        Part("test_attention_masks", masks, **forbidden),
        Part("test_attention_large_logits", large, **forbidden),
        Part("test_attention_inputs_unchanged", unchanged, **forbidden),
    ]


def parts(generator):
    return softmax_parts(generator) + attention_parts(generator)
