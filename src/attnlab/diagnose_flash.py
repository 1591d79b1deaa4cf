"""Name the classic mistakes of chapter 8 (online softmax, tiled attention, split-K merge).

The graders' hidden tests know the right answer; when a learner's result
differs, these functions replay the computation with each classic mistake and
say which one reproduces it. Expected values come from PyTorch
(``F.scaled_dot_product_attention``, ``torch.logsumexp``); the replays run in
float64 so that a match means the same mistake, not rounding.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

import attnlab.flash
from attnlab.masks import causal_mask

NAN_FROM_EMPTY_BLOCK = (
    "NaN in rows that do have allowed keys: in a block where all of a row's scores are -inf (masked), "
    "the running maximum is still -inf and exp(score - max) computes -inf - -inf = NaN. "
    "While the maximum is -inf, subtract 0 (or any finite number) instead"
)
NAN_FROM_REUSED_BUFFER = (
    "m is NaN although no logit is NaN: the blocks stream through one reused buffer, so a block you kept "
    "(list(blocks), or a reference saved for later) is overwritten once the next one is read. Read each block "
    "once, as it comes, and keep only m and l"
)
NAN_FROM_OVERFLOW = (
    "NaN in rows that have no fully masked block, so it is not -inf - -inf: look for inf - inf, inf / inf or "
    "0 * inf, e.g. exp() of a score that was not shifted by the running maximum (the largest {what} here is "
    "{largest:.4g}), or exp(m_new - m_old) while m_old is still -inf"
)
NAN_IN_EMPTY_ROWS = (
    "NaN in fully masked rows (queries with no allowed key). Two steps give NaN there: exp(score - m) while their "
    "running maximum m is still -inf (-inf - -inf = NaN: subtract a finite number instead), and acc / l with "
    "their denominator l = 0 (0 / 0 = NaN: divide by l.clamp_min(tiny)). Return a zero output for them and "
    "lse = -inf"
)
NAN_FROM_MASKED_LOGITS = (
    "NaN in rows with a block of all -inf logits (a masked block): while the running maximum is still -inf, "
    "exp(x - max) computes -inf - -inf = NaN. While the maximum is -inf, subtract 0 (or any finite number) instead"
)

STATS_MISTAKES = {
    "no_rescale": "you did not rescale the running denominator when the maximum grew: "
    "l = l * exp(m_old - m_new) + sum(exp(block - m_new))",
    "inverted_rescale": "you rescaled by exp(m_new - m_old); the old terms must shrink when the maximum grows: "
    "multiply by exp(m_old - m_new) <= 1",
    "block_max": "your maximum is the last block's, not the running maximum over all blocks: "
    "m_new = max(m_old, max(block))",
    "no_shift": "you summed exp(block) without subtracting the maximum: it overflows on large logits",
}

TILED_MISTAKES = {
    "no_rescale": "you did not rescale the running sums when the maximum grew: multiply both the denominator l "
    "and the output accumulator acc by exp(m_old - m_new) before adding the new block",
    "denominator_only": "you rescaled the denominator but not the output accumulator when the maximum grew: "
    "acc = acc * exp(m_old - m_new) + p @ v_block",
    "output_only": "you rescaled the output accumulator but not the denominator when the maximum grew: "
    "l = l * exp(m_old - m_new) + p.sum(-1)",
    "top_left": "your causal mask is aligned to the top-left (like is_causal=True); with T != S the queries are "
    "the last T of the S positions: query i sits at position S - T + i and sees keys j <= S - T + i",
    "skip_by_block_index": "your causal loop picks key blocks by block index (key block j <= query block i), "
    "which is right only when T == S and block_q == block_k: a query block ending before query q1 "
    "needs every key < S - T + q1",
    "skip_floor": "your causal loop stops one key block too early when the diagonal does not fall on a block "
    "boundary (T != S): a query block ending before query q1 needs every key < S - T + q1 "
    "(round the number of key blocks up, not down)",
    "no_causal": "the causal mask is missing: with is_causal=True query i must not see keys after position S - T + i",
    "ragged_k": "the last key block is dropped when block_k does not divide S: loop over range(0, S, block_k) "
    "and cut the last block short with min(k0 + block_k, S)",
    "ragged_q": "the last query block is dropped when block_q does not divide T: loop over range(0, T, block_q) "
    "and cut the last block short with min(q0 + block_q, T)",
    "mask_ignored": "your attn_mask has no effect: fill the masked scores of each block with -inf",
    "mask_inverted": "your attn_mask is inverted: True means 'may attend' (PyTorch's convention)",
    "no_scale": "you did not scale the scores: multiply q k^T by 1/sqrt(D)",
    "scale_by_D": "you divided the scores by D instead of sqrt(D)",
}

MERGE_MISTAKES = {
    "average": "you averaged the partial outputs: weight partial i by exp(lse_i - lse), its share of the total "
    "softmax denominator, where lse = log(sum_i exp(lse_i))",
    "unnormalised": "your weights exp(lse_i - max_j lse_j) do not sum to 1: use exp(lse_i - lse) with the merged lse",
    "lse_max": "your merged lse is the largest lse_i; it must be log(sum_i exp(lse_i)) (torch.logsumexp over the "
    "partials)",
    "lse_sum": "your merged lse is the sum of the lse_i; it must be log(sum_i exp(lse_i)) (torch.logsumexp over "
    "the partials)",
}
MERGE_WITHOUT_MAXIMA = (
    "merging partial results without their maxima: exp(lse_i) overflows when the scores are large "
    "(here lse_i reaches {lse:.0f}); subtract the merged lse (or the largest lse_i) inside the exp: "
    "weights exp(lse_i - lse)"
)


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return type(x).__name__


def _close(a: Tensor, b: Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=atol, equal_nan=True))


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float16: 5e-3, torch.bfloat16: 4e-2, torch.float32: 1e-4}.get(dtype, 1e-8)


def _looks_like(matches: list[str], where: str) -> str:
    """Name the mistake whose replay gave the learner's result; if several do, name them all, not one."""
    if len(matches) == 1:
        return f"Looks like {matches[0]} {where}"
    return ("Looks like one of these mistakes, which give the same result on these inputs: "
            + "; or ".join(matches) + f" {where}")


