"""Assignment 02's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained.

The causality checker the learner writes (``leaks_future``) is judged on attention functions
built inside ``drive_leaks``: correct ones, ones broken everywhere, and ones broken in one
place only (one query position, one key, one batch row, float32 only, one sign of the change,
a small change, only when T < S or only when T == S). Each label below says what the answer
must be ("leaks: ..." or "no leak: ..."); ``leak_truth`` is that table, written from the
definitions and checked against the reference in ``tests/test_02_masks.py``.
"""

import torch

from attnlab_grader.authority import SDPA_OPS, Case, Part

# attnlab's own mask and attention functions: the task forbids them in Tasks 1 and 2.
FORBIDDEN_NAMES = frozenset({"scaled_dot_product_attention", "attention_mask_for", "causal_mask"})
MASK_CELLS = ("causal_mask",)
ATTENTION_CELLS = ("causal_mask", "causal_attention")


# ------------------------------------------------------------------ drivers (run in the sandbox)


def drive_mask(learner, inputs):
    if inputs["S"] is None:
        return learner["causal_mask"](inputs["T"])
    return learner["causal_mask"](inputs["T"], inputs["S"])


def drive_mask_error(learner, inputs):
    T, S = inputs["T"], inputs["S"]
    try:
        learner["causal_mask"](T, S)
    except ValueError as error:
        named = str(T) in str(error) and str(S) in str(error)
        return f"a ValueError {'naming' if named else 'that does not name'} T={T} and S={S}"
    return "no error"


def drive_attention(learner, inputs):
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    if inputs.get("transposed"):  # non-contiguous views, as after a head split: (B, T, H, D) -> (B, H, T, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    return learner["causal_attention"](q, k, v, attn_mask=inputs.get("attn_mask"))


def drive_attention_twice(learner, inputs):
    first = learner["causal_attention"](inputs["q"], inputs["k"], inputs["v"], attn_mask=inputs["attn_mask"])
    second = learner["causal_attention"](inputs["q"], inputs["k"], inputs["v"], attn_mask=inputs["attn_mask"])
    return first[0], second[0]


def drive_attention_error(learner, inputs):
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    T, S = q.shape[-2], k.shape[-2]
    try:
        learner["causal_attention"](q, k, v)
    except ValueError as error:
        named = str(T) in str(error) and str(S) in str(error)
        return f"a ValueError {'naming' if named else 'that does not name'} T={T} and S={S}"
    return "no error"


def drive_own_code(learner, inputs):
    """The package's mask and attention functions switched off while the answers run: who called them?"""
    import sys

    import attnlab.attention
    import attnlab.masks

    forbidden = {"attnlab.causal_mask": attnlab.masks.causal_mask,
                 "attnlab.attention_mask_for": attnlab.masks.attention_mask_for,
                 "attnlab.scaled_dot_product_attention": attnlab.attention.scaled_dot_product_attention}
    called = []

    def tripwire(name):
        def switched_off(*args, **kwargs):
            called.append(name)
            raise RuntimeError(f"{name} is switched off in this check")
        return switched_off

    namespaces = [learner] + [vars(m) for key, m in list(sys.modules.items())
                              if m is not None and key.startswith("attnlab")]
    saved = []
    for namespace in namespaces:
        for key, value in list(namespace.items()):
            for name, function in forbidden.items():
                if value is function:
                    saved.append((namespace, key, value))
                    namespace[key] = tripwire(name)
    mask, attention = learner["causal_mask"], learner["causal_attention"]  # both must be answered
    try:
        for call in (lambda: mask(inputs["T"], inputs["S"]),
                     lambda: attention(inputs["q"], inputs["k"], inputs["v"]),
                     lambda: attention(inputs["q"], inputs["k"], inputs["v"], attn_mask=inputs["attn_mask"])):
            try:
                call()
            except NotImplementedError:
                raise
            except Exception:
                pass
    finally:
        for namespace, key, value in saved:
            namespace[key] = value
    return f"calls {', '.join(sorted(set(called)))}" if called else "no forbidden calls"


