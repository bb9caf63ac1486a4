"""MSRVTT in the layout of UniVL's and CLIP4Clip's code.

Files (under the dataset's root)::

    MSRVTT_data.json           {"videos": [{"video_id", "split", ...}], "sentences": [{"video_id", "caption", ...}]}
    MSRVTT_train.9k.csv        column video_id: the 9k training videos
    MSRVTT_train.7k.csv        column video_id: the 7k training videos
    MSRVTT_JSFUSION_test.csv   columns key, vid_key, video_id, sentence: the 1,000 test pairs
    videos/                    video0.mp4 ... (or a feature pickle / folder named by data.features)

``split: 9k`` or ``7k`` trains on the csv's videos with every caption of the json and tests on the JSFusion pairs
(one caption per video, the retrieval setting); ``split: json`` uses the json's ``split`` field (``train`` /
``validate`` / ``test``, the captioning setting, every caption). A ``transcript`` field on a ``videos`` entry
(MELTR's ASR addition) is the clip's transcript when present. ``per_caption: true`` makes one example per
(video, caption) pair, as CLIP4Clip trains.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from meltr.data.formats.common import (
    FormatError,
    ReadOptions,
    assemble,
    entry_field,
    need,
    read_json,
    read_rows,
)
from meltr.data.formats.corpus import Corpus, Example, TextTokenizer
from meltr.data.formats.writing import WORLD_TO_BENCHMARK, ExportOptions, write_json, write_media, write_table

NAME = "msrvtt"
SPLITS = ("9k", "7k", "json")
JSON_SPLITS = {"train": "train", "validate": "val", "test": "test"}


def read_msrvtt(
    root: str | Path,
    tokenizer: TextTokenizer,
    options: ReadOptions | None = None,
    *,
    split: str = "9k",
    per_caption: bool = False,
) -> Corpus:
    """Read MSRVTT (module docstring) into a :class:`~meltr.data.formats.corpus.Corpus`.

    Args:
        root: the dataset's folder.
        tokenizer: tokenizes captions and transcripts.
        options: videos / features, frames, meta split, token lengths.
        split: ``9k``, ``7k`` or ``json``.
        per_caption: one training example per (video, caption) pair instead of per video.
    """
    options = options or ReadOptions()
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"msrvtt: split must be one of {SPLITS}, got {split!r}")
    data_path = need(root, "MSRVTT_data.json", NAME, "the videos and their captions")
    data = read_json(data_path)
    for name in ("videos", "sentences"):
        if not isinstance(data, dict) or not isinstance(data.get(name), list):
            raise FormatError(f"{data_path}: top level: missing list field {name!r}")
    captions: dict[str, list[str]] = defaultdict(list)
    for i, sentence in enumerate(data["sentences"]):
        where = f"sentences[{i}]"
        video_id = str(entry_field(sentence, "video_id", data_path, where))
        captions[video_id].append(str(entry_field(sentence, "caption", data_path, where)))
    videos: dict[str, dict[str, Any]] = {}
    for i, video in enumerate(data["videos"]):
        videos[str(entry_field(video, "video_id", data_path, f"videos[{i}]"))] = video

    def example(video_id: str, texts: list[str]) -> Example:
        return Example(video_id, tuple(texts), str(videos.get(video_id, {}).get("transcript", "")))

    examples: dict[str, list[Example]] = {}
    if split == "json":
        by_split: dict[str, list[str]] = defaultdict(list)
        for i, (video_id, video) in enumerate(videos.items()):
            name = str(entry_field(video, "split", data_path, f"videos[{i}]"))
            if name not in JSON_SPLITS:
                raise FormatError(
                    f"{data_path}: videos[{i}]: field 'split' = {name!r} is not one of {list(JSON_SPLITS)}"
                )
            by_split[JSON_SPLITS[name]].append(video_id)
        for name, ids in by_split.items():
            examples[name] = [example(v, captions[v]) for v in ids]
    else:
        train_path = need(root, f"MSRVTT_train.{split}.csv", NAME, f"the {split} training videos")
        train_ids = [row["video_id"] for _, row in read_rows(train_path, ["video_id"])]
        test_path = need(root, "MSRVTT_JSFUSION_test.csv", NAME, "the 1k test pairs")
        test_rows = read_rows(test_path, ["key", "vid_key", "video_id", "sentence"])
        examples["train"] = [example(v, captions[v]) for v in train_ids]
        examples["test"] = [example(row["video_id"], [row["sentence"]]) for _, row in test_rows]
        taken = set(train_ids) | {row["video_id"] for _, row in test_rows}
        val = [v for v, video in videos.items() if video.get("split") == "validate" and v not in taken]
        if val:
            examples["val"] = [example(v, captions[v]) for v in val]
    for name, split_examples in examples.items():
        without = [e.video_id for e in split_examples if not e.captions]
        if without:
            raise FormatError(
                f"{data_path}: sentences: no caption for {len(without)} video(s) of the {name} split, e.g. "
                f"{without[0]!r}"
            )
    if per_caption:
        examples["train"] = [
            Example(e.video_id, (caption,), e.transcript) for e in examples["train"] for caption in e.captions
        ]
    unused = sorted(set(captions) - set(videos))
    notes = (
        [f"msrvtt: {len(unused)} video id(s) of sentences are not in videos: {', '.join(unused[:5])}"] if unused else []
    )
    corpus = assemble(
        NAME,
        root,
        examples,
        options,
        tokenizer,
        default_videos="videos",
        annotation_file=data_path.name,
        notes=notes,
    )
    corpus.provenance["split"] = split
    return corpus


def export_msrvtt(world, out: Path, options: ExportOptions) -> list[Path]:
    """Write the train / meta / test splits of ``world`` as MSRVTT (train -> 9k csv and json ``train``, meta ->
    json ``validate``, test -> json ``test`` and the JSFusion csv with each clip's first caption).

    Video ids are ``video{k}``, numbered across train, meta and test. The 7k csv lists the first 7/9 of train.
    """
    videos_json, sentences, media = [], [], {}
    ids: dict[str, list[str]] = {}
    number = 0
    for world_split, benchmark_split in WORLD_TO_BENCHMARK.items():
        split = world[world_split]
        ids[world_split] = []
        for i in range(len(split)):
            video_id = f"video{number}"
            number += 1
            ids[world_split].append(video_id)
            media[video_id] = split.video[i]
            json_split = {"train": "train", "val": "validate", "test": "test"}[benchmark_split]
            videos_json.append({"video_id": video_id, "split": json_split, "transcript": split.transcripts[i]})
            for caption in split.captions[i]:
                sentences.append({"video_id": video_id, "caption": caption, "sen_id": len(sentences)})
    write_json(out / "MSRVTT_data.json", {"videos": videos_json, "sentences": sentences})
    train = ids["train"]
    write_table(out / "MSRVTT_train.9k.csv", ["video_id"], [[v] for v in train])
    write_table(out / "MSRVTT_train.7k.csv", ["video_id"], [[v] for v in train[: round(len(train) * 7 / 9)]])
    test = world["test"]
    rows = [[f"ret{i}", f"msr{i}", v, test.captions[i][0]] for i, v in enumerate(ids["test"])]
    write_table(out / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"], rows)
    write_media(out, media, options, folder="videos", pickle_name="msrvtt_videos_features.pickle")
    return sorted(out.iterdir())
