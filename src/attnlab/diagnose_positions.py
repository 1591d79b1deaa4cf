"""Name the mistake behind a wrong rotary answer, for the graders' feedback (chapter 3).

Like :mod:`attnlab.diagnose` (chapters 1, 2, 4-7), each ``explain_*`` function
recomputes the answer under every classic mistake of the chapter and says which
one reproduces the learner's output; otherwise it describes the symptom (shape,
dtype, NaN, how far off and where). The candidate mistakes live here once, so
every notebook and test gives the same advice.

Shape legend: ``B`` batch, ``T`` positions, ``H`` heads, ``D`` head dimension.
"""

from collections.abc import Iterator

import torch
from torch import Tensor

from attnlab.positions import apply_rotary_interleaved, half_split_to_interleaved, interleaved_to_half_split
from attnlab.rotary import apply_rotary, rotary_cos_sin, rotate_half


def _close(got: Tensor, want: Tensor) -> bool:
    if got.shape != want.shape:
        return False
    atol = 1e-4 if want.dtype in (torch.float32, torch.float64) else 2e-2
    return torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-3)


def _same(got: Tensor, want: Tensor) -> bool:
    """Equal up to rounding: a mistake that gives this output on these inputs is no mistake here."""
    return got.shape == want.shape and torch.allclose(got.double(), want.double(), atol=1e-6, rtol=1e-6)


def _where_wrong(got: Tensor, want: Tensor, dims: tuple[str, ...]) -> str:
    """``largest error e at index (...)`` for two tensors of one shape."""
    error = (got.double() - want.double()).abs()
    index = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    named = ", ".join(f"{d}={i}" for d, i in zip(dims, index))
    return f"largest error {error.max().item():.3g} at {named}"


def _shape_dtype_problem(got: object, want: Tensor, what: str, exact_dtype: bool = True) -> str | None:
    """Type, shape, dtype (where the test is about it), then NaN/inf: the first that is wrong."""
    if not isinstance(got, Tensor):
        return f"{what} should be a tensor, got {type(got).__name__}"
    if tuple(got.shape) != tuple(want.shape):
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if exact_dtype and got.dtype != want.dtype:
        return f"{what} has dtype {got.dtype}, expected {want.dtype}"
    if not torch.isfinite(got).all():
        return f"{what} contains NaN or inf"
    return None


def _looks_like(matches: list[str], setting: str) -> str:
    """One sentence for the mistakes that reproduce a wrong answer (all of them if several coincide)."""
    unique = list(dict.fromkeys(matches))
    if len(unique) == 1:
        return f"Looks like {unique[0]} (for {setting})."
    return f"Looks like one of these (for {setting}, they give the same result here): " + "; or ".join(unique) + "."


# ------------------------------------------------------------ the cos / sin tables