def drive_leaks_seed(learner, inputs):
    """Where the learner's leaks_future draws its inputs: the first q it gives attend for the seeds
    a, a, b, and whether the global random state is left as it was."""
    import math

    T, S, D, (a, b) = inputs["T"], inputs["S"], inputs["D"], inputs["seeds"]

    def recorder(seen):  # a correct causal attention that keeps the first q it is given
        def attend(q, k, v):
            seen.append(q.clone())
            t, s = q.shape[-2], k.shape[-2]
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, t, s)
            allowed = torch.ones(t, s, dtype=torch.bool).tril(s - t)
            return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
        return attend

    state = torch.get_rng_state()
    firsts = []
    for seed in (a, a, b):
        seen = []
        learner["leaks_future"](recorder(seen), T, S, D=D, seed=seed)
        firsts.append(seen[0] if seen else None)
    drawn = all(isinstance(q, torch.Tensor) for q in firsts)
    same = drawn and firsts[0].shape == firsts[1].shape and bool(torch.equal(firsts[0], firsts[1]))
    other = drawn and not (firsts[0].shape == firsts[2].shape and bool(torch.equal(firsts[0], firsts[2])))
    return {f"the same seed ({a}) twice gives the same q": same,
            f"another seed ({b}) gives another q": other,
            "the global random state is left as it was": bool(torch.equal(torch.get_rng_state(), state))}


def drive_leaks(learner, inputs):
    """What the learner's leaks_future says about each attention function named in inputs["attends"].

    Every attention here is built in this function (the learner's checker sees only a function).
    ``position`` and ``key`` place the localised leaks; they are drawn at grading time.
    """
    import math

    T, S, D, seed = inputs["T"], inputs["S"], inputs["D"], inputs["seed"]
    position, key = inputs["position"], inputs["key"]

    def causal(t, s, diagonal=0):  # (t, s), True = may attend; the queries are the last t of s positions
        return torch.ones(t, s, dtype=torch.bool).tril(s - t + diagonal)

    def attention(q, k, v, allowed):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, t, s)
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return weights @ v

    def masked(build):  # attention under the mask build(q, k) -> broadcastable to (B, t, s)
        return lambda q, k, v: attention(q, k, v, build(q, k))

    def size(q, k):
        return q.shape[-2], k.shape[-2]

    def one_query(q, k):  # the query at `position` also sees the key right after it
        t, s = size(q, k)
        allowed = causal(t, s)
        if s - t <= position < s - 1:
            allowed[position - (s - t), position + 1] = True
        return allowed

    def one_key(q, k):  # every query sees `key`
        t, s = size(q, k)
        allowed = causal(t, s)
        allowed[:, min(key, s - 1)] = True
        return allowed

    def one_row(q, k):  # batch row 1 has the diagonal off by one
        t, s = size(q, k)
        allowed = causal(t, s).expand(q.shape[0], t, s).clone()
        if q.shape[0] > 1:
            allowed[1] = causal(t, s, 1)
        return allowed

    def when(condition):  # off by one when condition(q, k) holds, right otherwise
        return lambda q, k: causal(*size(q, k), 1 if condition(q, k) else 0)

    def after_softmax(q, k, v):
        t, s = size(q, k)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights.masked_fill(~causal(t, s), 0.0) @ v

    def values_ahead(q, k, v):  # the mask is right, but each value is mixed with the next position's value
        v_next = torch.cat([v[..., 1:, :], v[..., -1:, :]], dim=-2)  # (B, s, D): value j + 1 (the last repeated)
        return attention(q, k, (v + v_next) / 2, causal(*size(q, k)))

    def shifted(amount, offset=0.0):  # right (plus offset), but earlier outputs move by `amount` once a later key
        first = {}                    # differs from the first call's

        def attend(q, k, v):
            t, s = size(q, k)
            out = attention(q, k, v, causal(t, s))
            k0, v0 = first.setdefault((tuple(k.shape), tuple(v.shape)), (k.clone(), v.clone()))
            changed = (k != k0).any(-1) | (v != v0).any(-1)  # (B, s): keys that differ from the first call
            later = torch.arange(s)[None, :] > torch.arange(s - t, s)[:, None]  # (t, s): key after the query
            hit = (changed[:, None, :] & later).any(-1, keepdim=True)  # (B, t, 1)
            return out + offset + amount * hit.to(out.dtype)
        return attend

    builders = {
        "causal": lambda: masked(lambda q, k: causal(*size(q, k))),
        "top-left": lambda: masked(lambda q, k: torch.ones(*size(q, k), dtype=torch.bool).tril()),
        "no mask": lambda: masked(lambda q, k: torch.ones(*size(q, k), dtype=torch.bool)),
        "triu": lambda: masked(lambda q, k: torch.ones(*size(q, k), dtype=torch.bool).triu(k.shape[-2] - q.shape[-2])),
        "off by one": lambda: masked(lambda q, k: causal(*size(q, k), 1)),
        "after softmax": lambda: after_softmax,
        "one query": lambda: masked(one_query),
        "one key": lambda: masked(one_key),
        "one row": lambda: masked(one_row),
        "float32 only": lambda: masked(when(lambda q, k: q.dtype == torch.float32)),
        "T < S only": lambda: masked(when(lambda q, k: q.shape[-2] < k.shape[-2])),
        "T == S only": lambda: masked(when(lambda q, k: q.shape[-2] == k.shape[-2])),
        "lowers": lambda: shifted(-1e-3),
        "raises": lambda: shifted(1e-3),
        "small": lambda: shifted(1e-4),
        "noise": lambda: shifted(2e-6),
        "values ahead": lambda: values_ahead,
        "just above": lambda: shifted(1.5e-5, offset=10.0),
    }
    return {label: learner["leaks_future"](builders[name](), T, S, D=D, seed=seed)
            for label, name in inputs["attends"].items()}


