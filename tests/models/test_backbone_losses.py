"""The shared battery: every registered backbone x every pretext loss."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, all_tasks, random_batch, tiny

from meltr.contract import stack_task_losses
from meltr.models import CLS_ID, PAD_ID, SEP_ID, UniVL

TASKS = all_tasks()
TASK_IDS = [f"{name}-{task}" for name, task in TASKS]


def losses_of(model, batch, seed=0):
    torch.manual_seed(seed)
    return model(batch)


@pytest.fixture(scope="module")
def outputs():
    batch = random_batch()
    return {name: losses_of(tiny(name), batch) for name in {n for n, _ in TASKS}}


@pytest.mark.parametrize("name, task", TASKS, ids=TASK_IDS)
def test_loss_is_a_finite_nonnegative_per_sample_vector(outputs, name, task):
    loss = outputs[name][task]
    assert loss.shape == (4,)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all()
    assert (loss >= 0).all()


def test_tasks_are_exactly_the_returned_losses_in_order(outputs, backbone_name):
    model = tiny(backbone_name)
    assert list(outputs[backbone_name]) == list(model.tasks)
    assert stack_task_losses(outputs[backbone_name], model.tasks).shape == (4, len(model.tasks))


@pytest.mark.parametrize("name, task", TASKS, ids=TASK_IDS)
def test_a_few_adam_steps_lower_the_loss(name, task):
    model, batch = tiny(name), random_batch()
    # Small steps: at lr >= 3e-3 the tiny models' contrastive embeddings can collapse (loss stuck at log B).
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(15):
        loss = losses_of(model, batch)[task].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert losses_of(model, batch)[task].mean().item() < 0.98 * history[0], history


def test_same_seed_same_losses_other_seed_other_masks(backbone_name, batch):
    model = tiny(backbone_name)
    first, again, other = losses_of(model, batch, 1), losses_of(model, batch, 1), losses_of(model, batch, 2)
    for task in model.tasks:
        assert torch.equal(first[task], again[task]), task
    assert any(not torch.equal(first[t], other[t]) for t in model.tasks)
    replay = [model(batch, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert all(torch.equal(replay[0][t], replay[1][t]) for t in model.tasks)


def test_initialisation_is_deterministic_under_a_seed(backbone_name):
    first, second = tiny(backbone_name).state_dict(), tiny(backbone_name).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_losses_ignore_what_sits_in_padding(backbone_name, batch):
    model = tiny(backbone_name)
    noisy = dict(batch)
    for key in ("text", "transcript"):
        noise = torch.randint(5, VOCAB_SIZE, batch[key].shape)
        noisy[key] = torch.where(batch[f"{key}_mask"], batch[key], noise)
    clean, dirty = losses_of(model, batch), losses_of(model, noisy)
    for task in model.tasks:
        torch.testing.assert_close(dirty[task], clean[task], msg=task)


def test_losses_ignore_the_downstream_labels(backbone_name, batch):
    model = tiny(backbone_name)
    relabelled = dict(batch, misaligned=~batch["misaligned"], label=batch["label"] + 1, sentiment=-batch["sentiment"])
    clean, other = losses_of(model, batch), losses_of(model, relabelled)
    assert all(torch.equal(clean[t], other[t]) for t in model.tasks)


def test_edge_batches_stay_finite(backbone_name):
    model = tiny(backbone_name)
    single = {k: v[:1] for k, v in random_batch().items()}
    one_clip = dict(random_batch(), clip_id=torch.zeros(4, dtype=torch.long))
    bare = random_batch()
    bare["text"] = torch.tensor([CLS_ID, SEP_ID] + [PAD_ID] * 10).repeat(4, 1)
    bare["text_mask"] = bare["text"] != PAD_ID
    for edge in (single, one_clip, bare):
        for task, loss in losses_of(model, edge).items():
            assert torch.isfinite(loss).all() and (loss >= 0).all(), task
    masked_language = {"univl": "cmlm", "violet": "mlm", "allinone": "mlm"}.get(backbone_name)  # vatt has none
    if masked_language is not None:
        assert losses_of(model, bare)[masked_language].eq(0).all()


def test_a_float64_model_reads_a_float32_batch(backbone_name, batch):
    losses = losses_of(tiny(backbone_name).double(), batch)
    assert all(loss.dtype == torch.float64 for loss in losses.values())


def test_representations(backbone_name, batch):
    model = tiny(backbone_name).eval()
    dim = model.config.dim
    with torch.no_grad():
        text, video = model.encode_text(batch), model.encode_video(batch)
        question = model.encode_text(batch, text_key="question")
        fused = model.fused(batch, text_key="question")
        score = model.match_score(batch)
    for embedding in (text, video, question):
        assert embedding.shape == (4, dim)
        torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(4))
    assert fused.shape == (4, dim) and torch.isfinite(fused).all()
    assert score.shape == (4,) and torch.isfinite(score).all()


def test_univl_generates_captions_in_the_text_layout(batch):
    model = tiny("univl")
    captions = model.generate(batch, max_len=7)
    assert captions.dtype == torch.long and captions.shape[0] == 4 and 2 <= captions.shape[1] <= 7
    assert captions[:, 0].eq(CLS_ID).all()
    assert not captions[:, 1:].eq(CLS_ID).any()
    for row in captions.tolist():
        if SEP_ID in row:
            assert all(t == PAD_ID for t in row[row.index(SEP_ID) + 1 :])


def test_univl_can_caption_from_the_transcript(batch):
    model = tiny("univl", caption_from_transcript=True)
    losses = losses_of(model, batch)
    assert torch.isfinite(losses["decoder"]).all()
    assert model.generate(batch, max_len=5).shape[0] == 4
    assert isinstance(model, UniVL)


def test_bad_batches_fail_with_the_fix(backbone_name, batch):
    model = tiny(backbone_name)
    with pytest.raises(KeyError, match="text_mask"):
        model({k: v for k, v in batch.items() if k != "text_mask"})
    with pytest.raises(ValueError, match="vocab_size"):
        model(dict(batch, text=batch["text"] + VOCAB_SIZE))
    with pytest.raises(ValueError, match="image_size=64"):
        model(random_batch(image_size=64))
    with pytest.raises(ValueError, match="max_frames"):
        model(random_batch(frames=65))
