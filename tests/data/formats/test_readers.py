"""Reader options and bad inputs: missing files, malformed rows, undecodable videos, ids without a partner."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from meltr.cli.main import main
from meltr.data.formats import FormatError, carve_meta, export_world, read_dataset
from meltr.data.video import VideoDecodeError, write_video

pytest.importorskip("av")


@pytest.fixture
def msrvtt(tiny_world, tmp_path):
    export_world(tiny_world, "msrvtt", tmp_path)
    return tmp_path


def read(root, world, fmt="msrvtt", **options):
    return read_dataset(fmt, root, tokenizer=world.tokenizer, **options)


def test_msrvtt_splits_7k_json_and_per_caption(msrvtt, tiny_world):
    nine = read(msrvtt, tiny_world, meta_fraction=0.0)
    seven = read(msrvtt, tiny_world, split="7k", meta_fraction=0.0)
    assert len(nine["train"]) == 12 and len(seven["train"]) == round(12 * 7 / 9)
    assert [len(c) for c in nine["test"].captions] == [1] * 6  # JSFusion: one query caption per video
    json_split = read(msrvtt, tiny_world, split="json", meta="val")
    assert [len(json_split[s]) for s in ("train", "meta", "test")] == [12, 4, 6]
    assert json_split["test"].captions == tiny_world["test"].captions  # captioning: every reference
    pairs = read(msrvtt, tiny_world, per_caption=True, meta_fraction=0.0)
    assert len(pairs["train"]) == sum(len(c) for c in tiny_world["train"].captions)


def test_meta_split_is_seeded_carved_from_train_and_recorded(msrvtt, tiny_world):
    corpus = read(msrvtt, tiny_world, meta_fraction=0.25, seed=4)
    again = read(msrvtt, tiny_world, meta_fraction=0.25, seed=4)
    other = read(msrvtt, tiny_world, meta_fraction=0.25, seed=5)
    meta = corpus.provenance["meta"]
    assert meta["from"] == "train" and meta["seed"] == 4 and len(meta["ids"]) == 3
    assert meta["ids"] == list(corpus["meta"].ids) == list(again["meta"].ids) != list(other["meta"].ids)
    assert not set(corpus["meta"].ids) & set(corpus["train"].ids)
    assert carve_meta(10, 0.3, 0).tolist() == carve_meta(10, 0.3, 0).tolist()


def test_transcript_is_optional(msrvtt, tiny_world):
    path = msrvtt / "MSRVTT_data.json"
    data = json.loads(path.read_text())
    for video in data["videos"]:
        del video["transcript"]
    path.write_text(json.dumps(data))
    batch = next(iter(read(msrvtt, tiny_world).loader("train", 2)))
    assert "transcript" not in batch and "text" in batch


def test_missing_file_names_the_file_and_the_format(msrvtt, tiny_world):
    (msrvtt / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"msrvtt: .*MSRVTT_JSFUSION_test\.csv is missing"):
        read(msrvtt, tiny_world)
    with pytest.raises(FileNotFoundError, match=r"youcook2: .*youcookii_data\.pickle is missing"):
        read(msrvtt, tiny_world, "youcook2")


def test_malformed_csv_row_names_file_line_and_field(msrvtt, tiny_world):
    path = msrvtt / "MSRVTT_JSFUSION_test.csv"
    lines = path.read_text().splitlines()
    lines[3] = "ret2,msr2,,a caption"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=r"MSRVTT_JSFUSION_test\.csv: line 4: field 'video_id' is empty"):
        read(msrvtt, tiny_world)


def test_malformed_json_entry_names_file_entry_and_field(msrvtt, tiny_world):
    path = msrvtt / "MSRVTT_data.json"
    data = json.loads(path.read_text())
    del data["sentences"][5]["caption"]
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"MSRVTT_data\.json: sentences\[5\]: missing field 'caption'"):
        read(msrvtt, tiny_world)
    path.write_text("{not json")
    with pytest.raises(FormatError, match=r"MSRVTT_data\.json: line 1, column 2"):
        read(msrvtt, tiny_world)


def test_malformed_tsv_and_pickle_fields(tiny_world, tmp_path):
    export_world(tiny_world, "tgifqa", tmp_path / "tgif")
    path = tmp_path / "tgif" / "Train_action_question.csv"
    lines = path.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[7] = "seven"
    lines[1] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=r"Train_action_question\.csv: line 2: field 'answer' = 'seven' is not a int"):
        read(tmp_path / "tgif", tiny_world, "tgifqa")
    export_world(tiny_world, "youcook2", tmp_path / "yc")
    data_path = tmp_path / "yc" / "youcookii_data.pickle"
    data = pickle.loads(data_path.read_bytes())
    data["train_00000"]["end"][1] = "soon"
    data_path.write_bytes(pickle.dumps(data))
    with pytest.raises(FormatError, match=r"\['train_00000'\] segment 1: field 'end' = 'soon' is not a float"):
        read(tmp_path / "yc", tiny_world, "youcook2")


def test_undecodable_video_is_refused_or_skipped_never_zeros(msrvtt, tiny_world):
    (msrvtt / "videos" / "video3.mp4").write_bytes(b"\x00\x00 broken")
    with pytest.raises(VideoDecodeError, match=r"video3\.mp4.*data\.on_bad_video: skip"):
        read(msrvtt, tiny_world)
    with pytest.warns(UserWarning, match=r"1 video\(s\) do not decode and were skipped: .*video3\.mp4"):
        corpus = read(msrvtt, tiny_world, on_bad_video="skip", meta_fraction=0.0)
    assert "video3" not in corpus["train"].ids and len(corpus["train"]) == 11
    # not verified up front: decoding fails when the sample is read, naming the file
    lazy = read(msrvtt, tiny_world, verify_videos=False, meta_fraction=0.0)
    with pytest.raises(VideoDecodeError, match=r"video3\.mp4"):
        list(lazy.loader("train", 4, shuffle=False))


def test_ids_without_video_and_videos_without_captions_are_counted(msrvtt, tiny_world):
    (msrvtt / "videos" / "video1.mp4").unlink()
    write_video(msrvtt / "videos" / "stray.mp4", np.zeros((2, 3, 16, 16), np.uint8))
    with pytest.warns(UserWarning) as caught:
        corpus = read(msrvtt, tiny_world, meta_fraction=0.0)
    messages = [str(w.message) for w in caught]
    assert any("1 video id(s) of MSRVTT_data.json have no video" in m and "video1" in m for m in messages)
    assert any("1 video(s) in" in m and "no annotation" in m and "stray" in m for m in messages)
    assert len(corpus.report) == 2 and "video1" not in corpus["train"].ids


def test_folder_of_videos_with_csv_or_json_captions(tmp_path, tiny_world):
    video = tiny_world["train"].video
    for i in range(3):
        write_video(tmp_path / "videos" / f"clip{i}.mp4", video[i])
    (tmp_path / "captions.csv").write_text(
        "video,caption,split\nclip0.mp4,a red square,train\nclip0.mp4,a square,train\nclip1,a circle,train\n"
        "clip2,a cross,test\n"
    )
    corpus = read(tmp_path, tiny_world, "folder", meta_fraction=0.0)
    assert corpus["train"].captions == (("a red square", "a square"), ("a circle",))
    batch = next(iter(corpus.loader("test", 1)))
    assert torch.equal(batch["video"][0], torch.from_numpy(video[2]).float() / 255)
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.json").write_text(json.dumps([{"video": "clip1", "caption": "x", "split": "val"}]))
    assert len(read(tmp_path, tiny_world, "folder", meta="val")["meta"]) == 1
    (tmp_path / "captions.json").write_text(json.dumps([{"video": "clip1", "caption": "x", "split": "dev"}]))
    with pytest.raises(FormatError, match=r"captions\.json: entry 0: field 'split' = 'dev'"):
        read(tmp_path, tiny_world, "folder")


def test_world_export_cli_writes_a_readable_dataset(tmp_path, capsys):
    out = tmp_path / "msvd"
    assert (
        main(
            [
                "world",
                "export",
                "--format",
                "msvdqa",
                "--out",
                str(out),
                "--n-train",
                "3",
                "--n-meta",
                "1",
                "--n-test",
                "2",
            ]
        )
        == 0
    )
    assert "msvdqa" in capsys.readouterr().out
    corpus = read_dataset("msvdqa", out, meta="val")  # the default tokenizer: BERT WordPiece
    assert [len(corpus[s]) for s in ("train", "meta", "test")] == [3, 1, 2]
    batch = next(iter(corpus.loader("test", 2)))
    assert batch["question"][0, 0].item() == corpus.tokenizer.cls_id == 101


def test_unknown_option_names_the_format(msrvtt, tiny_world):
    with pytest.raises(TypeError, match=r"data format .msrvtt.*colour"):
        read(msrvtt, tiny_world, colour="red")


def test_answers_outside_the_vocabulary_are_dropped_from_training_and_wrong_in_test(tiny_world, tmp_path):
    export_world(tiny_world, "msvdqa", tmp_path)
    questions = json.loads((tmp_path / "txt_msvd-qa.json").read_text())
    rare = questions["test"][0]["answer"]
    vocabulary = json.loads((tmp_path / "ans_msvd-qa.json").read_text())
    del vocabulary[rare]
    (tmp_path / "ans_msvd-qa.json").write_text(json.dumps(vocabulary))
    counts = {split: sum(q["answer"] == rare for q in rows) for split, rows in questions.items()}
    with pytest.warns(UserWarning, match=rf"{counts['test']} test question\(s\) have an answer outside"):
        corpus = read(tmp_path, tiny_world, "msvdqa", meta="val")
    assert rare not in corpus.answers and len(corpus.answers) == len(vocabulary)
    sizes = {name: len(corpus[name].answers) for name in ("train", "meta", "test")}
    assert sizes == {
        "train": len(questions["train"]) - counts["train"],
        "meta": len(questions["val"]) - counts["val"],
        "test": len(questions["test"]),
    }
    assert (corpus["test"].answers == -1).sum() == counts["test"] > 0
    assert (corpus["train"].answers >= 0).all()