# ------------------------------------------------------------------ what each attention in drive_leaks is

DESCRIPTIONS = {
    "causal": "a correct causal attention",
    "top-left": "a top-left causal mask (it sees less than it should, never the future)",
    "no mask": "no mask at all",
    "triu": "triu where tril was meant",
    "off by one": "a diagonal off by one",
    "after softmax": "masking after the softmax",
    "one query": "a leak at one query only (position {position} also sees key {next})",
    "one key": "a leak at one key only (every query sees key {key})",
    "one row": "a leak in batch row 1 only",
    "float32 only": "a leak in float32 only (float64 is right)",
    "T < S only": "a leak only after a cache (T < S: off by one)",
    "T == S only": "a leak only in a full prefill (T == S: off by one)",
    "lowers": "a leak that only lowers the earlier outputs (by 1e-3)",
    "raises": "a leak that only raises the earlier outputs (by 1e-3)",
    "small": "a leak of 1e-4",
    "noise": "rounding noise of 2e-6 (below 1e-5)",
    "values ahead": "a leak through the values only (each value is mixed with the next position's value)",
    "just above": "a leak of 1.5e-5 on outputs near 10 (a change larger than 1e-5 is a leak)",
}


def leak_truth(name, T, S, position, key):
    """Whether attention ``name`` of drive_leaks lets a query see the future for T queries over S keys.

    Written from the definitions (not by running anything): the queries sit at positions
    S - T ... S - 1, and a leak needs a query with a later key to see it.
    """
    earliest = S - T  # the first query's position; a query at the last position S - 1 has no future
    has_future = T > 1
    return {
        "causal": False, "top-left": False, "noise": False,
        "no mask": has_future, "triu": has_future, "off by one": has_future, "after softmax": has_future,
        "one query": earliest <= position < S - 1,
        "one key": key > earliest,
        "one row": has_future, "float32 only": has_future,
        "T < S only": has_future and T < S, "T == S only": has_future and T == S,
        "lowers": has_future, "raises": has_future, "small": has_future,
        "values ahead": has_future, "just above": has_future,
    }[name]


def leak_case(g, T, S, names, label):
    # with T >= 3 the leaking query is not the first one and the leaking key not the last one
    position = int(torch.randint(S - T + 1, S - 1, (1,), generator=g)) if T >= 3 else S - T
    key = int(torch.randint(S - T + 1, S - 1, (1,), generator=g)) if T >= 3 else S - 1
    attends = {}
    for name in names:
        truth = leak_truth(name, T, S, position, key)
        text = DESCRIPTIONS[name].format(position=position, next=position + 1, key=key)
        attends[f"{'leaks' if truth else 'no leak'}: {text}"] = name
    D = int(torch.randint(4, 17, (1,), generator=g))
    seed = int(torch.randint(0, 1000, (1,), generator=g))
    return Case(drive_leaks, {"T": T, "S": S, "D": D, "seed": seed, "position": position, "key": key,
                              "attends": attends},
                label=f"{label}: leaks_future(attend, T={T}, S={S}, D={D}, seed={seed})")


# ------------------------------------------------------------------ parts


def randint(g, low, high):
    return int(torch.randint(low, high, (1,), generator=g))


