import dataclasses

import pytest

from meltr.data import WorldConfig


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_train", -1),
        ("n_test", -5),
        ("n_pretrain", 2.5),
        ("misaligned_fraction", 1.5),
        ("misaligned_fraction", -0.1),
        ("n_frames", 4),
        ("image_size", 8),
        ("audio_samples", 16),
        ("pixel_noise", -0.01),
        ("n_captions", 0),
        ("max_objects", 9),
        ("misaligned_splits", ("validation",)),
        ("text_len", 2),
    ],
)
def test_bad_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"WorldConfig\.{field}\b"):
        WorldConfig(**{field: value})


def test_every_field_has_help_text():
    helps = WorldConfig.help()
    assert set(helps) == {f.name for f in dataclasses.fields(WorldConfig)}
    assert all(len(text) > 10 for text in helps.values())


def test_fingerprint_follows_the_config():
    assert WorldConfig().fingerprint() == WorldConfig().fingerprint()
    assert WorldConfig(seed=1).fingerprint() != WorldConfig().fingerprint()


def test_split_size_names_unknown_splits():
    assert WorldConfig(n_meta=3).split_size("meta") == 3
    with pytest.raises(KeyError, match="pretrain, train, meta, test"):
        WorldConfig().split_size("val")
