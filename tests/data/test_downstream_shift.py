"""The downstream shift: train / meta / test differ from pre-training; pre-training is untouched."""

import numpy as np
import pytest

from meltr.data import DownstreamShift, WorldConfig, make_world

SIZES = {"n_pretrain": 6, "n_train": 6, "n_meta": 3, "n_test": 3}


def test_no_shift_keeps_worlds_and_fingerprints():
    assert WorldConfig(downstream={}).fingerprint() == WorldConfig().fingerprint()
    assert WorldConfig(downstream={"channel_order": "bgr"}).fingerprint() != WorldConfig().fingerprint()


@pytest.mark.parametrize("order", ["bgr", "gbr"])
def test_channel_order_permutes_downstream_frames_only(order):
    plain = make_world(**SIZES)
    shifted = make_world(**SIZES, downstream={"channel_order": order})
    index = ["rgb".index(c) for c in order]
    np.testing.assert_array_equal(shifted["pretrain"].video, plain["pretrain"].video)
    for split in ("train", "meta", "test"):
        np.testing.assert_array_equal(shifted[split].video, plain[split].video[:, :, index])
        assert shifted[split].captions == plain[split].captions  # the scenes and their text are unchanged
        assert not np.array_equal(shifted[split].video, plain[split].video)


def test_noise_override_applies_to_downstream_splits_only():
    plain = make_world(**SIZES)
    shifted = make_world(**SIZES, downstream={"pixel_noise": 0.3})
    np.testing.assert_array_equal(shifted["pretrain"].video, plain["pretrain"].video)
    same_noise = make_world(**SIZES, pixel_noise=0.3)
    np.testing.assert_array_equal(shifted["test"].video, same_noise["test"].video)
    assert not np.array_equal(shifted["test"].video, plain["test"].video)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"channel_order": "rgba"}, "channel_order"),
        ({"pixel_noise": -1.0}, "pixel_noise"),
        ({"pixel_noise": float("inf")}, "pixel_noise"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_shift_names_the_field(value, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(downstream=value)


def test_shift_is_a_dataclass_with_help():
    assert DownstreamShift().is_identity
    assert not DownstreamShift(channel_order="bgr").is_identity
    assert set(WorldConfig.help()) >= {"downstream"}