def mask_parts(g):
    square = [Case(drive_mask, {"T": 4, "S": None}, label="causal_mask(4)")]
    for T in (1, randint(g, 2, 6), randint(g, 6, 14)):
        square.append(Case(drive_mask, {"T": T, "S": None}, label=f"causal_mask({T})"))
        square.append(Case(drive_mask, {"T": T, "S": T}, label=f"causal_mask({T}, {T})"))
    offset = []
    for _ in range(5):
        S = randint(g, 3, 16)
        T = randint(g, 2, S)
        offset.append(Case(drive_mask, {"T": T, "S": S}, label=f"causal_mask({T}, {S})", exact_dtype=False))
    S = randint(g, 2, 12)
    offset.append(Case(drive_mask, {"T": 1, "S": S}, label=f"causal_mask(1, {S}): one new token", exact_dtype=False))
    offset.append(Case(drive_mask, {"T": S - 1, "S": S}, label=f"causal_mask({S - 1}, {S})", exact_dtype=False))
    errors = []
    for T, S in [(5, 3), (randint(g, 7, 12), randint(g, 1, 6)), (0, randint(g, 2, 9)), (randint(g, 3, 8), 2)]:
        errors.append(Case(drive_mask_error, {"T": T, "S": S}, label=f"causal_mask({T}, {S})"))
    rules = dict(forbidden_names=FORBIDDEN_NAMES, answer_cells=MASK_CELLS)
    return [
        Part("test_causal_mask_square", square, **rules),
        Part("test_causal_mask_offset", offset, **rules),
        Part("test_causal_mask_errors", errors, **rules),
    ]


def qkv(g, lead, T, S, D, Dv, dtype=torch.float32):
    q = torch.randn(*lead, T, D, generator=g)
    k = torch.randn(*lead, S, D, generator=g)
    v = torch.randn(*lead, S, Dv, generator=g)
    return {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype)}


def left_padding(g, B, S):
    """A (B, 1, 1, S) key mask of left-padded rows; one row is all pads but its last token."""
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = 1
    return (torch.arange(S)[None, :] >= S - lengths[:, None])[:, None, None, :]


def shapes(inputs):
    text = ", ".join(f"{name} {tuple(inputs[name].shape)}" for name in ("q", "k", "v"))
    if inputs.get("attn_mask") is not None:
        text += f", attn_mask {tuple(inputs['attn_mask'].shape)}"
    return text


def attention_case(inputs, label="", **tolerances):
    return Case(drive_attention, inputs, label=label or shapes(inputs), exact_dtype=False, **tolerances)


def attention_parts(g):
    square = [attention_case(qkv(g, (2, 3), 5, 5, 8, 8))]
    for lead in [(randint(g, 1, 4), randint(g, 2, 5)), (randint(g, 2, 4),), (2, 2, randint(g, 1, 3))]:
        S = randint(g, 4, 12)
        square.append(attention_case(qkv(g, lead, S, S, randint(g, 2, 9), randint(g, 2, 9))))

    offset = [attention_case(qkv(g, (1,), 2, 5, 8, 4))]
    for _ in range(4):
        S = randint(g, 4, 14)
        T = randint(g, 2, S)
        offset.append(attention_case(qkv(g, (randint(g, 1, 4), randint(g, 1, 4)), T, S, randint(g, 3, 9),
                                         randint(g, 2, 7))))
    S = randint(g, 3, 10)
    offset.append(attention_case(qkv(g, (2,), 1, S, 6, 5), label=f"one new query over S={S} keys"))

    contiguous = []
    for T, S in [(4, 4), (2, randint(g, 5, 10))]:
        # B >= 2: with B = 1 the transposed (1, H, T, D) still flattens to (H, T, D) with view
        B, H, D = randint(g, 2, 4), randint(g, 2, 5), randint(g, 3, 9)
        inputs = {"q": torch.randn(B, T, H, D, generator=g), "k": torch.randn(B, S, H, D, generator=g),
                  "v": torch.randn(B, S, H, D, generator=g), "transposed": True}
        contiguous.append(attention_case(inputs, label=f"non-contiguous q ({B}, {H}, {T}, {D}) = a (B, T, H, D) "
                                                       f"tensor's transpose(1, 2), and k, v likewise (S={S})"))

    padding = []
    B, H = 2, 1
    padding.append(attention_case({**qkv(g, (B, H), 4, 4, 8, 8), "attn_mask": left_padding(g, B, 4)}))
    for _ in range(3):
        B, H, S = randint(g, 2, 5), randint(g, 1, 4), randint(g, 3, 11)
        T = randint(g, 1, S + 1)
        padding.append(attention_case({**qkv(g, (B, H), T, S, randint(g, 3, 9), randint(g, 2, 9)),
                                       "attn_mask": left_padding(g, B, S)}))
    B, H, S = randint(g, 2, 4), randint(g, 2, 4), randint(g, 4, 10)
    T = randint(g, 2, S + 1)
    extra = torch.rand(B, H, T, S, generator=g) < 0.5
    extra[0, 0, 0] = False  # one query row with no allowed key at all
    padding.append(attention_case({**qkv(g, (B, H), T, S, 6, 4), "attn_mask": extra}))
    extra = torch.rand(T, S, generator=g) < 0.7
    extra[:, -1] = True
    padding.append(attention_case({**qkv(g, (B, H), T, S, 6, 4), "attn_mask": extra}))

    low = []
    for dtype, atol in [(torch.float16, 2e-2), (torch.bfloat16, 8e-2)]:
        low.append(Case(drive_attention, qkv(g, (1, 2), 5, 5, 8, 8, dtype), label=f"{dtype}, T == S",
                        atol=atol, rtol=0.0))
        B, H, S = randint(g, 2, 4), randint(g, 1, 4), randint(g, 3, 10)
        T = randint(g, 1, S + 1)
        inputs = {**qkv(g, (B, H), T, S, randint(g, 4, 9), 5, dtype), "attn_mask": left_padding(g, B, S)}
        low.append(Case(drive_attention, inputs, label=f"{dtype}, {shapes(inputs)}", atol=atol, rtol=0.0))

    B, H = randint(g, 1, 4), randint(g, 1, 4)
    inputs = {**qkv(g, (B, H), 3, 6, 8, 5), "attn_mask": torch.rand(B, H, 3, 6, generator=g) < 0.8}
    unchanged = [Case(drive_attention_twice, inputs, exact_dtype=False,
                      label=f"called twice ({shapes(inputs)}); q, k, v and attn_mask must not change")]

    errors = []
    for T, S in [(6, 4), (randint(g, 5, 10), randint(g, 1, 5))]:
        inputs = qkv(g, (1, 2), T, S, 4, 4)
        errors.append(Case(drive_attention_error, inputs, label=f"T={T} queries, S={S} keys"))

    rules = dict(forbidden_ops=SDPA_OPS, forbidden_names=FORBIDDEN_NAMES, answer_cells=ATTENTION_CELLS)
    return [
        Part("test_causal_attention_square", square, **rules),
        Part("test_causal_attention_offset", offset, **rules),
        Part("test_causal_attention_non_contiguous", contiguous, **rules),
        Part("test_causal_attention_padding", padding, **rules),
        Part("test_causal_attention_low_precision", low, **rules),
        Part("test_causal_attention_inputs_unchanged", unchanged, **rules),
        Part("test_causal_attention_errors", errors, **rules),
    ]