def cos_sin_mistakes(position_ids: Tensor, head_dim: int, base: float = 10000.0,
                     dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Yield ``(description, cos, sin)`` for each classic mistake in building the tables.

    Shapes:
        position_ids: (T,) or (B, T)
        each cos, sin: (T, D) or (B, T, D)
    """
    pairs = torch.arange(0, head_dim, 2, dtype=torch.float32)  # (D/2,) = 2i

    def tables(inv_freq: Tensor, positions: Tensor = position_ids, layout: str = "half") -> tuple[Tensor, Tensor]:
        angles = positions[..., None].float() * inv_freq  # (*, T, D/2)
        if layout == "half":
            angles = torch.cat((angles, angles), dim=-1)  # (*, T, D): channel i and i + D/2
        else:
            angles = angles.repeat_interleave(2, dim=-1)  # (*, T, D): channel 2i and 2i + 1
        return angles.cos().to(dtype), angles.sin().to(dtype)

    right = 1.0 / float(base) ** (pairs / head_dim)
    yield ("your frequency exponent is i/D; it is 2i/D for pair i (torch.arange(0, D, 2) / D), so the "
           "frequencies fall too slowly", *tables(1.0 / float(base) ** (pairs / 2 / head_dim)))
    yield ("your frequencies are base^(2i/D); they are 1 / base^(2i/D) (the base belongs in the "
           "denominator), so the angles grow instead of shrinking", *tables(float(base) ** (pairs / head_dim)))
    if float(base) != 10000.0:
        yield ("you used base 10000 whatever the base argument says (Llama 3 uses 500000)",
               *tables(1.0 / 10000.0 ** (pairs / head_dim)))
    restarted = torch.arange(position_ids.shape[-1]).expand(position_ids.shape)
    if not torch.equal(restarted, position_ids):
        yield ("you used positions 0, 1, ..., T-1 instead of the values of position_ids: after a cache or "
               "with left padding the positions do not start at 0", *tables(right, restarted))
    yield ("your tables repeat each angle in place (repeat_interleave: channels 2i, 2i+1, the interleaved "
           "layout); the half-split layout repeats the whole block (torch.cat((angles, angles), -1))",
           *tables(right, layout="interleaved"))
    cos, sin = tables(right)
    yield "you swapped cos and sin", sin, cos
    if dtype != torch.float32:
        low = position_ids[..., None].to(dtype) * right.to(dtype)  # (*, T, D/2) in low precision
        low = torch.cat((low, low), dim=-1)
        yield (f"you computed the angles in {dtype}; compute them in float32 and cast cos and sin at the end "
               "(a position times a frequency loses digits in low precision)", low.cos(), low.sin())


def explain_cos_sin_mismatch(got: object, position_ids: Tensor, head_dim: int, base: float = 10000.0,
                             dtype: torch.dtype = torch.float32, exact_dtype: bool = True) -> str:
    """A sentence naming the mistake that reproduces the learner's ``(cos, sin)``.

    ``exact_dtype=False``: another dtype than ``dtype`` is not a mistake here (values only).

    Shapes:
        got: (cos, sin), each expected (T, D) or (B, T, D)
    """
    setting = f"position_ids {tuple(position_ids.shape)}, head_dim={head_dim}, base={base:g}, dtype={dtype}"
    if not isinstance(got, tuple) or len(got) != 2:
        return f"return the tuple (cos, sin), got {type(got).__name__} (for {setting})"
    want_cos, want_sin = rotary_cos_sin(position_ids, head_dim, base, dtype)
    for what, value, want in (("cos", got[0], want_cos), ("sin", got[1], want_sin)):
        problem = _shape_dtype_problem(value, want, what, exact_dtype)
        if problem:
            return f"{problem} (for {setting})."
    matches = [description for description, cos, sin in cos_sin_mistakes(position_ids, head_dim, base, dtype)
               if not (_same(cos, want_cos) and _same(sin, want_sin)) and _close(got[0], cos) and _close(got[1], sin)]
    if matches:
        return _looks_like(matches, setting)
    dims = ("t", "channel") if position_ids.dim() == 1 else ("b", "t", "channel")
    wrong = "cos" if not _close(got[0], want_cos) else "sin"
    value, want = (got[0], want_cos) if wrong == "cos" else (got[1], want_sin)
    return (f"{wrong} differs from cos/sin(position * base^(-2i/D)) in the half-split layout: "
            f"{_where_wrong(value, want, dims)} (for {setting}).")


# ------------------------------------------------------------ applying the rotation


def _rotate_every_two(x: Tensor) -> Tensor:
    pairs = x.unflatten(-1, (-1, 2))  # (*, D) -> (*, D/2, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # -> (*, D)


def _heads(table: Tensor) -> Tensor:
    return table[:, None] if table.dim() == 3 else table  # (B, T, D) -> (B, 1, T, D)


def rope_mistakes(x: Tensor, cos: Tensor, sin: Tensor) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(description, output)`` for each classic mistake of the half-split rotation.

    Shapes:
        x: (B, H, T, D); cos, sin: (T, D) or (B, T, D)
        each output: (B, H, T, D)
    """
    c, s = _heads(cos), _heads(sin)
    yield ("you rotated adjacent channels (2i, 2i+1), the interleaved pairing; the half split pairs "
           "channel i with channel i + D/2 (rotate_half)", x * c + _rotate_every_two(x) * s)
    yield ("you rotate the wrong way (the sign of the sin term is flipped): x * cos + rotate_half(x) * sin, "
           "with rotate_half(x) = cat(-x2, x1)", x * c - rotate_half(x) * s)
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)  # (x1, x2) -> (x2, x1), no minus sign
    yield "your rotate_half forgot the minus sign: it must return cat(-x2, x1), not cat(x2, x1)", x * c + swapped * s
    yield "you swapped cos and sin", x * s + rotate_half(x) * c
    yield "you did not rotate at all (the output is x)", x
    if cos.dim() == 3 and x.shape[0] == x.shape[1] > 1:  # B == H: (B, T, D) broadcasts silently as (H, T, D)
        yield ("your (B, T, D) tables broadcast against the heads axis, so head h got the angles of "
               "sequence h: insert a head axis (cos[:, None] is (B, 1, T, D))", x * cos + rotate_half(x) * sin)


