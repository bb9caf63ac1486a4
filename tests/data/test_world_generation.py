import dataclasses

import numpy as np
import pytest

from meltr.data import COLOURS, EVENT_CLASSES, SHAPES, WorldConfig, make_world, scene_facts
from meltr.data.language import sentiment_score
from meltr.data.lexicon import ANSWERS, NUMBER_WORDS, PALETTE, SIZE_FRACTION
from meltr.data.render import shape_mask
from meltr.data.world import generate_split

TINY = WorldConfig(seed=3, n_pretrain=0, n_train=12, n_meta=0, n_test=6, misaligned_fraction=0.5)


def _same_split(a, b):
    return (
        np.array_equal(a.video, b.video)
        and np.array_equal(a.audio, b.audio)
        and a.captions == b.captions
        and a.transcripts == b.transcripts
        and np.array_equal(a.text_source, b.text_source)
        and np.array_equal(a.question_ids, b.question_ids)
        and np.array_equal(a.answers, b.answers)
    )


def test_same_seed_same_world_other_seed_other_world():
    first, again = make_world(TINY), make_world(TINY)
    other = make_world(dataclasses.replace(TINY, seed=4))
    for name in ("train", "test"):
        assert _same_split(first.splits[name], again.splits[name])
        assert not np.array_equal(first.splits[name].video, other.splits[name].video)
        assert first.splits[name].captions != other.splits[name].captions
        assert not np.allclose(first.splits[name].audio, other.splits[name].audio)


def test_clips_do_not_depend_on_the_split_size():
    small = generate_split(dataclasses.replace(TINY, n_test=3), "test")
    large = generate_split(TINY, "test")
    assert np.array_equal(small.video, large.video[:3])
    assert small.captions == large.captions[:3]


def test_shapes_and_value_ranges(world):
    config = world.config
    split = world.splits["test"]
    n = config.n_test
    assert split.video.shape == (n, config.n_frames, 3, config.image_size, config.image_size)
    assert split.video.dtype == np.uint8
    assert split.audio.shape == (n, config.audio_samples) and split.audio.dtype == np.float32
    assert split.labels.min() >= 0 and split.labels.max() < len(EVENT_CLASSES)
    assert all(len(c.annotation.captions) >= 3 for c in split.clips)
    assert np.all(np.abs(split.sentiment) <= 3.0)
    assert len(np.unique(split.labels)) >= 8  # labels spread over the classes


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 1.0])
def test_misalignment_flips_exactly_the_requested_fraction(fraction):
    config = dataclasses.replace(TINY, n_train=30, misaligned_fraction=fraction)
    split = generate_split(config, "train")
    misaligned = split.misaligned
    assert misaligned.sum() == round(fraction * 30)
    for i, clip in enumerate(split.clips):
        source = int(split.text_source[i])
        assert misaligned[i] == (source != i)
        assert split.captions[i] == split.clips[source].annotation.captions
        assert split.transcripts[i] == split.clips[source].annotation.transcript
        if misaligned[i]:
            assert split.captions[i] != clip.annotation.captions  # really another clip's text
    assert not generate_split(config, "test").misaligned.any()  # meta and test stay clean by default


def test_misaligned_flags_reach_the_batches(world):
    batch = next(iter(world.loader("train", batch_size=64, shuffle=False)))
    assert batch["misaligned"].sum().item() == round(0.25 * 64)
    assert np.array_equal(batch["misaligned"].numpy(), world.splits["train"].misaligned)


def test_captions_mention_the_true_attributes(world):
    for split in world.splits.values():
        for clip in split.clips:
            scene = clip.scene
            shapes = {o.shape for o in scene.objects}
            colours = {c for o in scene.objects for c in (o.colour, o.final_colour)}
            truth = scene_facts(scene)
            for text, facts in zip(clip.annotation.captions, clip.annotation.caption_facts, strict=True):
                words = set(text.split())
                assert facts <= truth, text
                assert words & {scene.subject.shape, scene.subject.colour}, text
                assert words & set(SHAPES) <= shapes, text
                assert words & set(COLOURS) <= colours, text


def _subject_pixels(split, i, frame):
    """The rendered pixels covered by the clip's subject at ``frame``: float [P, 3] in [0, 1]."""
    size = split.video.shape[-1]
    track = split.clips[i].scene.tracks[-1]
    centres = np.arange(size) + 0.5
    mask = shape_mask(
        split.clips[i].scene.subject.shape,
        centres[None, :] - track.x[frame] * size,
        centres[:, None] - track.y[frame] * size,
        track.half[frame] * size,
    )
    return split.video[i, frame].transpose(1, 2, 0)[mask] / 255.0


def _nearest_colour(rgb):
    palette = np.array([PALETTE[c] for c in COLOURS])
    return COLOURS[int(np.argmin(((palette - rgb) ** 2).sum(axis=1)))]


