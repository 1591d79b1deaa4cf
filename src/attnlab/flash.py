"""FlashAttention's ideas in plain PyTorch (chapter 8): the online softmax, tiled
attention and split-K decoding (flash-decoding).

Shape legend: ``T`` query positions, ``S`` key/value positions, ``D`` head
dimension, ``Dv`` value dimension; ``*`` any leading dims (``B``, ``H``, ...),
equal for ``q``, ``k`` and ``v``.

Nothing here is fast: the loops run in Python, one block at a time. They are the
reference for what a fused kernel computes, block by block, and they keep its
memory bound: no function here ever holds a ``(T, S)`` matrix of scores.

Conventions (those of the rest of the package):

* ``attn_mask`` is boolean, True = may attend, broadcastable to ``(*, T, S)``;
* ``is_causal=True`` is offset-aware (bottom-right aligned, like
  :func:`attnlab.masks.causal_mask`): the ``T`` queries are the *last* ``T`` of
  the ``S`` positions, so query ``i`` sees keys ``j <= S - T + i``;
* a query with no allowed key gets a zero output and a log-sum-exp of ``-inf``,
  never NaN;
* float16 and bfloat16 inputs are accumulated in float32 (as the kernels do) and
  the output comes back in the input's dtype; the log-sum-exp stays float32.
"""

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from attnlab.attention import check_mask, check_qkv, stable_softmax
from attnlab.masks import _check_positive_int

DEFAULT_BLOCK = 64


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the running statistics are kept in: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def _finite_or_zero(row_max: Tensor) -> Tensor:
    """``row_max`` with ``-inf`` (a row that has seen no allowed key) replaced by 0.

    Subtracting it then gives ``exp(-inf - 0) = 0`` instead of
    ``exp(-inf - (-inf)) = exp(NaN)``.
    """
    return torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))


# ---------------------------------------------------------------- online softmax


def online_softmax_stats(blocks: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Row maximum ``m`` and denominator ``l = sum_j exp(x_j - m)``, in one pass over blocks.

    ``blocks`` yields the logits of each row left to right, a block of columns at a
    time (any iterable: a generator is read exactly once). After each block the
    running maximum can only grow; the sum collected so far was taken relative to
    the old maximum and is rescaled by ``exp(m_old - m_new) <= 1`` before the
    block's own terms are added:

        m_new = max(m_old, max(block))
        l_new = l_old * exp(m_old - m_new) + sum(exp(block - m_new))

    Every ``exp`` argument is ``<= 0``: nothing overflows. A row whose entries are
    all ``-inf`` ends with ``m = -inf`` and ``l = 0`` (no NaN).

    Shapes:
        each block: (*, b), the same leading dims ``*``; ``b`` may differ per block
        returns: m (*, 1), l (*, 1), in float32 or wider
    """
    row_max = denominator = None
    for index, block in enumerate(blocks):
        if not isinstance(block, Tensor) or not block.is_floating_point() or block.dim() < 1:
            kind = f"dtype {block.dtype}, shape {tuple(block.shape)}" if isinstance(block, Tensor) else type(block).__name__
            raise ValueError(f"block {index} must be a floating-point tensor (*, b), got {kind}")
        block = block.to(accumulation_dtype(block.dtype))
        if row_max is None:
            row_max = torch.full((*block.shape[:-1], 1), float("-inf"), dtype=block.dtype, device=block.device)
            denominator = torch.zeros_like(row_max)
        elif block.shape[:-1] != row_max.shape[:-1]:
            raise ValueError(
                f"block {index} has leading dims {tuple(block.shape[:-1])}, the earlier blocks "
                f"{tuple(row_max.shape[:-1])}"
            )
        if block.shape[-1] == 0:
            continue
        new_max = torch.maximum(row_max, block.amax(dim=-1, keepdim=True))  # (*, 1)
        shift = _finite_or_zero(new_max)  # rows with nothing but -inf so far: shift by 0
        rescale = torch.exp(row_max - shift)  # (*, 1), <= 1: the old terms shrink
        denominator = denominator * rescale + torch.exp(block - shift).sum(dim=-1, keepdim=True)
        row_max = new_max
    if row_max is None:
        raise ValueError("online_softmax_stats needs at least one block, got none")
    return row_max, denominator


def online_softmax(logits: Tensor, block_size: int = DEFAULT_BLOCK) -> Tensor:
    """Softmax along the last dim from the one-pass statistics of its blocks.

    Two passes over the logits instead of the safe softmax's three: one for the
    statistics (:func:`online_softmax_stats` over blocks of ``block_size``
    columns; the last may be shorter), one to normalise. Equal to
    :func:`attnlab.attention.stable_softmax`, including zeros for rows that are
    all ``-inf``.

    Shapes:
        logits: (*, N)
        returns: (*, N), the dtype of ``logits``
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        kind = f"dtype {logits.dtype}, shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"online_softmax needs a floating-point tensor with at least 1 dim, got {kind}")
    block_size = _check_positive_int("block_size", block_size)
    if logits.shape[-1] == 0:
        raise ValueError(f"online_softmax needs at least one column, got shape {tuple(logits.shape)}")
    row_max, denominator = online_softmax_stats(logits.split(block_size, dim=-1))  # (*, 1) each
    exps = torch.exp(logits.to(row_max.dtype) - _finite_or_zero(row_max))  # (*, N)
    probs = exps / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)  # empty rows: 0 / tiny = 0
    return probs.to(logits.dtype)


