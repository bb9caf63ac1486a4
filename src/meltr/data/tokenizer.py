"""A word-level tokenizer for the world's closed language."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from meltr.data.language import grammar_words
from meltr.data.lexicon import (
    ANSWERS,
    COLOURS,
    DIRECTIONS,
    INTENSIFIERS,
    NUMBER_WORDS,
    OPINION_WORDS,
    SHAPES,
    SIZES,
)

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = range(len(SPECIAL_TOKENS))

_WORD = re.compile(r"[a-z0-9']+|[^a-z0-9'\s]")


class Tokenizer:
    """Maps words to ids and back; ids ``0..4`` are ``[PAD] [CLS] [SEP] [MASK] [UNK]``.

    Text is lower-cased and split into words and single punctuation marks. :meth:`encode` wraps the ids in
    ``[CLS] ... [SEP]`` and pads with ``[PAD]`` (0) to a fixed length, truncating the words if needed
    (``[SEP]`` is always kept).

    Args:
        words: the vocabulary (specials excluded); ids follow the sorted order of the words, so the same
            set of words always gives the same ids.
    """

    def __init__(self, words: Iterable[str]) -> None:
        words = sorted(set(words) - set(SPECIAL_TOKENS))
        self.id_to_token: tuple[str, ...] = (*SPECIAL_TOKENS, *words)
        self.token_to_id: dict[str, int] = {token: i for i, token in enumerate(self.id_to_token)}

    pad_id, cls_id, sep_id, mask_id, unk_id = PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """Lower-case ``text`` and split it into words and punctuation marks."""
        return _WORD.findall(text.lower())

    def encode(self, text: str, max_len: int | None = None, *, pad: bool = True) -> list[int]:
        """``[CLS] w_1 ... w_n [SEP]`` as ids, truncated to ``max_len`` and padded with 0 up to it.

        Args:
            text: the text to encode; unknown words become ``[UNK]``.
            max_len: total length, specials included (at least 2); ``None`` keeps every word and does not pad.
            pad: pad with ``[PAD]`` up to ``max_len``.
        """
        ids = [self.token_to_id.get(word, UNK_ID) for word in self.tokenize(text)]
        if max_len is not None:
            if max_len < 2:
                raise ValueError(f"max_len must be at least 2 ([CLS] and [SEP]), got {max_len}")
            ids = ids[: max_len - 2]
        ids = [CLS_ID, *ids, SEP_ID]
        if max_len is not None and pad:
            ids += [PAD_ID] * (max_len - len(ids))
        return ids

    def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """Encode and pad every text: int64 ``[len(texts), max_len]``."""
        out = np.zeros((len(texts), max_len), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = self.encode(text, max_len, pad=False)
            out[i, : len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """The text of ``ids``, words joined by spaces; specials dropped unless ``skip_special`` is False."""
        tokens = []
        for i in ids:
            i = int(i)
            if skip_special and i < len(SPECIAL_TOKENS):
                continue
            tokens.append(self.id_to_token[i] if 0 <= i < self.vocab_size else SPECIAL_TOKENS[UNK_ID])
        return " ".join(tokens)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


def world_tokenizer() -> Tokenizer:
    """The tokenizer of the synthetic world: every word its grammar, transcripts and answers can produce."""
    return Tokenizer(
        {
            *grammar_words(),
            *ANSWERS,
            *COLOURS,
            *SHAPES,
            *SIZES,
            *DIRECTIONS,
            *NUMBER_WORDS.values(),
            *OPINION_WORDS,
            *INTENSIFIERS,
        }
    )