def test_frame_questions_match_the_rendered_pixels(world):
    checked = {"colour": 0, "count": 0, "size": 0}
    for split in world.splits.values():
        for i, clip in enumerate(split.clips):
            tracks = clip.scene.tracks
            for qa in clip.annotation.qa:
                if qa.qa_type != "frame":
                    continue
                assert qa.frame in (0, world.config.n_frames - 1)
                if qa.question.startswith("what colour"):
                    pixels = _subject_pixels(split, i, qa.frame)
                    assert len(pixels) >= 4
                    assert _nearest_colour(np.median(pixels, axis=0)) == qa.answer, qa
                    checked["colour"] += 1
                elif qa.question.startswith("how many"):
                    assert qa.answer == NUMBER_WORDS[sum(t.visible[qa.frame] for t in tracks)]
                    checked["count"] += 1
                elif "small or large" in qa.question or "what size" in qa.question:
                    assert abs(tracks[-1].half[qa.frame] - SIZE_FRACTION[qa.answer]) < 1e-6
                    checked["size"] += 1
    assert min(checked.values()) >= 10, checked


def test_action_transition_and_open_answers_follow_the_events(world):
    seen = set()
    for clip in world.splits["test"].clips:
        subject = clip.scene.subject
        events = subject.events
        for qa in clip.annotation.qa:
            assert qa.answer in ANSWERS
            seen.add(qa.qa_type)
            if qa.qa_type == "action":
                (event,) = events
                assert qa.answer in (event.kind, NUMBER_WORDS[event.count])
                if qa.question.startswith("how many times"):
                    assert qa.answer == NUMBER_WORDS[event.count]
            elif qa.qa_type == "transition":
                first, second = events
                if " after " in qa.question or qa.question.endswith("last"):
                    assert qa.answer == second.kind
                else:
                    assert qa.answer == first.kind
            elif qa.question.startswith("where") or "which way" in qa.question or "direction" in qa.question:
                assert qa.answer == next(e.direction for e in events if e.kind == "move")
            elif qa.question.startswith(("what ", "who ", "which shape ")) and qa.answer in SHAPES:
                assert qa.answer == subject.shape
    assert seen == {"action", "transition", "frame", "open"}


def test_blink_count_is_visible_in_the_pixels(world):
    """A subject that blinks n times is missing from exactly n frames of the video."""
    checked = 0
    for split in world.splits.values():
        for i, clip in enumerate(split.clips):
            event = clip.scene.subject.events[0]
            if event.kind != "blink":
                continue
            colour = np.array(PALETTE[clip.scene.subject.colour])
            missing = sum(
                np.abs(np.median(_subject_pixels(split, i, f), axis=0) - colour).max() > 0.25
                for f in range(world.config.n_frames)
            )
            assert missing == event.count
            checked += 1
    assert checked >= 3


def test_sentiment_depends_on_video_and_text(world):
    assert sentiment_score(1.0, 0.0) > sentiment_score(-1.0, 0.0)
    assert sentiment_score(0.0, 1.0) > sentiment_score(0.0, -1.0)
    assert sentiment_score(10.0, 10.0) == 3.0 and sentiment_score(-10.0, -10.0) == -3.0
    clips = [c for s in world.splits.values() for c in s.clips]
    score = np.array([c.annotation.sentiment for c in clips])
    video = np.array([c.scene.video_valence() for c in clips])
    text = np.array([c.annotation.text_valence for c in clips])
    assert np.corrcoef(video, score)[0, 1] > 0.3
    assert np.corrcoef(text, score)[0, 1] > 0.3
    # the text part is in the transcript: the adjective is spoken (unless the ASR dropped it)
    opinion_words = {
        "wonderful",
        "lovely",
        "great",
        "nice",
        "good",
        "pleasant",
        "dull",
        "boring",
        "bad",
        "ugly",
        "awful",
        "terrible",
    }
    spoken = [bool(set(c.annotation.transcript.split()) & opinion_words) for c in clips if c.annotation.text_valence]
    assert np.mean(spoken) > 0.7


def test_audio_carries_the_move_direction(world):
    """The subject's move is a tone whose frequency names the direction: it dominates the other move tones."""
    from meltr.data.render import _MOVE_TONE

    hits, total = 0, 0
    config = world.config
    per_frame = config.audio_samples // config.n_frames
    for split in world.splits.values():
        for i, clip in enumerate(split.clips):
            for event in clip.scene.subject.events:
                if event.kind != "move":
                    continue
                segment = split.audio[i, event.start * per_frame : event.end * per_frame]
                n = np.arange(len(segment))
                power = {d: abs(np.sum(segment * np.exp(-2j * np.pi * f * n))) for d, f in _MOVE_TONE.items()}
                hits += max(power, key=power.get) == event.direction
                total += 1
    assert total >= 10 and hits / total > 0.9