# ---------------------------------------------------------------- online softmax


def stats_with_mistake(blocks: list[Tensor], mistake: str | None = None) -> tuple[Tensor, Tensor]:
    """The online softmax's running ``(m, l)`` over ``blocks``, with one mistake of
    :data:`STATS_MISTAKES` (None: none), in float32 or wider like the real thing (so an
    overflow shows as it would).

    Shapes:
        blocks: list of (*, b); returns: m (*, 1), l (*, 1)
    """
    work = torch.promote_types(blocks[0].dtype, torch.float32)
    m = torch.full((*blocks[0].shape[:-1], 1), float("-inf"), dtype=work)
    l = torch.zeros_like(m)
    for block in blocks:
        block = block.to(work)
        block_max = block.amax(dim=-1, keepdim=True)
        m_new = block_max if mistake == "block_max" else torch.maximum(m, block_max)
        shift = m_new.clamp_min(torch.finfo(work).min)
        if mistake == "no_shift":
            l, m = l + torch.exp(block).sum(dim=-1, keepdim=True), m_new
            continue
        if mistake == "no_rescale":
            rescale = torch.ones_like(m)
        elif mistake == "inverted_rescale":  # the first block has nothing to rescale
            rescale = torch.exp(m_new - m).masked_fill(l == 0, 0.0)
        else:
            rescale = torch.exp(m - shift)
        l = l * rescale + torch.exp(block - shift).sum(dim=-1, keepdim=True)
        m = m_new
    return m, l