# ---------------------------------------------------------------- attention, block by block


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, is_causal: bool) -> None:
    """Raise ``ValueError`` naming the values if ``q, k, v, attn_mask`` do not fit together."""
    check_qkv(q, k, v)
    T, S = q.shape[-2], k.shape[-2]
    if T == 0 or S == 0:
        raise ValueError(f"need at least one query and one key, got T={T}, S={S}")
    if attn_mask is not None:
        check_mask(attn_mask, torch.Size((*q.shape[:-2], T, S)))
        if attn_mask.device != q.device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {q.device}")
    if not isinstance(is_causal, bool):
        raise ValueError(f"is_causal must be True or False, got {is_causal!r}")
    if is_causal and T > S:
        raise ValueError(
            f"is_causal=True needs T <= S (the queries are the last T of S positions), got T={T}, S={S}"
        )


def _mask_block(
    attn_mask: Tensor | None, is_causal: bool, offset: int, rows: slice, cols: slice, device: torch.device
) -> Tensor | None:
    """The block ``[rows, cols]`` of the combined causal and boolean mask, or None if all allowed.

    Query ``i`` (row) sees key ``j`` (column) when ``j <= offset + i``, ``offset =
    S - T``: within the block that is ``tril`` with diagonal ``offset + rows.start -
    cols.start`` (this is :func:`attnlab.masks.causal_mask` cut into blocks,
    without ever building the whole ``(T, S)`` mask). ``attn_mask`` must already
    be expanded to ``(*, T, S)`` (a view: nothing is allocated).

    Shapes:
        attn_mask: (*, T, S); returns: broadcastable to (*, bq, bk)
    """
    block = None
    if is_causal and cols.stop - 1 > offset + rows.start:  # some key is right of some query's diagonal
        diagonal = offset + rows.start - cols.start
        ones = torch.ones(rows.stop - rows.start, cols.stop - cols.start, dtype=torch.bool, device=device)
        block = ones.tril(diagonal)  # (bq, bk)
    if attn_mask is not None:
        part = attn_mask[..., rows, cols]  # (*, bq, bk), a view
        block = part if block is None else block & part
    return block


