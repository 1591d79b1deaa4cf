"""Name the mistake behind a wrong padding answer, for the graders' feedback (chapter 4).

Like :mod:`attnlab.diagnose`, each ``explain_*`` function recomputes the answer under
every classic mistake of the chapter and says which ones reproduce the learner's output
(all of them, when several give the same output on the inputs at hand). Otherwise it
describes the symptom: the ``problem`` sentence of :func:`attnlab.testing.tensor_problem`
when the caller passes it, else its own. Given a right answer it says so and blames nothing.

Shape legend: ``B`` batch, ``T`` query positions, ``S`` key positions (cached + new).
"""

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from attnlab.masks import attention_mask_for, causal_mask, position_ids

RIGHT = "is right"  # every explanation of a right answer contains these words, and no other explanation does


def _real(attention_mask: Tensor) -> Tensor:
    return attention_mask != 0  # (B, S) bool, True = real token


def _first_difference(got: Tensor, want: Tensor) -> str:
    wrong = (got != want).nonzero()
    return f"{len(wrong)} of {want.numel()} entries differ, first at {wrong[0].tolist()}"


def _named(problem: str | None, matches: list[str]) -> str:
    """The symptom (if given) followed by the mistakes that reproduce it."""
    if len(matches) == 1:
        named = f"Looks like {matches[0]}."
    else:
        named = "Looks like one of these, which give the same result here: " + "; or ".join(matches) + "."
    return f"{problem}. {named}" if problem else named


def is_right(explanation: str) -> bool:
    """True if an ``explain_*`` sentence says the answer is right."""
    return RIGHT in explanation


# ------------------------------------------------------------------------ left padding


def explain_left_pad_mismatch(got: object, sequences: Sequence, pad_id: int = 0, problem: str | None = None) -> str:
    """A sentence naming what is wrong with ``got = left_pad(sequences, pad_id)``.

    Shapes:
        got: the learner's (input_ids (B, S), attention_mask (B, S)); S = the longest length
    """
    rows = [torch.as_tensor(seq, dtype=torch.long).flatten() for seq in sequences]
    lengths = [row.numel() for row in rows]
    B, S = len(rows), max(lengths)
    want_ids = torch.full((B, S), pad_id, dtype=torch.long)  # (B, S)
    want_mask = torch.zeros(B, S, dtype=torch.long)  # (B, S)
    right_ids, right_mask = want_ids.clone(), want_mask.clone()
    for b, row in enumerate(rows):
        want_ids[b, S - row.numel():], want_mask[b, S - row.numel():] = row, 1
        right_ids[b, :row.numel()], right_mask[b, :row.numel()] = row, 1
    if not isinstance(got, tuple) or len(got) != 2:
        return problem or f"left_pad must return the tuple (input_ids, attention_mask), got {type(got).__name__}"
    for name, value, want, right in (("input_ids", got[0], want_ids, right_ids),
                                     ("attention_mask", got[1], want_mask, right_mask)):
        if not isinstance(value, Tensor):
            return problem or f"{name} should be a tensor, got {type(value).__name__}"
        if tuple(value.shape) != (B, S):
            return problem or f"{name} has shape {tuple(value.shape)}, expected (B, S) = {(B, S)} for lengths {lengths}"
        if value.dtype != torch.long:
            return problem or f"{name} has dtype {value.dtype}, expected torch.long"
        if torch.equal(value, want):
            continue
        if torch.equal(value, right) and not torch.equal(want, right):
            return _named(problem, [f"right padding: {name} puts the pads after the tokens (lengths {lengths}). "
                                    "A decoder-only model needs left padding: every row must end with its last "
                                    "real token"])
        return problem or f"{name} is wrong for lengths {lengths}: {_first_difference(value, want)}"
    return f"left_pad {RIGHT} for lengths {lengths}"


# ------------------------------------------------------------------------ position ids