def explain_rope_mismatch(got: object, x: Tensor, cos: Tensor, sin: Tensor, exact_dtype: bool = True) -> str:
    """A sentence naming the mistake that reproduces the learner's half-split rotation of ``x``.

    ``exact_dtype=False``: another dtype than ``x``'s is not a mistake here (values only).
    """
    return _explain_rotation(got, x, cos, sin, apply_rotary(x, cos, sin), rope_mistakes(x, cos, sin),
                             "x * cos + rotate_half(x) * sin", exact_dtype)


def _explain_rotation(got, x, cos, sin, want, mistakes, right, exact_dtype) -> str:
    """The shared sentence of the two rotation diagnoses: shape/dtype, then the named mistakes, else where.

    Shapes:
        x, want: (B, H, T, D); cos, sin: the half-split tables; ``mistakes`` yields (description, output)
    """
    setting = f"x {tuple(x.shape)}, cos/sin {tuple(cos.shape)}"
    problem = _shape_dtype_problem(got, want, "the output", exact_dtype)
    if problem:
        return f"{problem} (for {setting})."
    matches = [d for d, wrong in mistakes if not _same(wrong, want) and _close(got, wrong)]
    if matches:
        return _looks_like(matches, setting)
    return f"the output differs from {right}: {_where_wrong(got, want, ('b', 'h', 't', 'channel'))} (for {setting})."


