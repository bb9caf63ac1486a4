import numpy as np
import pytest

from meltr.data import ANSWERS, SPECIAL_TOKENS, Tokenizer, world_tokenizer
from meltr.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID


def test_special_token_ids():
    tokenizer = world_tokenizer()
    assert (PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID) == (0, 1, 2, 3, 4)
    assert tokenizer.id_to_token[:5] == SPECIAL_TOKENS
    assert all(word in tokenizer.token_to_id for word in ANSWERS)


def test_round_trip_and_padding():
    tokenizer = world_tokenizer()
    text = "the small red circle moves to the left and then jumps three times"
    ids = tokenizer.encode(text, 24)
    assert len(ids) == 24
    assert ids[0] == CLS_ID and ids[len(text.split()) + 1] == SEP_ID and set(ids[len(text.split()) + 2 :]) == {0}
    assert UNK_ID not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer.encode(text.upper())) == text


def test_truncation_keeps_sep_and_unknown_words_become_unk():
    tokenizer = world_tokenizer()
    ids = tokenizer.encode("the red circle " * 10, 6)
    assert ids[0] == CLS_ID and ids[-1] == SEP_ID and len(ids) == 6
    assert tokenizer.encode("the zebra", 5)[2] == UNK_ID
    with pytest.raises(ValueError, match="max_len"):
        tokenizer.encode("the", 1)


def test_vocabulary_does_not_depend_on_the_order_of_words():
    assert Tokenizer(["b", "a", "c"]).id_to_token == Tokenizer(["c", "b", "a"]).id_to_token


def test_every_generated_text_is_in_the_vocabulary(world):
    for split in world.splits.values():
        for ids in (split.caption_ids, split.transcript_ids, split.question_ids):
            assert not np.any(ids == UNK_ID)
        for texts in split.captions:
            for text in texts:
                assert world.tokenizer.decode(world.tokenizer.encode(text)) == text
