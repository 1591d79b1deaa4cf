"""A tiny character-level tokenizer with padding (chapter 4).

It behaves like the Hugging Face tokenizers learners meet later, minus the
subwords: a batch of texts becomes ``input_ids`` and an ``attention_mask`` of
shape ``(B, S)``, padded on the left (for generation) or on the right.

Shape legend: ``B`` batch, ``S`` positions (the padded length).
"""

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor


@dataclass(frozen=True)
class CharTokenizer:
    """Character-level tokenizer with a fixed vocabulary.

    Ids 0, 1 and 2 are the special tokens ``<pad>``, ``<bos>`` and ``<eos>``; the
    characters of ``chars`` follow in the order given, from id 3 on.

    Example:
        >>> tok = CharTokenizer("abc")
        >>> tok.encode("cab")
        [5, 3, 4]
        >>> ids, mask = tok(["ab", "c"], padding_side="left")
        >>> ids.tolist(), mask.tolist()
        ([[3, 4], [0, 5]], [[1, 1], [0, 1]])
    """

    chars: str
    pad_id: ClassVar[int] = 0
    bos_id: ClassVar[int] = 1
    eos_id: ClassVar[int] = 2
    special_tokens: ClassVar[tuple[str, ...]] = ("<pad>", "<bos>", "<eos>")
    _char_to_id: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"chars must be a non-empty str of vocabulary characters, got {self.chars!r}")
        repeated = sorted({c for c in self.chars if self.chars.count(c) > 1})
        if repeated:
            raise ValueError(f"chars must not repeat a character, got repeated {repeated}")
        offset = len(self.special_tokens)
        table = {c: offset + i for i, c in enumerate(self.chars)}
        object.__setattr__(self, "_char_to_id", table)  # frozen dataclass: set once, here

    @property
    def vocab_size(self) -> int:
        """Number of ids: the special tokens plus one per character."""
        return len(self.special_tokens) + len(self.chars)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of the characters of ``text``, optionally framed by ``<bos>``/``<eos>``.

        Shapes:
            returns: a list of ``len(text) + add_bos + add_eos`` ints.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode needs a str, got {type(text).__name__}")
        unknown = sorted({c for c in text if c not in self._char_to_id})
        if unknown:
            raise ValueError(f"characters {unknown} are not in the vocabulary {self.chars!r}")
        ids = [self._char_to_id[c] for c in text]
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids: list[int] | Tensor, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are skipped, or written as ``<pad>``, ``<bos>``, ``<eos>``.

        With ``skip_special_tokens=True`` (the default) the text can be shorter
        than ``ids``: a generated ``<eos>`` vanishes. Pass ``False`` to see one
        piece of text per id.

        Example:
            >>> tok = CharTokenizer("abc")
            >>> tok.decode([3, 2, 4]), tok.decode([3, 2, 4], skip_special_tokens=False)
            ('ab', 'a<eos>b')

        Shapes:
            ids: a list of ints or a 1-D tensor (S,).
        """
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode needs a 1-D tensor of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        if not isinstance(skip_special_tokens, bool):
            raise ValueError(f"skip_special_tokens must be a bool, got {skip_special_tokens!r}")
        offset = len(self.special_tokens)
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:10]} are not in range(0, {self.vocab_size})")
        if skip_special_tokens:
            return "".join(self.chars[i - offset] for i in ids if i >= offset)
        return "".join(self.chars[i - offset] if i >= offset else self.special_tokens[i] for i in ids)

    def __call__(
        self,
        texts: list[str],
        padding_side: str = "left",
        max_length: int | None = None,
        add_bos: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Encode a batch and pad it to one length: ``(input_ids, attention_mask)``.

        ``padding_side="left"`` (the default here) puts the pads in front, so every
        sequence ends at the last column: what generation needs, because the next
        token is appended there. ``"right"`` puts them at the end (fine for training
        and scoring, wrong for generation). ``max_length`` pads further, to exactly
        that length; a text longer than it is an error, never silently truncated.

        Shapes:
            texts: B strings.
            returns: input_ids (B, S) long, pads = ``pad_id``;
                attention_mask (B, S) long, 1 = real token, 0 = pad;
                ``S = max_length`` if given, else the longest encoded text.
        """
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ValueError(f"texts must be a list of str (a batch), got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts is an empty batch: give at least one text")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        encoded = [self.encode(text, add_bos=add_bos) for text in texts]
        longest = max(len(ids) for ids in encoded)
        if max_length is None:
            length = longest
        else:
            if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
                raise ValueError(f"max_length must be an int >= 1 or None, got {max_length!r}")
            too_long = {i: len(ids) for i, ids in enumerate(encoded) if len(ids) > max_length}
            if too_long:
                raise ValueError(
                    f"texts longer than max_length={max_length} (index: length {too_long}); "
                    f"this tokenizer never truncates"
                )
            length = max_length
        if length == 0:
            raise ValueError(f"every text in the batch is empty ({len(texts)} texts): nothing to encode")

        input_ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)  # (B, S)
        attention_mask = torch.zeros((len(texts), length), dtype=torch.long)  # (B, S)
        for row, ids in enumerate(encoded):
            n = len(ids)
            if n == 0:
                continue
            cols = slice(length - n, length) if padding_side == "left" else slice(0, n)
            input_ids[row, cols] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, cols] = 1
        return input_ids, attention_mask
