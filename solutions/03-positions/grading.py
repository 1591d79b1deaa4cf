"""Assignment 03's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained.

The relative-position checker the learner writes (``relative_position_error``) is judged on
rotations built inside ``drive_checker``: correct ones (both pairings, either direction, another
base, partial rotary, no rotation), ones broken everywhere, and ones broken in one place only
(one position, beyond some position, one channel pair, float32 only). Each label says what the
learner's float must mean ("relative: ...", "broken: ...", "inf: ..."); ``VERDICTS`` is that
table, written from the definitions and checked against the reference in
``tests/test_03_positions.py``.
"""

import math

import torch

from attnlab_grader.authority import Case, Part

# The package's rotary functions and transformers' (as attributes, imports or strings): forbidden in the answers.
FORBIDDEN_NAMES = frozenset({
    "rotary_cos_sin", "apply_rotary", "rotate_half", "rotary_inv_freq", "apply_rotary_interleaved",
    "half_split_channel_order", "interleaved_to_half_split", "half_split_to_interleaved", "relative_position_error",
    "apply_rotary_pos_emb", "LlamaRotaryEmbedding",
})


def rules(cell):
    return dict(forbidden_names=FORBIDDEN_NAMES, answer_cells=(cell,))


# ------------------------------------------------------------------ drivers (run in the sandbox)


def drive_cos_sin(learner, inputs):
    return learner["rope_cos_sin"](inputs["positions"], inputs["head_dim"], base=inputs["base"],
                                   dtype=inputs["dtype"])


def drive_cos_sin_layout(learner, inputs):
    """Only the type, shape and dtype of the tables: their values are another part's."""
    result = learner["rope_cos_sin"](inputs["positions"], inputs["head_dim"], dtype=inputs["dtype"])
    if isinstance(result, tuple):
        return tuple(torch.zeros_like(t) if isinstance(t, torch.Tensor) else t for t in result)
    return result


def drive_cos_sin_error(learner, inputs):
    head_dim = inputs["head_dim"]
    try:
        learner["rope_cos_sin"](inputs["positions"], head_dim)
    except ValueError as error:
        return f"a ValueError {'naming' if str(head_dim) in str(error) else 'that does not name'} head_dim={head_dim}"
    return "no error"


def drive_rope(learner, inputs):
    x = inputs["x"].transpose(1, 2) if inputs.get("transposed") else inputs["x"]  # (B, T, H, D) -> (B, H, T, D)
    return learner[inputs["function"]](x, inputs["cos"], inputs["sin"])


def drive_rope_layout(learner, inputs):
    """Only the type, shape and dtype of the output: its values are another part's."""
    result = learner[inputs["function"]](inputs["x"], inputs["cos"], inputs["sin"])
    return torch.zeros_like(result) if isinstance(result, torch.Tensor) else result


def drive_rope_twice(learner, inputs):
    """Inputs unchanged (checked by the grader) and the same output twice; the values are other parts'."""
    first = learner["apply_rope"](inputs["x"], inputs["cos"], inputs["sin"])
    second = learner["apply_rope"](inputs["x"], inputs["cos"], inputs["sin"])
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return "the same output twice" if torch.equal(first, second) else "two different outputs"
    return f"a {type(first).__name__}"


def drive_rope_error(learner, inputs):
    x, cos = inputs["x"], inputs["cos"]
    names = [str(n) for n in inputs["names"]]
    try:
        learner["apply_rope"](x, cos, inputs["sin"])
    except ValueError as error:
        named = all(n in str(error) for n in names)
        return f"a ValueError {'naming' if named else 'that does not name'} {' and '.join(names)}"
    return "no error"


def drive_convert(learner, inputs):
    return learner["convert_meta_qk"](inputs["w_q"], inputs["w_k"], inputs["n_heads"], inputs["n_kv_heads"])