def tiled_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    block_q: int = DEFAULT_BLOCK,
    block_k: int = DEFAULT_BLOCK,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale, masked) v`` computed in tiles, FlashAttention style.

    The queries are cut into blocks of ``block_q`` rows. For each query block the
    keys and values are visited in blocks of ``block_k``, keeping per query a
    running maximum ``m``, a running denominator ``l`` and an *unnormalised*
    output accumulator ``acc``; when a block raises the maximum, both ``l`` and
    ``acc`` are rescaled by ``exp(m_old - m_new)``. At the end ``output = acc / l``.
    The largest intermediate is one ``(*, block_q, block_k)`` tile of scores, so
    the memory beyond the inputs and the output is O(block_q * block_k), not the
    O(T * S) of the score matrix. Neither block size needs to divide ``T`` or ``S``.

    With ``is_causal=True`` (offset-aware: query ``i`` sees keys ``j <= S - T + i``)
    the key blocks that lie entirely right of the diagonal are never computed, and
    only the blocks that the diagonal crosses are masked. ``attn_mask`` (boolean,
    True = may attend) is combined with it. Rows with no allowed key get a zero
    output and ``lse = -inf``.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask: broadcastable to (*, T, S)
        returns: output (*, T, Dv) in q's dtype; lse (*, T), the log-sum-exp of each
        row's allowed scores (float32 or wider)
    """
    _check_inputs(q, k, v, attn_mask, is_causal)
    block_q = _check_positive_int("block_q", block_q)
    block_k = _check_positive_int("block_k", block_k)
    T, S, Dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    work = accumulation_dtype(q.dtype)
    offset = S - T  # query i sits at position offset + i
    if attn_mask is not None:
        attn_mask = attn_mask.expand(*q.shape[:-1], S)  # (*, T, S), a view: nothing is allocated
    outputs, lses = [], []
    for q_start in range(0, T, block_q):
        rows = slice(q_start, min(q_start + block_q, T))
        q_block = q[..., rows, :].to(work)  # (*, bq, D)
        bq = rows.stop - rows.start
        row_max = torch.full((*q.shape[:-2], bq, 1), float("-inf"), dtype=work, device=q.device)  # (*, bq, 1)
        denominator = torch.zeros_like(row_max)  # (*, bq, 1)
        acc = torch.zeros((*q.shape[:-2], bq, Dv), dtype=work, device=q.device)  # (*, bq, Dv)
        # Causal: the block's last query (position offset + rows.stop - 1) sees keys < offset + rows.stop.
        k_stop = min(S, offset + rows.stop) if is_causal else S
        for k_start in range(0, k_stop, block_k):
            cols = slice(k_start, min(k_start + block_k, S))
            k_block, v_block = k[..., cols, :].to(work), v[..., cols, :].to(work)  # (*, bk, D), (*, bk, Dv)
            scores = (q_block @ k_block.transpose(-2, -1)) * scale  # (*, bq, D) @ (*, D, bk) -> (*, bq, bk)
            allowed = _mask_block(attn_mask, is_causal, offset, rows, cols, q.device)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            new_max = torch.maximum(row_max, scores.amax(dim=-1, keepdim=True))  # (*, bq, 1)
            shift = _finite_or_zero(new_max)  # a row with no allowed key yet: 0, not -inf
            rescale = torch.exp(row_max - shift)  # (*, bq, 1): how much the old maximum shrinks
            probs = torch.exp(scores - shift)  # (*, bq, bk), unnormalised
            denominator = denominator * rescale + probs.sum(dim=-1, keepdim=True)
            acc = acc * rescale + probs @ v_block  # (*, bq, bk) @ (*, bk, Dv) -> (*, bq, Dv)
            row_max = new_max
        empty = denominator == 0  # (*, bq, 1): rows with no allowed key
        outputs.append((acc / denominator.masked_fill(empty, 1.0)).to(q.dtype))  # empty rows: acc = 0
        lses.append((row_max + torch.log(denominator)).squeeze(-1))  # (*, bq); -inf for empty rows
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)  # (*, T, Dv), (*, T)


# ---------------------------------------------------------------- split-K (flash-decoding)


def merge_partials(outputs: Sequence[Tensor], lses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Merge attention results over disjoint sets of keys into the result over all of them.

    Each partial ``o_i`` is a normalised attention output over its own keys and
    ``lse_i`` the log-sum-exp of its scores, so ``exp(lse_i)`` is its softmax
    denominator. Over all keys ``lse = log sum_i exp(lse_i)`` and
    ``output = sum_i exp(lse_i - lse) * o_i``; the exponents are taken relative to
    the largest ``lse_i`` (the partial maxima), so nothing overflows. Partials
    with ``lse_i = -inf`` (no allowed key) weigh nothing; if every partial of a row
    has none, the row's output is 0 and its ``lse`` is ``-inf``.

    Shapes:
        outputs: n tensors (*, T, Dv); lses: n tensors (*, T)
        returns: output (*, T, Dv) in the outputs' dtype; lse (*, T) (float32 or wider)
    """
    outputs, lses = list(outputs), list(lses)
    if not outputs or len(outputs) != len(lses):
        raise ValueError(f"need as many lses as outputs (at least one), got {len(outputs)} outputs, {len(lses)} lses")
    for index, (out, lse) in enumerate(zip(outputs, lses)):
        if not isinstance(out, Tensor) or not isinstance(lse, Tensor) or out.dim() < 1 or out.shape[:-1] != lse.shape:
            shapes = [tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in (out, lse)]
            raise ValueError(f"partial {index}: output (*, T, Dv) and lse (*, T) do not fit, got {shapes[0]} and {shapes[1]}")
        if out.shape != outputs[0].shape:
            raise ValueError(f"partial {index} has shape {tuple(out.shape)}, partial 0 {tuple(outputs[0].shape)}")
    work = accumulation_dtype(outputs[0].dtype)
    stacked_out = torch.stack([o.to(work) for o in outputs])  # n x (*, T, Dv) -> (n, *, T, Dv)
    stacked_lse = torch.stack([x.to(work) for x in lses])  # n x (*, T) -> (n, *, T)
    lse = torch.logsumexp(stacked_lse, dim=0)  # (*, T); -inf where every partial is empty
    weights = torch.exp(stacked_lse - _finite_or_zero(lse))  # (n, *, T), each row sums to 1 (or 0)
    output = (weights.unsqueeze(-1) * stacked_out).sum(dim=0)  # (n, *, T, 1) * (n, *, T, Dv) -> (*, T, Dv)
    return output.to(outputs[0].dtype), lse