def explain_stats_mismatch(got: object, blocks: list[Tensor], atol: float | None = None) -> str:
    """Why ``got`` is not ``(m, l)`` of the logits cut into ``blocks``, as a sentence.

    ``atol`` is the tolerance the caller's test used (default: one per dtype).

    Shapes:
        blocks: list of (*, b); got should be m (*, 1), l (*, 1)
    """
    x = torch.cat(blocks, dim=-1)  # (*, N)
    sizes = [b.shape[-1] for b in blocks]
    where = f"(logits of shape {tuple(x.shape)}, {x.dtype}, in blocks of {sizes})"
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, Tensor) for t in got)):
        return f"online_softmax_stats must return a tuple (m, l) of two tensors, got {_describe(got)} {where}"
    m, l = got
    want_shape = (*x.shape[:-1], 1)
    if tuple(m.shape) != want_shape or tuple(l.shape) != want_shape:
        return f"m and l must have shape {want_shape} (keepdim), got {tuple(m.shape)} and {tuple(l.shape)} {where}"
    want_dtype = torch.promote_types(x.dtype, torch.float32)
    if m.dtype != want_dtype or l.dtype != want_dtype:
        return f"m and l must be {want_dtype} (accumulate in float32 or wider), got {m.dtype} and {l.dtype} {where}"
    if torch.isnan(m).any() or torch.isnan(l).any():
        return f"NaN in m or l: {_why_nan(m, l, blocks)} {where}"
    true_m = x.double().amax(dim=-1, keepdim=True)
    true_l = torch.exp(x.double() - true_m.clamp_min(torch.finfo(torch.float64).min)).sum(dim=-1, keepdim=True)
    atol = _tolerance(x.dtype) if atol is None else atol
    if _close(m, true_m, atol) and _close(l, true_l, atol):
        return f"m and l are right {where}"
    matches = [description for mistake, description in STATS_MISTAKES.items()
               if all(_close(a, b, atol) for a, b in zip((m, l), stats_with_mistake(blocks, mistake)))]
    if matches:
        return _looks_like(matches, where)
    if torch.isinf(l).any() and torch.isfinite(true_l).all():
        return f"l overflowed to inf: {STATS_MISTAKES['no_shift']} {where}"
    if not _close(m, true_m, atol):
        return f"m must be each row's maximum over all blocks (x.amax(-1, keepdim=True)) {where}"
    return f"l must be sum_j exp(x_j - m) with the final m (largest error {(l - true_l).abs().max():.3g}) {where}"


def _empty_block_rows(blocks: list[Tensor]) -> Tensor:
    """Rows that have at least one block of all -inf. Shapes: blocks (*, b) -> (*,)."""
    return torch.stack([(b == float("-inf")).all(dim=-1) for b in blocks]).any(dim=0)


def _why_nan(m: Tensor, l: Tensor, blocks: list[Tensor]) -> str:
    """Which mistake the NaN in m or l points to, from where it is. Shapes: m, l (*, 1); blocks (*, b)."""
    x = torch.cat(blocks, dim=-1)  # (*, N)
    if torch.isnan(m).any() and not torch.isnan(x).any():
        return NAN_FROM_REUSED_BUFFER
    nan_rows = (torch.isnan(m) | torch.isnan(l)).squeeze(-1)  # (*,)
    if not (nan_rows & ~_empty_block_rows(blocks)).any():
        return NAN_FROM_MASKED_LOGITS
    finite = x[torch.isfinite(x)]
    return NAN_FROM_OVERFLOW.format(what="logit", largest=finite.abs().max().item() if finite.numel() else 0.0)


def explain_online_softmax_mismatch(got: object, x: Tensor, block_size: int, atol: float | None = None) -> str:
    """Why ``got`` is not ``softmax(x, dim=-1)`` computed in blocks of ``block_size``, as a sentence.

    ``atol`` is the tolerance the caller's test used (default: one per dtype).

    Shapes:
        x: (*, N); got should be (*, N) with x's dtype
    """
    where = f"(x of shape {tuple(x.shape)}, {x.dtype}, block_size={block_size})"
    if not isinstance(got, Tensor):
        return f"online_softmax must return a tensor, got {_describe(got)} {where}"
    if got.shape != x.shape or got.dtype != x.dtype:
        return f"expected shape {tuple(x.shape)} and dtype {x.dtype}, got {tuple(got.shape)}, {got.dtype} {where}"
    empty = (x == float("-inf")).all(dim=-1)
    if torch.isnan(got).any():
        if torch.isnan(got[empty]).any():
            return (f"NaN in rows that are all -inf: give them zeros. There m = -inf and l = 0, so exp(x - m) is "
                    f"exp(-inf - -inf) and p / l is 0 / 0, both NaN: shift by a finite number, divide by "
                    f"l.clamp_min(tiny) {where}")
        blocks = list(x.split(block_size, dim=-1))
        if not (torch.isnan(got).any(dim=-1) & ~empty & ~_empty_block_rows(blocks)).any():
            return f"{NAN_FROM_MASKED_LOGITS} {where}"
        finite = x[torch.isfinite(x)]
        return f"NaN: {NAN_FROM_OVERFLOW.format(what='logit', largest=finite.abs().max().item())} {where}"
    want = torch.softmax(x.double(), dim=-1).nan_to_num(nan=0.0)
    atol = _tolerance(x.dtype) if atol is None else atol
    if _close(got, want, atol):
        return f"online_softmax is right {where}"
    per_block = torch.cat([torch.softmax(b.double(), dim=-1) for b in x.split(block_size, dim=-1)], dim=-1)
    matches = ["you normalised each block on its own: every row must sum to 1 over all its blocks"] \
        if _close(got, per_block, atol) else []
    for mistake, description in STATS_MISTAKES.items():
        m, l = stats_with_mistake(list(x.split(block_size, dim=-1)), mistake)
        if _close(got, torch.exp(x.double() - m.double().clamp_min(-1e308)) / l.double(), atol):
            matches.append(description)
    if matches:
        return _looks_like(matches, where)
    return f"differs from torch.softmax(x, dim=-1) by up to {(got.double() - want).abs().max():.3g} {where}"