def drive_convert_scores(learner, inputs):
    """The attention scores of the converted weights under the half-split rotation (Hugging Face's code)."""
    w_q, w_k, x, cos, sin = inputs["w_q"], inputs["w_k"], inputs["x"], inputs["cos"], inputs["sin"]
    H, Hkv = inputs["n_heads"], inputs["n_kv_heads"]
    result = learner["convert_meta_qk"](w_q, w_k, H, Hkv)
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result)
            and result[0].shape == w_q.shape and result[1].shape == w_k.shape):
        return "converted weights without the shapes of w_q and w_k"
    D = w_q.shape[0] // H

    def rotate(t):  # (B, heads, T, D), half split: x * cos + rotate_half(x) * sin, tables (B, T, D)
        return t * cos[:, None] + torch.cat((-t[..., D // 2:], t[..., : D // 2]), dim=-1) * sin[:, None]

    q = (x @ result[0].float().T).unflatten(-1, (H, D)).transpose(1, 2)  # (B, T, H * D) -> (B, H, T, D)
    k = (x @ result[1].float().T).unflatten(-1, (Hkv, D)).transpose(1, 2)  # (B, T, Hkv * D) -> (B, Hkv, T, D)
    k = k.repeat_interleave(H // Hkv, dim=1)  # (B, H, T, D): query head h reads key head h // (H / Hkv)
    return rotate(q) @ rotate(k).transpose(-2, -1)  # (B, H, T, T)


def drive_convert_error(learner, inputs):
    names = [str(n) for n in inputs["names"]]
    try:
        learner["convert_meta_qk"](inputs["w_q"], inputs["w_k"], inputs["n_heads"], inputs["n_kv_heads"])
    except ValueError as error:
        named = all(n in str(error) for n in names)
        return f"a ValueError {'naming' if named else 'that does not name'} {' rows and '.join(names)} heads"
    return "no error"


def drive_checker_value(learner, inputs):
    """The learner's relative_position_error for a "rotation" that returns fixed vectors whatever x is."""
    table = inputs["table"]  # (P, D)
    return learner["relative_position_error"](lambda x, positions: table[positions][None, None].clone(),
                                              table.shape[1], max_position=table.shape[0], seed=inputs["seed"])


def drive_checker_seed(learner, inputs):
    """Where the learner's relative_position_error draws q and k: the first x it rotates for the seeds
    a, a, b, and whether the global random state is left as it was."""
    D, P, (a, b) = inputs["head_dim"], inputs["max_position"], inputs["seeds"]

    def recorder(seen):  # a correct half-split rotary that keeps the first x it is given
        def rotate(x, positions):
            seen.append(x.clone())
            theta = positions[:, None].double() * 10000.0 ** (-torch.arange(0, D, 2).double() / D)  # (P, D/2)
            cos, sin = torch.cat((theta, theta), -1).cos().float(), torch.cat((theta, theta), -1).sin().float()
            return x * cos + torch.cat((-x[..., D // 2:], x[..., : D // 2]), dim=-1) * sin
        return rotate

    state = torch.get_rng_state()
    firsts = []
    for seed in (a, a, b):
        seen = []
        learner["relative_position_error"](recorder(seen), D, max_position=P, seed=seed)
        firsts.append(seen[0] if seen else None)
    drawn = all(isinstance(x, torch.Tensor) for x in firsts)
    same = drawn and firsts[0].shape == firsts[1].shape and bool(torch.equal(firsts[0], firsts[1]))
    other = drawn and not (firsts[0].shape == firsts[2].shape and bool(torch.equal(firsts[0], firsts[2])))
    shapes = sorted({tuple(x.shape) for x in firsts if isinstance(x, torch.Tensor)})
    return {f"the same seed ({a}) twice gives the same q": same,
            f"another seed ({b}) gives another q": other,
            "the global random state is left as it was": bool(torch.equal(torch.get_rng_state(), state)),
            "the shapes of the x given to rotate": ", ".join(str(shape) for shape in shapes)}


def drive_convert_own_memory(learner, inputs):
    """Whether zeroing the converted weights leaves w_q and w_k as they were (new tensors, not views)."""
    w_q, w_k = inputs["w_q"].clone(), inputs["w_k"].clone()  # the learner's own copies: the grader's stay intact
    before = w_q.clone(), w_k.clone()
    result = learner["convert_meta_qk"](w_q, w_k, inputs["n_heads"], inputs["n_kv_heads"])
    if not (isinstance(result, tuple) and all(isinstance(t, torch.Tensor) for t in result)):
        return f"a {type(result).__name__}, not a tuple of tensors"
    for t in result:
        t.zero_()
    if torch.equal(w_q, before[0]) and torch.equal(w_k, before[1]):
        return "new tensors: zeroing them leaves w_q and w_k as they were"
    return "views of w_q or w_k: zeroing them changed the inputs"


def drive_checker(learner, inputs):
    """What the learner's relative_position_error says about each rotation named in inputs["rotations"].

    Every rotation here is built in this function (the learner's checker sees only a function).
    The learner's float is read as "relative" (< 1e-3), "broken" (> 5e-2) or "inf".
    """
    import math

    D, P, seed = inputs["head_dim"], inputs["max_position"], inputs["seed"]
    where, pair, table, jitter = inputs["position"], inputs["pair"], inputs["table"], inputs["jitter"]

    def angles(positions, dim, base=10000.0):  # (P, dim/2), float64, from the formula
        return positions[:, None].double() * base ** (-torch.arange(0, dim, 2).double() / dim)

    def half_split(x, theta):  # x (.., P, dim), theta (P, dim/2): pair i is channels (i, i + dim/2)
        cos, sin = torch.cat((theta, theta), -1).cos().float(), torch.cat((theta, theta), -1).sin().float()
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def interleaved(x, theta):  # pair i is channels (2i, 2i + 1)
        cos, sin = theta.cos().float(), theta.sin().float()
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)

    def rotary(positions_of=lambda p: p, base=10000.0):
        return lambda x, positions: half_split(x, angles(positions_of(positions), x.shape[-1], base))

    def one_pair(x, positions):  # pair `pair` gets a garbage angle at every position
        theta = angles(positions, x.shape[-1]).clone()
        theta[:, pair] += jitter[positions]
        return half_split(x, theta)

    def one_position(x, positions):  # position `where` gets garbage angles in every pair
        theta = angles(positions, x.shape[-1]).clone()
        theta[positions == where] += jitter[: x.shape[-1] // 2]
        return half_split(x, theta)

    def mixed_layouts(x, positions):  # adjacent pairs rotated with the half-split table
        theta = angles(positions, x.shape[-1])
        cos, sin = torch.cat((theta, theta), -1).cos().float(), torch.cat((theta, theta), -1).sin().float()
        pairs = x.unflatten(-1, (-1, 2))
        return x * cos + torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2) * sin

    def sinusoids(x, positions):  # added absolute sinusoids, as in the original Transformer
        theta = angles(positions, x.shape[-1])
        return x + torch.stack((theta.sin(), theta.cos()), dim=-1).flatten(-2).float()

    def partial(x, positions):  # GPT-NeoX's rotary_pct = 0.5: the second half of the channels is not rotated
        half = x.shape[-1] // 2
        return torch.cat((half_split(x[..., :half], angles(positions, half)), x[..., half:]), dim=-1)

    def float32_only(x, positions):  # a float32 fast path with a short table; float64 is right
        if x.dtype == torch.float32:
            return half_split(x, angles(positions.clamp(max=where), x.shape[-1]))
        return half_split(x, angles(positions, x.shape[-1]))

    builders = {
        "half split": rotary(),
        "interleaved": lambda x, positions: interleaved(x, angles(positions, x.shape[-1])),
        "other way": lambda x, positions: half_split(x, -angles(positions, x.shape[-1])),
        "base 500000": rotary(base=500000.0),
        "partial": partial,
        "no rotation": lambda x, positions: x.clone(),
        "long enough table": rotary(lambda p: p.clamp(max=P + 7)),
        "mixed layouts": mixed_layouts,
        "learned table": lambda x, positions: x + table[positions, : x.shape[-1]],
        "sinusoids": sinusoids,
        "nan": lambda x, positions: x * float("nan"),
        "nan at one position": lambda x, positions: rotary()(x, positions).masked_fill((positions == where)[:, None],
                                                                                      float("nan")),
        "one position": one_position,
        "short table": rotary(lambda p: p.clamp(max=where)),
        "wraps": rotary(lambda p: p % (where + 1)),
        "one pair": one_pair,
        "float32 only": float32_only,
    }

    def verdict(error):
        if not isinstance(error, float) or isinstance(error, bool):
            return f"not a float: a {type(error).__name__}"
        if math.isnan(error):
            return "nan"
        if error == float("inf"):
            return "inf"
        return "relative" if error < 1e-3 else "broken" if error > 5e-2 else "unclear (between 1e-3 and 5e-2)"

    return {label: verdict(learner["relative_position_error"](builders[name], D, max_position=P, seed=seed))
            for label, name in inputs["rotations"].items()}


def drive_own_code(learner, inputs):
    """The package's rotary functions and the notebook's test helpers switched off while the answers run."""
    import sys

    import attnlab.positions
    import attnlab.rotary

    forbidden = {f"attnlab.{name}": getattr(module, name) for module, names in [
        (attnlab.rotary, ["apply_rotary", "rotary_cos_sin", "rotate_half", "rotary_inv_freq"]),
        (attnlab.positions, ["apply_rotary_interleaved", "half_split_channel_order", "interleaved_to_half_split",
                             "half_split_to_interleaved", "relative_position_error"])]
        for name in names}
    for name in ("half_split_tables", "rotation_tables", "correct_rotary", "short_table", "added_sinusoids"):
        if callable(learner.get(name)):
            forbidden[f"the test helper {name}"] = learner[name]
    called = []

    def tripwire(name):
        def switched_off(*args, **kwargs):
            called.append(name)
            raise RuntimeError(f"{name} is switched off in this check")
        return switched_off

    answers = [learner[name] for name in ("rope_cos_sin", "apply_rope", "apply_rope_interleaved", "convert_meta_qk",
                                          "relative_position_error")]  # every one must be answered
    namespaces = [learner] + [vars(m) for key, m in list(sys.modules.items())
                              if m is not None and (key.startswith("attnlab") or key.startswith("transformers."))]
    saved = []
    for namespace in namespaces:
        for key, value in list(namespace.items()):
            for name, function in forbidden.items():
                if value is function:
                    saved.append((namespace, key, value))
                    namespace[key] = tripwire(name)
    x, cos, sin = inputs["x"], inputs["cos"], inputs["sin"]
    try:
        for call in (lambda: answers[0](inputs["positions"], x.shape[-1]), lambda: answers[1](x, cos, sin),
                     lambda: answers[2](x, cos, sin), lambda: answers[3](inputs["w_q"], inputs["w_k"], 2, 1),
                     lambda: answers[4](lambda t, positions: t, x.shape[-1], max_position=4)):
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


# ------------------------------------------------------------------ what each rotation in drive_checker is

DESCRIPTIONS = {
    "half split": "a correct half-split rotary",
    "interleaved": "a correct interleaved rotary",
    "other way": "rotary turning the other way",
    "base 500000": "rotary with base 500000",
    "partial": "partial rotary (half of the channels)",
    "no rotation": "a rotation that ignores positions",
    "long enough table": "a table of {table_rows} rows, enough for max_position={P}",
    "mixed layouts": "adjacent pairs rotated with the half-split table",
    "learned table": "a learned absolute table added",
    "sinusoids": "added sinusoids",
    "nan": "a rotation that returns NaN",
    "nan at one position": "a rotation that returns NaN at position {where} only",
    "one position": "wrong at position {where} only (its angles are garbage)",
    "short table": "wrong beyond position {where} (a table of {rows} rows)",
    "wraps": "wrong beyond position {where} (a table of {rows} rows that wraps around)",
    "one pair": "wrong in channel pair {pair} only (its angles are garbage)",
    "float32 only": "wrong beyond position {where} in float32 only (float64 is right)",
}
VERDICTS = {
    "half split": "relative", "interleaved": "relative", "other way": "relative", "base 500000": "relative",
    "partial": "relative", "no rotation": "relative", "long enough table": "relative",
    "mixed layouts": "broken", "learned table": "broken", "sinusoids": "broken", "nan": "inf",
    "nan at one position": "inf",
    "one position": "broken", "short table": "broken", "wraps": "broken", "one pair": "broken",
    "float32 only": "broken",
}
BASIC = ("half split", "interleaved", "other way", "base 500000", "partial", "no rotation", "mixed layouts",
         "learned table", "sinusoids", "nan")
LOCALISED = ("long enough table", "one position", "short table", "wraps", "one pair", "float32 only",
             "nan at one position")


def randint(g, low, high):
    return int(torch.randint(low, high, (1,), generator=g))


def checker_case(g, head_dim, max_position, names, label):
    where = randint(g, max_position // 2, max_position - 1)  # a position in the second half, below max_position
    pair = randint(g, 1, head_dim // 2)  # a channel pair other than the first
    inputs = {"head_dim": head_dim, "max_position": max_position, "seed": randint(g, 0, 1000),
              "position": where, "pair": pair, "table": torch.randn(256, 64, generator=g),
              "jitter": torch.rand(256, generator=g).double() * (2 * math.pi - 1.0) + 0.5}  # garbage: 0.5 .. 2 pi - 0.5
    words = dict(where=where, rows=where + 1, pair=pair, P=max_position,
                 table_rows=max_position + 8)
    inputs["rotations"] = {f"{VERDICTS[name]}: {DESCRIPTIONS[name].format(**words)}": name for name in names}
    return Case(drive_checker, inputs, label=f"{label}: relative_position_error(rotate, head_dim={head_dim}, "
                                            f"max_position={max_position}, seed={inputs['seed']})")


# ------------------------------------------------------------------ parts


def half_split_tables(positions, head_dim, base=10000.0):
    """float32 tables from the formula in float64, as the notebook's helper computes them."""
    angles = positions[..., None].double() * base ** (-torch.arange(0, head_dim, 2).double() / head_dim)
    angles = torch.cat((angles, angles), dim=-1)  # (*, T, D/2) -> (*, T, D)
    return angles.cos().float(), angles.sin().float()


def positions_for(g, B, T, kind):
    S = T + randint(g, 1, 40)
    if kind == "cache":  # the T new tokens after S - T cached ones, the same for every row: (T,)
        return torch.arange(S - T, S)
    if kind == "padding":  # left padding: each row counts its real tokens from 0, pads get 0: (B, T)
        return (torch.arange(T) - torch.randint(0, T, (B, 1), generator=g)).clamp(min=0)
    return torch.arange(S - T, S) - torch.randint(0, S - T + 1, (B, 1), generator=g)  # a cache under padding


def cos_sin_parts(g):
    layout = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        B, T, D = randint(g, 1, 5), randint(g, 1, 9), 2 * randint(g, 1, 9)
        for positions in (torch.randint(0, 100, (T,), generator=g), torch.randint(0, 100, (B, T), generator=g)):
            layout.append(Case(drive_cos_sin_layout, {"positions": positions, "head_dim": D, "dtype": dtype},
                               label=f"position_ids {tuple(positions.shape)}, head_dim={D}, dtype={dtype}"))
    values = [Case(drive_cos_sin, {"positions": torch.tensor([0, 1, 2]), "head_dim": 4, "base": 100.0,
                                   "dtype": torch.float32}, label="positions [0, 1, 2], head_dim=4, base=100",
                   atol=2e-5, rtol=0.0, exact_dtype=False)]
    for n, kind in enumerate(("cache", "padding", "both", "cache", "padding", "both")):
        B, T, D = randint(g, 2, 5), randint(g, 1, 12), 2 * randint(g, 1, 33)
        base = [10000.0, 500000.0, 100.0][n % 3]
        positions = positions_for(g, B, T, kind)
        values.append(Case(drive_cos_sin, {"positions": positions, "head_dim": D, "base": base, "dtype": torch.float32},
                           label=f"position_ids {positions.tolist()}, head_dim={D}, base={base:g}",
                           atol=2e-5, rtol=0.0, exact_dtype=False))
    low = []
    for dtype in (torch.float16, torch.bfloat16):
        for base in (10000.0, 500000.0):
            D = 2 * randint(g, 2, 33)
            positions = torch.randint(300, 4000, (2, 6), generator=g)
            low.append(Case(drive_cos_sin, {"positions": positions, "head_dim": D, "base": base, "dtype": dtype},
                            label=f"positions {positions.tolist()}, head_dim={D}, base={base:g}, dtype={dtype}",
                            atol=1e-2, rtol=0.0))
    errors = [Case(drive_cos_sin_error, {"positions": torch.arange(4), "head_dim": head_dim},
                   label=f"rope_cos_sin(positions, head_dim={head_dim})")
              for head_dim in (7, 1, 0, 2 * randint(g, 2, 20) + 1, -2 * randint(g, 1, 5), 2.0 * randint(g, 1, 9))]
    return [
        Part("test_cos_sin_shape", layout, **rules("rope_cos_sin")),
        Part("test_cos_sin_values", values, **rules("rope_cos_sin")),
        Part("test_cos_sin_low_precision", low, **rules("rope_cos_sin")),
        Part("test_cos_sin_errors", errors, **rules("rope_cos_sin")),
    ]


def rotation_case(g, function, B, H, T, D, positions, dtype=torch.float32, transposed=False, **options):
    cos, sin = half_split_tables(positions, D, options.pop("base", 10000.0))
    x = torch.randn(B, T, H, D, generator=g) if transposed else torch.randn(B, H, T, D, generator=g)
    inputs = {"x": x.to(dtype), "cos": cos.to(dtype), "sin": sin.to(dtype), "function": function,
              "transposed": transposed}
    shape = f"x {(B, H, T, D)}{' (a non-contiguous transpose)' if transposed else ''}"
    label = f"{shape}, cos/sin {tuple(cos.shape)} for positions {positions.tolist()}, {dtype}"
    return Case(options.pop("driver", drive_rope), inputs, label=label, **options)


def rope_parts(g, function, names):
    layout = []
    for dtype, heads in ((torch.float32, 1), (torch.float16, None), (torch.bfloat16, None)):
        B, H, T, D = randint(g, 2, 5), heads or randint(g, 2, 5), randint(g, 1, 6), 2 * randint(g, 1, 9)
        positions = torch.randint(0, 50, (B, T) if dtype != torch.float16 else (T,), generator=g)
        layout.append(rotation_case(g, function, B, H, T, D, positions, dtype, driver=drive_rope_layout))
    values = []
    for n in range(8):
        B, H, T, D = randint(g, 1, 5), randint(g, 1, 5), randint(g, 1, 7), 2 * randint(g, 2, 17)
        if n % 4 == 3:
            B = H = max(B, 2)  # B == H: (B, T, D) tables broadcast silently against the heads without a head axis
        if n % 3 == 2:
            H, T = max(H, 2), max(T, 2)  # a transpose with H = 1 or T = 1 is still viewable: keep it non-contiguous
        positions = positions_for(g, B, T, ["cache", "both", "padding", "both"][n % 4])
        values.append(rotation_case(g, function, B, H, T, D, positions, transposed=n % 3 == 2,
                                    base=[10000.0, 500.0][n % 2], atol=1e-5, rtol=1e-4, exact_dtype=False))
    low = []
    for dtype, atol in ((torch.float16, 2e-2), (torch.bfloat16, 1e-1)):
        for _ in range(2):
            B, H, T, D = randint(g, 1, 5), randint(g, 1, 5), randint(g, 1, 6), 2 * randint(g, 2, 17)
            low.append(rotation_case(g, function, B, H, T, D, torch.randint(0, 2000, (B, T), generator=g), dtype,
                                     atol=atol, rtol=0.0))
    return [Part(names["layout"], layout, **rules(function)) if "layout" in names else None,
            Part(names["values"], values, **rules(function)),
            Part(names["low"], low, **rules(function))]


def apply_rope_parts(g):
    layout, values, low = rope_parts(g, "apply_rope", {"layout": "test_apply_rope_shape",
                                                        "values": "test_apply_rope_values",
                                                        "low": "test_apply_rope_low_precision"})
    unchanged = [rotation_case(g, "apply_rope", 3, 2, 5, 8, torch.randint(0, 40, (3, 5), generator=g), dtype,
                               driver=drive_rope_twice) for dtype in (torch.float32, torch.float16)]
    errors = []
    for x_shape, table_shape, names in [((1, 1, 3, 5), (3, 5), ["D=5"]), ((2, 1, 3, 8), (4, 8), None),
                                        ((2, 1, 3, 8), (2, 3, 6), None), ((2, 1, 3, 8), (5, 3, 8), None),
                                        ((2, 3, 4, 2 * randint(g, 2, 6) + 1), None, None)]:
        table_shape = table_shape or x_shape[2:]
        names = names or ([f"D={x_shape[-1]}"] if x_shape[-1] % 2 else [str(table_shape), str(x_shape)])
        inputs = {"x": torch.randn(x_shape, generator=g), "cos": torch.ones(table_shape),
                  "sin": torch.zeros(table_shape), "names": [n.split("=")[-1] for n in names]}
        errors.append(Case(drive_rope_error, inputs, label=f"x {x_shape}, cos/sin {table_shape}"))
    x = torch.randn(2, 1, 3, 8, generator=g)
    for cos_shape, sin_shape in (((3, 8), (2, 3, 8)), ((2, 3, 8), (3, 8))):
        inputs = {"x": x, "cos": torch.ones(cos_shape), "sin": torch.zeros(sin_shape),
                  "names": [str(cos_shape), str(sin_shape), str(tuple(x.shape))]}
        errors.append(Case(drive_rope_error, inputs, label=f"x {tuple(x.shape)}, cos {cos_shape}, sin {sin_shape}"))
    return [layout, values, low,
            Part("test_apply_rope_inputs", unchanged, **rules("apply_rope")),
            Part("test_apply_rope_errors", errors, **rules("apply_rope"))]


def interleaved_parts(g):
    _, values, low = rope_parts(g, "apply_rope_interleaved", {"values": "test_interleaved_values",
                                                               "low": "test_interleaved_dtype_inputs"})
    return [values, low]


def convert_parts(g):
    rows = [Case(drive_convert, {"w_q": torch.arange(8.0)[:, None].expand(8, 3).clone(),
                                 "w_k": torch.arange(100.0, 108.0)[:, None].expand(8, 3).clone(),
                                 "n_heads": 1, "n_kv_heads": 1}, label="one head of D = 8 rows", atol=0.0, rtol=0.0)]
    for H, Hkv, D in [(4, 4, 8), (4, 2, 6), (6, 1, 16), (8, 2, 2), (3, 3, 2 * randint(g, 3, 12))]:
        C = randint(g, 3, 13)
        for dtype in (torch.float32, torch.bfloat16):
            inputs = {"w_q": torch.randn(H * D, C, generator=g).to(dtype), "w_k": torch.randn(Hkv * D, C, generator=g)
                      .to(dtype), "n_heads": H, "n_kv_heads": Hkv}
            rows.append(Case(drive_convert, inputs, label=f"n_heads={H}, n_kv_heads={Hkv}, D={D}, C={C}, {dtype}",
                             atol=0.0, rtol=0.0))
    for H, Hkv, D in [(8, 2, 2), (2, 1, 2 * randint(g, 2, 8))]:
        inputs = {"w_q": torch.randn(H * D, 3, generator=g), "w_k": torch.randn(Hkv * D, 3, generator=g),
                  "n_heads": H, "n_kv_heads": Hkv}
        rows.append(Case(drive_convert_own_memory, inputs,
                         label=f"n_heads={H}, n_kv_heads={Hkv}, D={D}: the converted weights zeroed in place"))
    scores = []
    for H, Hkv, D in [(2, 2, 8), (4, 2, 8), (6, 3, 6), (4, 1, 16), (8, 2, 2 * randint(g, 3, 9))]:
        C, T, B = 16, randint(g, 4, 10), 2
        positions = torch.arange(20, 20 + T) - torch.randint(0, 10, (B, 1), generator=g)  # (B, T)
        cos, sin = half_split_tables(positions, D)
        inputs = {"w_q": torch.randn(H * D, C, generator=g), "w_k": torch.randn(Hkv * D, C, generator=g),
                  "x": torch.randn(B, T, C, generator=g), "cos": cos, "sin": sin, "n_heads": H, "n_kv_heads": Hkv}
        scores.append(Case(drive_convert_scores, inputs, label=f"n_heads={H}, n_kv_heads={Hkv}, D={D}",
                           atol=1e-4, rtol=1e-4))
    errors = []
    for q_rows, k_rows, H, Hkv, named_rows, named_heads in [(12, 12, 5, 5, 12, 5), (12, 12, 4, 4, 12, 4),
                                                            (16, 12, 2, 5, 12, 5), (16, 6, 2, 2, 6, 2),
                                                            (16, 8, 0, 1, 16, 0), (16, 8, 2, 0, 8, 0)]:
        inputs = {"w_q": torch.randn(q_rows, 4, generator=g), "w_k": torch.randn(k_rows, 4, generator=g),
                  "n_heads": H, "n_kv_heads": Hkv, "names": [named_rows, named_heads]}
        errors.append(Case(drive_convert_error, inputs,
                           label=f"w_q ({q_rows}, 4), w_k ({k_rows}, 4), n_heads={H}, n_kv_heads={Hkv}"))
    return [Part("test_convert_rows", rows, **rules("convert_meta_qk")),
            Part("test_convert_scores", scores, **rules("convert_meta_qk")),
            Part("test_convert_errors", errors, **rules("convert_meta_qk"))]


def checker_parts(g):
    basic = [checker_case(g, 16, 64, ("half split", "sinusoids"), "visible")]
    for D in (8, 4 * randint(g, 3, 9)):  # D/2 even: the partial rotary turns half of the channels
        basic.append(checker_case(g, D, 64, BASIC, f"head_dim={D}"))
    P = randint(g, 3, 9)
    D = P + P % 2  # even, and room for P orthogonal vectors
    lengths = torch.randperm(P, generator=g) + 1.0  # orthogonal vectors of distinct lengths: only offset 0 varies
    middle = int((lengths == 2).nonzero())  # P >= 3: length 2 is neither the shortest nor the longest
    lengths[[0, middle]] = lengths[[middle, 0]]  # so measuring from the first entry gives a smaller spread
    for table, what in ((torch.eye(P, D) * lengths[:, None], "orthogonal vectors of distinct lengths"),
                        (torch.randn(P, D, generator=g), "random vectors")):
        basic.append(Case(drive_checker_value, {"table": table, "seed": randint(g, 0, 1000)}, atol=1e-9, rtol=1e-9,
                          label=f"a rotation that returns {what} at positions 0..{P - 1} whatever x is (head_dim={D})"))
    S, a = randint(g, 3, 9), randint(g, 0, 1000)
    seeds = (a, (a + randint(g, 1, 1000)) % 1000)
    basic.append(Case(drive_checker_seed, {"head_dim": 2 * randint(g, 2, 9), "max_position": S, "seeds": seeds},
                      label=f"q and k drawn from a torch.Generator seeded with seed (seeds {seeds[0]} and {seeds[1]})"))
    localised = [checker_case(g, 16, 64, ("short table",), "visible")]
    for D, P in ((8, 64), (4 * randint(g, 3, 9), randint(g, 40, 100))):
        localised.append(checker_case(g, D, P, LOCALISED, f"head_dim={D}"))
    return [Part("test_checker_basic", basic, **rules("relative_position_error")),
            Part("test_checker_localised", localised, **rules("relative_position_error"))]


def own_code_parts(g):
    x = torch.randn(1, 2, 3, 8, generator=g)
    cos, sin = half_split_tables(torch.arange(3), 8)
    inputs = {"x": x, "cos": cos, "sin": sin, "positions": torch.arange(3),
              "w_q": torch.randn(16, 4, generator=g), "w_k": torch.randn(8, 4, generator=g)}
    return [Part("test_own_code", [Case(drive_own_code, inputs, label="the package's rotary functions switched off",
                                        unchanged=False)],  # a call that changes its inputs costs other parts
                 forbidden_names=FORBIDDEN_NAMES,
                 answer_cells=("rope_cos_sin", "apply_rope", "apply_rope_interleaved", "convert_meta_qk",
                               "relative_position_error"))]


def parts(generator):
    return (cos_sin_parts(generator) + apply_rope_parts(generator) + interleaved_parts(generator)
            + convert_parts(generator) + checker_parts(generator) + own_code_parts(generator))
