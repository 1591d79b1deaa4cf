"""Choosing the next token from the logits: greedy, or sampled with temperature, top-k, top-p (chapter 7).

Shape legend: ``B`` batch, ``V`` vocabulary size.

Sampling draws the next token from ``softmax(logits / temperature)`` after
keeping only the ``top_k`` most likely tokens and the smallest set whose
probabilities add up to ``top_p`` (Holtzman et al. 2020, "The Curious Case of
Neural Text Degeneration"), in Hugging Face's order, from a ``torch.Generator``
that makes it reproducible.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits (checked once, before generating).

    ``do_sample=False`` is greedy (argmax; the other fields must stay at their
    defaults). ``temperature`` divides the logits; ``top_k`` keeps the ``k``
    largest; ``top_p`` keeps the smallest set of most likely tokens whose
    probabilities add up to at least ``top_p`` (nucleus sampling; the most
    likely token always stays). ``generator`` makes sampling reproducible.

    Shapes:
        plain values; ``generator`` a torch.Generator or None.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be a bool, got do_sample={self.do_sample!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ValueError(f"temperature must be a number > 0, got temperature={t!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got top_k={self.top_k!r}")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1):
            raise ValueError(f"top_p must be a number in (0, 1] or None, got top_p={p!r}")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(self.generator).__name__}")
        if not self.do_sample:
            given = [name for name, value, default in (
                ("temperature", t, 1.0), ("top_k", self.top_k, None), ("top_p", p, None),
                ("generator", self.generator, None),
            ) if value != default]
            if given:
                raise ValueError(f"{', '.join(given)} only apply with do_sample=True (greedy decoding ignores them)")


def warp_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Scores to sample from: divided by ``temperature``, then top-k, then top-p filtered (-inf).

    The same steps, in the same order, as Hugging Face's ``TemperatureLogitsWarper``,
    ``TopKLogitsWarper`` and ``TopPLogitsWarper``, computed in float32.
    ``logits`` is not modified.

    Shapes:
        logits: (B, V)
        returns: (B, V) float32, -inf where a token may not be drawn
    """
    scores = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest score
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1)  # ascending, as Hugging Face does
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        drop_sorted = cumulative <= 1 - top_p  # the unlikely tail that adds up to at most 1 - top_p
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def choose_next(logits: Tensor, sampling: Sampling) -> Tensor:
    """The next token of every row: argmax, or a draw from the warped distribution.

    Shapes:
        logits: (B, V)
        returns: (B,) long
    """
    if not sampling.do_sample:
        return logits.argmax(dim=-1)  # (B,)
    scores = warp_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    probs = scores.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=sampling.generator).squeeze(1)  # (B, 1) -> (B,)