def position_id_mistakes(attention_mask: Tensor) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(description, position ids)`` for the classic position-id mistakes.

    Shapes:
        attention_mask: (B, S), 1 = real token; each result (B, S) long
    """
    real = _real(attention_mask)
    B, S = attention_mask.shape
    count = real.long().cumsum(-1)  # (B, S): real tokens up to and including this one
    pads_before = (~real).long().sum(-1, keepdim=True)  # (B, 1)
    yield ("your position ids were not shifted for left padding: you used arange(S), so a left-padded "
           "sequence starts at the number of pads instead of 0. Count only real tokens",
           torch.arange(S).expand(B, S))
    yield "your positions start at 1: the first real token is at position 0 (cumsum - 1)", count.masked_fill(~real, 0)
    yield ("your positions start at 1 and the pads are not 0: the first real token is at position 0 "
           "(cumsum - 1), and each pad gets 0", count)
    yield "your pads get cumsum - 1 (the real tokens' positions are right): each pad must get 0", count - 1
    yield ("your position ids assume left padding (arange(S) minus the number of pads): count the real "
           "tokens instead, so right padding and gaps work too",
           (torch.arange(S)[None, :] - pads_before).clamp(min=0).masked_fill(~real, 0))


def explain_position_ids_mismatch(got: object, attention_mask: Tensor, problem: str | None = None) -> str:
    """A sentence naming the mistake that reproduces wrong position ids for ``attention_mask``.

    The values are compared before the dtype, so wrong values are named even in a wrong dtype.

    Shapes:
        got: the learner's (B, S) result; attention_mask: (B, S), 1 = real token
    """
    if not isinstance(got, Tensor):
        return problem or f"position ids should be a tensor, got {type(got).__name__}"
    if tuple(got.shape) != tuple(attention_mask.shape):
        return problem or (f"position ids must have the shape of attention_mask {tuple(attention_mask.shape)}, "
                           f"got {tuple(got.shape)}")
    want = position_ids(attention_mask).double()
    values = got.detach().double()
    if torch.equal(values, want):
        if got.dtype != torch.long:
            return problem or f"the values are right, but position ids must be torch.long (they index a table), got {got.dtype}"
        return problem or f"the position ids {RIGHT}"
    matches = [d for d, wrong in position_id_mistakes(attention_mask) if torch.equal(values, wrong.double())]
    if matches:
        return _named(problem, matches)
    real = _real(attention_mask)
    if torch.equal(values[real], want[real]):
        return _named(problem, ["your pads are wrong (the real tokens' positions are right): each pad must get 0"])
    return problem or (f"wrong position ids ({_first_difference(values, want)}): each real token gets the number "
                       "of real tokens before it in its row (0, 1, 2, ...); pads get 0")


# ------------------------------------------------------------------------ the padded causal mask


def padded_mask_mistakes(attention_mask: Tensor, T: int) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(description, mask)`` for classic mistakes combining causal and padding masks.

    Shapes:
        attention_mask: (B, S), 1 = real token; each mask: (B, 1, T, S), dtype bool
    """
    B, S = attention_mask.shape
    keys = _real(attention_mask)[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
    causal = causal_mask(T, S)  # (T, S)
    ones = torch.ones(T, S, dtype=torch.bool)
    yield "you dropped the padding mask: queries attend to pad keys", causal.expand(B, 1, T, S)
    yield "you forgot the causal mask: queries see future tokens", keys.expand(B, 1, T, S)
    if T != S:
        yield ("your causal part is aligned to the top-left (like is_causal=True); the T queries are the last T "
               "of the S positions: use tril(diagonal=S - T)", keys & ones.tril())
    yield "your causal diagonal is off by one (a query sees the next key)", keys & ones.tril(S - T + 1)
    yield "your causal diagonal is off by one (a query may not see itself)", keys & ones.tril(S - T - 1)
    yield "you used triu where tril was meant", keys & ones.triu(S - T)
    queries = _real(attention_mask)[:, None, -T:, None]  # (B, S) -> (B, 1, T, 1)
    yield "you masked the pad queries (rows) instead of the pad keys (columns)", queries & causal
    yield "you masked the pad queries (rows) as well as the pad keys (columns)", queries & keys & causal


def explain_padded_mask_mismatch(got: object, attention_mask: Tensor, T: int, problem: str | None = None) -> str:
    """A sentence naming the mistake that reproduces a wrong (B, 1, T, S) causal+padding mask.

    The values (nonzero = may attend) are compared before the dtype, so wrong values are
    named even in a wrong dtype.
    """
    B, S = attention_mask.shape
    if not isinstance(got, Tensor):
        return problem or f"the mask should be a bool tensor, got {type(got).__name__}"
    if tuple(got.shape) != (B, 1, T, S):
        return problem or f"the mask must have shape (B, 1, T, S) = {(B, 1, T, S)}, got {tuple(got.shape)}"
    allowed = got.detach() != 0
    where = f"attention_mask {attention_mask.long().tolist()}, T={T}"
    want = attention_mask_for(attention_mask, T)
    if torch.equal(allowed, want):
        if got.dtype != torch.bool:
            return problem or f"the values are right, but the mask must be a bool tensor (True = may attend), got {got.dtype}"
        return problem or f"the mask {RIGHT} ({where})"
    matches = [d for d, wrong in padded_mask_mistakes(attention_mask, T) if torch.equal(allowed, wrong)]
    if matches:
        return _named(problem, matches[:-1] + [f"{matches[-1]} ({where})"])
    return problem or (f"the mask is wrong ({where}; {_first_difference(allowed, want)}): query i (at position "
                       "S - T + i) may see key j when j <= S - T + i AND key j is a real token")


def explain_padded_batch_mismatch(sequences: Sequence, left_pad: Callable, position_ids: Callable,
                                  padded_causal_mask: Callable) -> str:
    """Say which of the learner's three functions made a padded batch differ from each sequence alone.

    Calls ``left_pad`` on a copy of ``sequences``, then ``position_ids`` and ``padded_causal_mask``
    each on its own copy of the attention mask ``left_pad`` made (checking that none of them
    changes its input), and names only the pieces that are wrong.

    Shapes:
        left_pad(sequences) -> (input_ids (B, S), attention_mask (B, S))
        position_ids(attention_mask) -> (B, S); padded_causal_mask(attention_mask) -> (B, 1, S, S)
    """
    given = [list(s) if isinstance(s, list) else s.clone() for s in sequences]
    padded = left_pad(given)
    if any((g != s) if isinstance(s, list) else not torch.equal(g, s) for g, s in zip(given, sequences)):
        return "left_pad changed the caller's sequences in place"
    left = explain_left_pad_mismatch(padded, sequences)
    if not is_right(left):
        return f"left_pad: {left}"
    mask = padded[1]
    problems = []
    for name, call, explain in (
        ("position_ids", position_ids, lambda got: explain_position_ids_mismatch(got, mask)),
        ("padded_causal_mask", padded_causal_mask, lambda got: explain_padded_mask_mismatch(got, mask, mask.shape[1])),
    ):
        copy = mask.clone()
        got = call(copy)
        if not torch.equal(copy, mask):
            problems.append(f"{name} changed its input attention_mask in place (to {copy.tolist()})")
        note = explain(got)
        if not is_right(note):
            problems.append(f"{name}: {note}")
    if not problems:
        return "your left_pad, position_ids and padded_causal_mask all match the package's on this batch"
    return " / ".join(problems)