# ---------------------------------------------------------------- tiled attention


def tiled_with_mistake(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_q: int,
    block_k: int,
    is_causal: bool = False,
    attn_mask: Tensor | None = None,
    mistake: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Tiled attention in float64 with one classic mistake (None: none).

    ``mistake`` is a key of :data:`TILED_MISTAKES`, or ``"nan_from_empty_block"``
    (subtracting a running maximum of -inf) or ``"nan_in_empty_rows"`` (dividing
    by a zero denominator).

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
        returns: output (*, T, Dv), lse (*, T), float64
    """
    q, k, v = q.double(), k.double(), v.double()
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = {"no_scale": 1.0, "scale_by_D": 1.0 / D}.get(mistake, 1.0 / math.sqrt(D))
    offset = 0 if mistake == "top_left" else S - T
    causal = is_causal and mistake != "no_causal"
    if attn_mask is not None and mistake != "mask_ignored":
        attn_mask = attn_mask.expand(*q.shape[:-1], S)  # (*, T, S), a view
        attn_mask = ~attn_mask if mistake == "mask_inverted" else attn_mask
    else:
        attn_mask = None
    outputs, lses = [], []
    q_stop = T - T % block_q if mistake == "ragged_q" else T
    for index, q0 in enumerate(range(0, q_stop, block_q)):
        q1 = min(q0 + block_q, T)
        m = torch.full((*q.shape[:-2], q1 - q0, 1), float("-inf"), dtype=torch.float64)  # (*, bq, 1)
        l = torch.zeros_like(m)
        acc = torch.zeros((*q.shape[:-2], q1 - q0, v.shape[-1]), dtype=torch.float64)  # (*, bq, Dv)
        k_stop = S - S % block_k if mistake == "ragged_k" else S
        if causal:
            k_stop = min(k_stop, offset + q1)
            if mistake == "skip_by_block_index":
                k_stop = min(S, (index + 1) * block_k)
            elif mistake == "skip_floor":
                k_stop = (offset + q1) // block_k * block_k
        for k0 in range(0, k_stop, block_k):
            k1 = min(k0 + block_k, S)
            scores = (q[..., q0:q1, :] @ k[..., k0:k1, :].transpose(-2, -1)) * scale  # (*, bq, bk)
            if causal:
                key_pos, query_pos = torch.arange(k0, k1), torch.arange(offset + q0, offset + q1)
                scores = scores.masked_fill(key_pos > query_pos[:, None], float("-inf"))
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask[..., q0:q1, k0:k1], float("-inf"))
            m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
            shift = m_new if mistake == "nan_from_empty_block" else m_new.clamp_min(torch.finfo(torch.float64).min)
            rescale, p = torch.exp(m - shift), torch.exp(scores - shift)
            rescale_l = 1.0 if mistake in ("no_rescale", "output_only") else rescale
            rescale_acc = 1.0 if mistake in ("no_rescale", "denominator_only") else rescale
            l = l * rescale_l + p.sum(dim=-1, keepdim=True)
            acc = acc * rescale_acc + p @ v[..., k0:k1, :]
            m = m_new
        outputs.append(acc / (l if mistake == "nan_in_empty_rows" else l.clamp_min(torch.finfo(torch.float64).tiny)))
        lses.append((m + torch.log(l)).squeeze(-1))
    if q_stop < T:  # the dropped rows, as a preallocated output would leave them
        outputs.append(torch.zeros((*q.shape[:-2], T - q_stop, v.shape[-1]), dtype=torch.float64))
        lses.append(torch.full((*q.shape[:-2], T - q_stop), float("-inf"), dtype=torch.float64))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _allowed(q: Tensor, k: Tensor, is_causal: bool, attn_mask: Tensor | None) -> Tensor:
    """The full (*, T, S) boolean mask: the course's offset-aware causal mask and ``attn_mask``.

    Shapes: -> (*, T, S)
    """
    T, S = q.shape[-2], k.shape[-2]
    allowed = torch.ones(*q.shape[:-2], T, S, dtype=torch.bool)
    if is_causal:
        allowed = allowed & causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    return allowed


def explain_tiled_mismatch(
    got: object,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_q: int,
    block_k: int,
    is_causal: bool = False,
    attn_mask: Tensor | None = None,
    atol: float | None = None,
) -> str:
    """Why ``got`` is not ``(output, lse)`` of tiled attention on these inputs, as a sentence.

    ``atol`` is the tolerance the caller's test used (default: one per dtype).

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
        got should be: output (*, T, Dv) in q's dtype, lse (*, T) in float32 or wider
    """
    T, S = q.shape[-2], k.shape[-2]
    where = (f"(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, {q.dtype}, block_q={block_q}, "
             f"block_k={block_k}, is_causal={is_causal}"
             + (f", attn_mask {tuple(attn_mask.shape)})" if attn_mask is not None else ")"))
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, Tensor) for t in got)):
        return f"tiled_attention must return a tuple (output, lse) of two tensors, got {_describe(got)} {where}"
    out, lse = got
    want_out, want_lse = (*q.shape[:-1], v.shape[-1]), tuple(q.shape[:-1])
    if tuple(out.shape) != want_out:
        if out.dim() == len(want_out) and out.shape[-2] == T - T % block_q:
            return f"output has {out.shape[-2]} rows, not T={T}: {TILED_MISTAKES['ragged_q']} {where}"
        return f"output must have shape {want_out}, got {tuple(out.shape)} {where}"
    if tuple(lse.shape) != want_lse:
        return f"lse must have shape {want_lse} (one number per query), got {tuple(lse.shape)} {where}"
    if out.dtype != q.dtype:
        return f"the output must have the inputs' dtype {q.dtype}, got {out.dtype} {where}"
    want_lse_dtype = torch.promote_types(q.dtype, torch.float32)
    if lse.dtype != want_lse_dtype:
        return f"lse must be {want_lse_dtype} (accumulate in float32 or wider), got {lse.dtype} {where}"
    allowed = _allowed(q, k, is_causal, attn_mask)
    empty = ~allowed.any(dim=-1)  # (*, T)
    nan_rows = torch.isnan(out).any(dim=-1)  # (*, T)
    if (nan_rows & ~empty).any():
        # (*, T, S) -> one (*, T) per key block of block_k keys: True where the block has no allowed key
        empty_blocks = torch.stack([~a.any(dim=-1) for a in allowed.split(block_k, dim=-1)]).any(dim=0)
        if not (nan_rows & ~empty & ~empty_blocks).any():
            return f"{NAN_FROM_EMPTY_BLOCK} {where}"
        scores = (q.double() @ k.double().transpose(-2, -1)).abs().max().item() / math.sqrt(q.shape[-1])
        return f"{NAN_FROM_OVERFLOW.format(what='score', largest=scores)} {where}"
    if nan_rows.any():
        return f"{NAN_IN_EMPTY_ROWS} {where}"
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=allowed)
    expected = expected.masked_fill(empty[..., None], 0.0)
    atol = _tolerance(q.dtype) if atol is None else atol
    if _close(out, expected, atol):
        scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
        true_lse = scores.masked_fill(~allowed, float("-inf")).logsumexp(dim=-1)
        if not (lse[empty] == float("-inf")).all():
            return f"lse must be -inf for fully masked rows (log of a zero denominator) {where}"
        if _close(lse.masked_fill(empty, 0.0), true_lse.masked_fill(empty, 0.0), atol):
            return f"output and lse are right {where}"
        return (f"the output is right but lse is not: it is m + log(l), the log-sum-exp of each row's allowed "
                f"scores (largest error {(lse.double() - true_lse).abs().masked_fill(empty, 0).max():.3g}) {where}")
    matches = []
    for mistake, description in TILED_MISTAKES.items():
        wrong, _ = tiled_with_mistake(q, k, v, block_q, block_k, is_causal, attn_mask, mistake)
        if not _close(wrong, expected, atol) and _close(out, wrong, atol):
            matches.append(description)
    if matches:
        return _looks_like(matches, where)
    if empty.any() and _close(out[~empty], expected[~empty], atol):
        return (f"only the queries with no allowed key are wrong ({int(empty.sum())} of them): they must get a zero "
                f"output, yours reach {out[empty].double().abs().max():.3g} (a mask filled with a large finite "
                f"number instead of -inf gives them an average of v) {where}")
    error = (out.double() - expected).abs().max()
    return f"output differs from F.scaled_dot_product_attention by up to {error:.3g} {where}"


# ---------------------------------------------------------------- merging partial results


def merge_with_mistake(outputs: list[Tensor], lses: list[Tensor], mistake: str | None = None) -> tuple[Tensor, Tensor]:
    """Merge partial attention results with one classic mistake, in the partials' own dtype
    (so that an overflow shows as it would): a key of :data:`MERGE_MISTAKES`,
    ``"no_max"`` (weights ``exp(lse_i) / sum_j exp(lse_j)``) or ``"nan_all_empty"``
    (``exp(lse_i - lse)`` with ``lse = -inf``). None: no mistake.

    Shapes:
        outputs: n tensors (*, T, Dv); lses: n tensors (*, T)
        returns: output (*, T, Dv), lse (*, T)
    """
    o, lse_i = torch.stack(outputs), torch.stack(lses)  # (n, *, T, Dv), (n, *, T)
    lse = torch.logsumexp(lse_i, dim=0)  # (*, T)
    weights = torch.exp(lse_i - lse.clamp_min(torch.finfo(lse.dtype).min))  # (n, *, T)
    if mistake == "no_max":
        weights = torch.exp(lse_i) / torch.exp(lse_i).sum(dim=0)
    elif mistake == "nan_all_empty":
        weights = torch.exp(lse_i - lse)
    elif mistake == "average":
        weights = torch.full_like(lse_i, 1.0 / len(outputs))
    elif mistake == "unnormalised":
        weights = torch.exp(lse_i - lse_i.amax(dim=0).clamp_min(torch.finfo(lse.dtype).min))
    lse = {"lse_max": lse_i.amax(dim=0), "lse_sum": lse_i.sum(dim=0)}.get(mistake, lse)
    return (weights[..., None] * o).sum(dim=0), lse  # (*, T, Dv), (*, T)


def explain_merge_mismatch(got: object, outputs: list[Tensor], lses: list[Tensor], atol: float | None = None) -> str:
    """Why ``got`` is not the merge of the partial results ``(outputs, lses)``, as a sentence.

    ``atol`` is the tolerance the caller's test used (default: one per dtype).

    Shapes:
        outputs: n tensors (*, T, Dv); lses: n tensors (*, T)
        got should be: output (*, T, Dv) in the outputs' dtype, lse (*, T)
    """
    where = f"({len(outputs)} partials, outputs {tuple(outputs[0].shape)} {outputs[0].dtype})"
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, Tensor) for t in got)):
        return f"merge_partials must return a tuple (output, lse) of two tensors, got {_describe(got)} {where}"
    out, lse = got
    if out.shape != outputs[0].shape or lse.shape != lses[0].shape:
        return (f"expected output {tuple(outputs[0].shape)} and lse {tuple(lses[0].shape)}, got {tuple(out.shape)} "
                f"and {tuple(lse.shape)} {where}")
    if out.dtype != outputs[0].dtype:
        return f"the merged output must keep the partials' dtype {outputs[0].dtype}, got {out.dtype} {where}"
    o = torch.stack([x.double() for x in outputs])  # (n, *, T, Dv)
    lse_i = torch.stack([x.double() for x in lses])  # (n, *, T)
    true_lse = torch.logsumexp(lse_i, dim=0)  # (*, T)
    empty = true_lse == float("-inf")
    weights = torch.exp(lse_i - true_lse.clamp_min(torch.finfo(torch.float64).min))  # (n, *, T)
    expected = (weights[..., None] * o).sum(dim=0)
    if not torch.isfinite(out).all():
        bad = ~torch.isfinite(out).all(dim=-1)
        largest = lse_i[torch.isfinite(lse_i)].max()
        narrowest = min(torch.finfo(outputs[0].dtype).max, torch.finfo(lses[0].dtype).max)
        if (bad & ~empty).any() and largest > math.log(narrowest):
            return "Looks like you are " + MERGE_WITHOUT_MAXIMA.format(lse=largest) + f" {where}"
        if (bad & ~empty).any():
            return (f"NaN or inf in rows where some partial has allowed keys (the lse_i reach only {largest:.3g}, "
                    f"so exp() did not overflow): look for -inf - -inf or 0 * inf in the weights {where}")
        return (f"NaN in rows where every partial is empty (all lse_i = -inf): exp(-inf - -inf) = NaN; "
                f"give them output 0 and lse -inf {where}")
    atol = _tolerance(outputs[0].dtype) if atol is None else atol
    out_ok = _close(out, expected, atol)
    lse_ok = _close(lse, true_lse, atol)
    if out_ok and lse_ok:
        return f"merge is right {where}"
    matches = []
    for mistake, description in MERGE_MISTAKES.items():
        wrong_out, wrong_lse = merge_with_mistake([x.double() for x in outputs], [x.double() for x in lses], mistake)
        if _close(out, wrong_out, atol) and _close(lse, wrong_lse, atol):
            matches.append(description)
    if matches:
        return _looks_like(matches, where)
    if out_ok:
        return f"the output is right but lse is not: it is log(sum_i exp(lse_i)) {where}"
    return f"the merged output differs by up to {(out.double() - expected).abs().max():.3g} {where}"


# ---------------------------------------------------------------- "do not call" rules

FORBIDDEN_TORCH = [
    (torch, "softmax"),
    (torch.special, "softmax"),
    (torch.Tensor, "softmax"),
    (F, "softmax"),
    (F, "scaled_dot_product_attention"),
]
FORBIDDEN_ATTNLAB = [
    attnlab.flash.online_softmax,
    attnlab.flash.online_softmax_stats,
    attnlab.flash.tiled_attention,
    attnlab.flash.merge_partials,
    attnlab.flash.split_k_attention,
    attnlab.flash.attention_partial,
]


@contextlib.contextmanager
def library_attention_forbidden():
    """Within this block, torch's softmax and attention and attnlab.flash raise ``AssertionError``.

    The torch functions are replaced on their modules (so ``torch.softmax``,
    ``x.softmax``, ``F.softmax``, ``nn.Softmax`` and
    ``F.scaled_dot_product_attention`` are all caught) and the attnlab functions
    have their code swapped, so that any alias a learner imported is caught too.
    Everything is restored on exit.
    """
    def refuse(name):
        def refused(*args, **kwargs):
            raise AssertionError(f"your answer calls {name}: the task asks you to compute it yourself")
        return refused

    missing = object()
    saved_torch = [(owner, name, owner.__dict__.get(name, missing)) for owner, name in FORBIDDEN_TORCH]
    saved_code = [(fn, fn.__code__) for fn in FORBIDDEN_ATTNLAB]
    try:
        for owner, name in FORBIDDEN_TORCH:
            label = "torch.Tensor.softmax" if owner is torch.Tensor else f"{owner.__name__}.{name}"
            setattr(owner, name, refuse(label))
        for fn in FORBIDDEN_ATTNLAB:
            fn.__code__ = _refusing_code(fn.__name__)
        yield
    finally:
        for owner, name, value in saved_torch:
            if value is missing:  # inherited (torch.Tensor.softmax comes from the C base class)
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        for fn, code in saved_code:
            fn.__code__ = code


def _refusing_code(name: str):
    """The code of a function that takes anything and raises naming attnlab.flash.<name>.

    It has no free variables and uses only builtins, so it can replace the code of
    any module-level function (whose globals are its own module's).
    """
    message = f"your answer calls attnlab.flash.{name}: the task asks you to write it yourself"
    namespace = {}
    exec(f"def refused(*args, **kwargs):\n    raise AssertionError({message!r})\n", {}, namespace)
    return namespace["refused"].__code__