def interleaved_mistakes(x: Tensor, cos: Tensor, sin: Tensor) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(description, output)`` for each classic mistake of the interleaved rotation.

    Shapes:
        x: (B, H, T, D); cos, sin: (T, D) or (B, T, D), the half-split tables
        each output: (B, H, T, D)
    """
    yield ("you used the half-split pairing (channel i with i + D/2, rotate_half); the interleaved pairing "
           "rotates channels (2i, 2i+1) together", apply_rotary(x, cos, sin))
    c, s = _heads(cos), _heads(sin)
    yield ("you used the half-split table as it is: channel c got the angle at cos[..., c]; in the "
           "interleaved pairing both channels 2i and 2i+1 use angle i (cos[..., i], i < D/2)",
           x * c + _rotate_every_two(x) * s)
    half = cos.shape[-1] // 2
    c2 = _heads(cos[..., :half].repeat_interleave(2, dim=-1))  # (.., T, D): angle i at channels 2i, 2i+1
    s2 = _heads(sin[..., :half].repeat_interleave(2, dim=-1))
    yield "you rotate the wrong way (the sign of the sin term is flipped)", x * c2 - _rotate_every_two(x) * s2
    yield "you did not rotate at all (the output is x)", x


def explain_interleaved_mismatch(got: object, x: Tensor, cos: Tensor, sin: Tensor, exact_dtype: bool = True) -> str:
    """A sentence naming the mistake that reproduces the learner's interleaved rotation of ``x``.

    ``exact_dtype=False``: another dtype than ``x``'s is not a mistake here (values only).
    """
    return _explain_rotation(got, x, cos, sin, apply_rotary_interleaved(x, cos, sin), interleaved_mistakes(x, cos, sin),
                             "rotating each pair (2i, 2i+1) by angle i", exact_dtype)


# ------------------------------------------------------------ porting a checkpoint


def qk_conversion_mistakes(w_q: Tensor, w_k: Tensor, n_heads: int,
                           n_kv_heads: int) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Yield ``(description, q weight, k weight)`` for each classic mistake of the Meta-to-HF conversion.

    Shapes:
        w_q: (H * D, C); w_k: (Hkv * D, C)
    """
    q, k = interleaved_to_half_split(w_q, n_heads), interleaved_to_half_split(w_k, n_kv_heads)
    yield ("you permuted the query weight only: the key weight needs the same permutation (scores pair "
           "query and key channels), or every score is wrong beyond position 0", q, w_k)
    yield "you permuted the key weight only: the query weight needs the same permutation", w_q, k
    yield ("you permuted nothing: the half-split rotation then pairs the wrong channels of the "
           "interleaved checkpoint", w_q, w_k)
    back_q, back_k = half_split_to_interleaved(w_q, n_heads), half_split_to_interleaved(w_k, n_kv_heads)
    if not (torch.equal(back_q, q) and torch.equal(back_k, k)):
        yield ("you permuted in the wrong direction (half-split to interleaved, the inverse): row 2i of "
               "each head goes to row i, row 2i+1 to row i + D/2", back_q, back_k)
    if n_kv_heads != n_heads and w_k.shape[0] % n_heads == 0 and (w_k.shape[0] // n_heads) % 2 == 0:
        yield (f"you permuted the key weight with n_heads={n_heads} heads; it has n_kv_heads={n_kv_heads} "
               "(grouped-query attention): permute inside each of its own heads",
               q, interleaved_to_half_split(w_k, n_heads))
    if n_heads > 1:
        yield ("you permuted all the rows as one head: the permutation works inside each head of D rows",
               interleaved_to_half_split(w_q, 1), interleaved_to_half_split(w_k, 1))


def explain_qk_conversion_mismatch(got: object, w_q: Tensor, w_k: Tensor, n_heads: int, n_kv_heads: int) -> str:
    """A sentence naming the mistake that reproduces the learner's converted ``(w_q, w_k)``."""
    setting = f"w_q {tuple(w_q.shape)}, w_k {tuple(w_k.shape)}, n_heads={n_heads}, n_kv_heads={n_kv_heads}"
    if not isinstance(got, tuple) or len(got) != 2:
        return f"return the tuple (w_q, w_k), got {type(got).__name__} (for {setting})"
    want_q, want_k = interleaved_to_half_split(w_q, n_heads), interleaved_to_half_split(w_k, n_kv_heads)
    for what, value, want in (("w_q", got[0], want_q), ("w_k", got[1], want_k)):
        problem = _shape_dtype_problem(value, want, f"the converted {what}")
        if problem:
            return f"{problem} (for {setting})."
    matches = [description for description, q, k in qk_conversion_mistakes(w_q, w_k, n_heads, n_kv_heads)
               if torch.equal(got[0], q) and torch.equal(got[1], k)]
    if matches:
        return _looks_like(matches, setting)
    wrong = "w_q" if not torch.equal(got[0], want_q) else "w_k"
    return (f"the converted {wrong} is not the interleaved-to-half-split permutation of its rows "
            f"(row 2i of each head to row i, row 2i+1 to row i + D/2) (for {setting}).")
