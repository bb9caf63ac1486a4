"""meltr.data.video: PyAV round trips, frame sampling, resize / crop, DataLoader workers, the codecs' tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meltr.data.formats import export_world, read_dataset
from meltr.data.video import VideoDecodeError, decode_video, frame_indices, resize_crop, sample_video, write_video

pytest.importorskip("av")


def frames(count=10, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 3, size, size), dtype=np.uint8)


def test_lossless_codec_round_trips_exactly(tmp_path):
    video = frames()
    path = write_video(tmp_path / "clip.mp4", video, fps=2)
    assert np.array_equal(decode_video(path).transpose(0, 3, 1, 2), video)
    # a span in seconds: frames at 1.0 s .. < 3.0 s are frames 2..5 at 2 fps
    assert np.array_equal(decode_video(path, 1.0, 3.0).transpose(0, 3, 1, 2), video[2:6])


def test_uniform_sampling_takes_segment_middles_and_random_stays_in_its_segment():
    assert frame_indices(16, 4, "uniform").tolist() == [2, 6, 10, 14]
    assert frame_indices(8, 8, "uniform").tolist() == list(range(8))
    assert frame_indices(3, 6, "uniform").tolist() == [0, 0, 1, 1, 2, 2]
    rng = np.random.default_rng(0)
    draws = np.stack([frame_indices(20, 4, "random", rng) for _ in range(200)])
    for segment in range(4):
        assert set(draws[:, segment].tolist()) == set(range(5 * segment, 5 * segment + 5))


def test_resize_crop_keeps_exact_sizes_and_crops_others():
    video = frames(2, 16).transpose(0, 2, 3, 1)
    same = resize_crop(video, 16)
    assert torch.equal(same, torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255)
    wide = np.concatenate([video, video], axis=2)  # 16 x 32
    out = resize_crop(wide, 8, crop="random", rng=np.random.default_rng(1))
    assert out.shape == (2, 3, 8, 8) and 0 <= out.min() and out.max() <= 1
    assert resize_crop(wide, 16).shape == (2, 3, 16, 16)


def test_undecodable_file_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoDecodeError, match=r"broken\.mp4"):
        decode_video(bad)
    with pytest.raises(VideoDecodeError, match="no such video file"):
        decode_video(tmp_path / "absent.mp4")


def test_yuv420p_export_is_within_the_stated_tolerance(tiny_world, tmp_path):
    export_world(tiny_world, "msrvtt", tmp_path, lossless=False)
    corpus = read_dataset("msrvtt", tmp_path, tokenizer=tiny_world.tokenizer, meta="val")
    expected = list(tiny_world.loader("test", 6))
    got = list(corpus.loader("test", 6))
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["text"], b["text"])
        # chroma subsampling blurs the world's saturated colour edges: mean error about 10 levels of 255
        assert (a["video"] - b["video"]).abs().mean() < 0.06


def test_loader_with_two_workers_gives_the_same_batches(tiny_world, tmp_path):
    export_world(tiny_world, "msrvtt", tmp_path)
    corpus = read_dataset("msrvtt", tmp_path, tokenizer=tiny_world.tokenizer, meta_fraction=0.25, n_frames=4)
    inline = list(corpus.loader("train", 4, seed=2))
    workers = list(corpus.loader("train", 4, seed=2, num_workers=2))
    assert len(inline) == len(workers) == 3
    for a, b in zip(inline, workers, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert inline[0]["video"].shape[1] == 4  # 4 of the 8 frames, one drawn per segment


def test_a_late_span_of_a_longer_video_seeks_and_keeps_exact_frames(tmp_path):
    import av

    video = frames(60, 16, seed=3)
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:  # a key frame every 10 frames, so the seek lands on frame 40
        stream = container.add_stream("libx264rgb", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        stream.options = {"crf": "0", "g": "10", "keyint_min": "10"}
        for frame in video.transpose(0, 2, 3, 1):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    assert np.array_equal(decode_video(path, 4.0, 5.0).transpose(0, 3, 1, 2), video[40:50])
    sampled = sample_video(path, 2, "uniform", start=4.0, end=5.0)
    assert np.array_equal(sampled.transpose(0, 3, 1, 2), video[[42, 47]])


@pytest.mark.parametrize(
    ("suffix", "codec", "pixel_format"),
    [(".gif", "gif", "rgb8"), (".webm", "libvpx", "yuv420p"), (".avi", "mpeg4", "yuv420p")],
)
def test_the_other_containers_decode(tmp_path, suffix, codec, pixel_format):
    import av

    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, pixel_format
        for frame in frames(5, 16).transpose(0, 2, 3, 1):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    decoded = decode_video(path)
    assert decoded.shape == (5, 16, 16, 3) and decoded.dtype == np.uint8


def test_mean_std_normalisation_is_applied_after_scaling(tiny_world, tmp_path):
    export_world(tiny_world, "msrvtt", tmp_path)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.5, 1.0)
    plain = read_dataset("msrvtt", tmp_path, tokenizer=tiny_world.tokenizer, meta_fraction=0.0)
    scaled = read_dataset("msrvtt", tmp_path, tokenizer=tiny_world.tokenizer, meta_fraction=0.0, mean=mean, std=std)
    a, b = next(iter(plain.loader("test", 3))), next(iter(scaled.loader("test", 3)))
    expected = (a["video"] - torch.tensor(mean).view(1, 1, 3, 1, 1)) / torch.tensor(std).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(b["video"], expected)
    with pytest.raises(ValueError, match=r"data\.std must be positive"):
        read_dataset("msrvtt", tmp_path, tokenizer=tiny_world.tokenizer, std=(1.0, 1.0, 1.0))