def own_code_parts(g):
    inputs = {**qkv(g, (2, 2), 3, 5, 4, 4), "attn_mask": left_padding(g, 2, 5), "T": 3, "S": 5}
    return [Part("test_own_code", [Case(drive_own_code, inputs, label="the package's functions switched off",
                                        unchanged=False)],  # a call that changes its inputs costs other parts
                 forbidden_ops=SDPA_OPS, forbidden_names=FORBIDDEN_NAMES, answer_cells=ATTENTION_CELLS)]


EVERYWHERE = ("causal", "top-left", "no mask", "triu", "off by one", "after softmax")
LOCALISED = ("causal", "one query", "one key", "one row", "float32 only", "T < S only", "T == S only",
             "values ahead", "just above",
             "lowers", "raises", "small", "noise")


def leak_parts(g):
    everywhere = [leak_case(g, 5, 5, ("causal", "no mask"), "visible")]
    S = randint(g, 4, 8)
    everywhere.append(leak_case(g, S, S, EVERYWHERE, "T == S"))
    S = randint(g, 5, 11)
    everywhere.append(leak_case(g, randint(g, 2, S - 1), S, EVERYWHERE, "T < S"))
    everywhere.append(leak_case(g, 1, randint(g, 3, 9), EVERYWHERE, "T == 1: one query at the last position"))
    S, a = randint(g, 3, 9), randint(g, 0, 1000)
    seeds = (a, (a + randint(g, 1, 1000)) % 1000)
    inputs = {"T": randint(g, 1, S + 1), "S": S, "D": randint(g, 4, 17), "seeds": seeds}
    everywhere.append(Case(drive_leaks_seed, inputs, label="q, k, v drawn from a torch.Generator seeded with seed "
                                                          f"(seeds {seeds[0]} and {seeds[1]})"))
    localised = []
    S = randint(g, 5, 9)
    localised.append(leak_case(g, S, S, LOCALISED, "T == S"))
    S = randint(g, 7, 12)
    localised.append(leak_case(g, randint(g, 3, S - 2), S, LOCALISED, "T < S"))
    return [Part("test_leaks_future", everywhere), Part("test_leaks_future_localised", localised)]


def parts(generator):
    return mask_parts(generator) + attention_parts(generator) + own_code_parts(generator) + leak_parts(generator)
