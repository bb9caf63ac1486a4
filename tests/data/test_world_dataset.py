import numpy as np
import pytest
import torch

from meltr.data import ANSWERS, BATCH_KEYS, QA_TYPES, WorldDataset, collate
from meltr.data.tokenizer import CLS_ID, SEP_ID


def _batch(world, split="train", batch_size=16, **kwargs):
    return next(iter(world.loader(split, batch_size=batch_size, **kwargs)))


def test_batch_keys_shapes_and_dtypes(world):
    config = world.config
    batch = _batch(world)
    b, f, s = 16, config.n_frames, config.image_size
    expected = {
        "video": (torch.float32, (b, f, 3, s, s)),
        "text": (torch.int64, (b, config.text_len)),
        "text_mask": (torch.bool, (b, config.text_len)),
        "transcript": (torch.int64, (b, config.transcript_len)),
        "transcript_mask": (torch.bool, (b, config.transcript_len)),
        "audio": (torch.float32, (b, config.audio_samples)),
        "clip_id": (torch.int64, (b,)),
        "label": (torch.int64, (b,)),
        "sentiment": (torch.float32, (b,)),
        "misaligned": (torch.bool, (b,)),
        "question": (torch.int64, (b, config.question_len)),
        "question_mask": (torch.bool, (b, config.question_len)),
        "answer": (torch.int64, (b,)),
        "qa_type": (torch.int64, (b,)),
    }
    assert set(batch) == set(expected) == set(BATCH_KEYS)
    for key, (dtype, shape) in expected.items():
        assert batch[key].dtype == dtype, key
        assert tuple(batch[key].shape) == shape, key
    assert 0.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    assert batch["answer"].max() < len(ANSWERS) and batch["qa_type"].max() < len(QA_TYPES)
    assert batch["sentiment"].abs().max() <= 3.0


@pytest.mark.parametrize("key", ["text", "transcript", "question"])
def test_token_layout_cls_first_sep_last_pad_after(world, key):
    batch = _batch(world)
    ids, mask = batch[key], batch[f"{key}_mask"]
    assert torch.equal(mask, ids != 0)
    lengths = mask.sum(dim=1)
    assert torch.all(ids[:, 0] == CLS_ID)
    assert torch.all(ids[torch.arange(len(ids)), lengths - 1] == SEP_ID)
    assert torch.all(mask[:, :-1] >= mask[:, 1:])  # no real token after a pad


def test_batch_content_matches_the_split(world):
    split = world.splits["test"]
    batch = _batch(world, "test", batch_size=8)
    ids = batch["clip_id"].numpy()
    assert np.array_equal(ids, np.arange(8))  # the test split is not shuffled
    assert np.allclose(batch["video"].numpy(), split.video[ids] / 255.0)
    assert np.array_equal(batch["text"].numpy(), split.caption_ids[ids, 0])  # caption 0 on test
    assert np.array_equal(batch["label"].numpy(), split.labels[ids])
    decoded = [world.tokenizer.decode(t) for t in batch["text"]]
    assert decoded == [split.captions[i][0] for i in ids]
    first_questions = split.qa_offsets[ids]
    assert np.array_equal(batch["answer"].numpy(), split.answers[first_questions])


def test_random_choices_depend_on_seed_and_epoch_only(world):
    split = world.splits["train"]

    def texts(seed, epoch):
        dataset = WorldDataset(split, caption="random", qa="random", seed=seed, epoch=epoch)
        batch = collate([dataset[i] for i in range(len(dataset))])
        return batch["text"], batch["question"]

    same = texts(0, 0)
    assert all(torch.equal(a, b) for a, b in zip(same, texts(0, 0), strict=True))
    assert not torch.equal(same[0], texts(0, 1)[0])
    assert not torch.equal(same[1], texts(1, 0)[1])
    fixed = WorldDataset(split, caption=2, qa="first")
    assert np.array_equal(fixed[5]["text"].numpy(), split.caption_ids[5, 2])


def test_loader_order_is_deterministic_under_a_seed(world):
    def order(seed, epoch=0):
        return torch.cat([b["clip_id"] for b in world.loader("train", 16, seed=seed, epoch=epoch)])

    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))
    assert not torch.equal(order(0), order(0, epoch=1))
    assert sorted(order(3).tolist()) == list(range(len(world.splits["train"])))


def test_qa_all_and_qa_type_filter(world):
    split = world.splits["test"]
    every = world.dataset("test", qa="all")
    assert len(every) == len(split.answers)
    assert sorted(int(every[i]["answer"]) for i in range(len(every))) == sorted(split.answers.tolist())
    action = world.dataset("test", qa="all", qa_types=["action"])
    assert len(action) == int((split.qa_types == QA_TYPES.index("action")).sum()) > 0
    assert {int(action[i]["qa_type"]) for i in range(len(action))} == {QA_TYPES.index("action")}
    with pytest.raises(ValueError, match="qa_types"):
        world.dataset("test", qa_types=["counting"])
    with pytest.raises(ValueError, match="caption"):
        world.dataset("test", caption="all")
    with pytest.raises(KeyError, match="pretrain, train, meta, test"):
        world.dataset("validation")