def attention_partial(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """Attention over one chunk of keys, with the log-sum-exp that lets it be merged.

    Shapes:
        q: (*, T, D); k: (*, s, D); v: (*, s, Dv); attn_mask broadcastable to (*, T, s)
        returns: output (*, T, Dv) in q's dtype; lse (*, T) (float32 or wider)
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    work = accumulation_dtype(q.dtype)
    scores = (q.to(work) @ k.to(work).transpose(-2, -1)) * scale  # (*, T, D) @ (*, D, s) -> (*, T, s)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)  # (*, T, s); rows with no allowed key: zeros
    return (weights @ v.to(work)).to(q.dtype), torch.logsumexp(scores, dim=-1)  # (*, T, Dv), (*, T)


def split_k_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    split_size: int,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Flash-decoding: attention over chunks of ``split_size`` keys, merged by log-sum-exp.

    Decoding has one query per sequence (``T = 1``), too little work to keep a
    parallel machine busy if one worker walks all ``S`` keys. Split-K gives each
    chunk of keys its own worker: every chunk's partial result (its output and
    log-sum-exp) is independent of the others, so all can run at once, and
    :func:`merge_partials` combines them exactly. Here the chunks run one after
    the other; the last may be shorter. ``is_causal`` and ``attn_mask`` mean what
    they mean in :func:`tiled_attention`.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask: broadcastable to (*, T, S)
        returns: output (*, T, Dv) in q's dtype; lse (*, T) (float32 or wider)
    """
    _check_inputs(q, k, v, attn_mask, is_causal)
    split_size = _check_positive_int("split_size", split_size)
    T, S = q.shape[-2], k.shape[-2]
    if attn_mask is not None:
        attn_mask = attn_mask.expand(*q.shape[:-1], S)  # (*, T, S), a view: nothing is allocated
    outputs, lses = [], []
    for start in range(0, S, split_size):
        cols = slice(start, min(start + split_size, S))
        allowed = _mask_block(attn_mask, is_causal, S - T, slice(0, T), cols, q.device)
        out, lse = attention_partial(q, k[..., cols, :], v[..., cols, :], allowed, scale)
        outputs.append(out)
        lses.append(lse)
    return merge_partials(outputs, lses)
