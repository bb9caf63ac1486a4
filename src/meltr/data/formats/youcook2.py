"""YouCook2 in the layout of UniVL's code: one example per caption segment.

Files (under the dataset's root)::

    youcookii_train.csv          columns video_id, feature_file: the training videos
    youcookii_val.csv            columns video_id, feature_file: the validation videos (UniVL's test split)
    youcookii_data.pickle        {video_id: {"start": [s], "end": [s], "text": [str], "transcript": [str]}}
    videos/                      {video_id}.mp4 ... (or the feature pickle named by data.features,
                                 youcookii_videos_features.pickle in UniVL: {video_id: float[T, 1024]} at 1 fps)

Segment ``k`` of a video spans ``[start[k], end[k])`` seconds; its caption is ``text[k]`` and its transcript
``transcript[k]`` (``NONE`` when the ASR had nothing, read as no transcript). With features, the segment's rows
are ``[floor(start * fps), ceil(end * fps))``. The pickle is unpickled because you point the reader at its folder.
"""

from __future__ import annotations

from pathlib import Path

from meltr.data.formats.common import FormatError, ReadOptions, assemble, convert, need, read_pickle, read_rows
from meltr.data.formats.corpus import Corpus, Example, TextTokenizer
from meltr.data.formats.writing import ExportOptions, write_media, write_pickle, write_table

NAME = "youcook2"
FIELDS = ("start", "end", "text")


def read_youcook2(root: str | Path, tokenizer: TextTokenizer, options: ReadOptions | None = None) -> Corpus:
    """Read YouCook2 (module docstring) into a :class:`~meltr.data.formats.corpus.Corpus` (train, test = val)."""
    options = options or ReadOptions()
    root = Path(root)
    data_path = need(root, "youcookii_data.pickle", NAME, "the segments' times, captions and transcripts")
    data = read_pickle(data_path)
    if not isinstance(data, dict):
        raise FormatError(f"{data_path}: top level: expected a dict video_id -> segments, got {type(data).__name__}")
    examples: dict[str, list[Example]] = {}
    spans: dict[str, tuple[float, float]] = {}
    notes = []
    for split, file in (("train", "youcookii_train.csv"), ("test", "youcookii_val.csv")):
        csv_path = need(root, file, NAME, f"the {split} videos")
        examples[split] = []
        for line, row in read_rows(csv_path, ["video_id", "feature_file"]):
            video_id = row["video_id"]
            if video_id not in data:
                notes.append(
                    f"{NAME}: {csv_path.name} line {line}: video {video_id!r} has no entry in {data_path.name}"
                )
                continue
            entry = data[video_id]
            for name in FIELDS:
                if not isinstance(entry, dict) or name not in entry:
                    raise FormatError(f"{data_path}: [{video_id!r}]: missing field {name!r}")
            count = len(entry["text"])
            transcripts = entry.get("transcript", ["NONE"] * count)
            for name, values in (("start", entry["start"]), ("end", entry["end"]), ("transcript", transcripts)):
                if len(values) != count:
                    raise FormatError(
                        f"{data_path}: [{video_id!r}]: field {name!r} has {len(values)} entries, 'text' has {count}"
                    )
            for k in range(count):
                where = f"[{video_id!r}] segment {k}"
                start = convert(entry["start"][k], float, data_path, where, "start")
                end = convert(entry["end"][k], float, data_path, where, "end")
                if not end > start:
                    raise FormatError(f"{data_path}: {where}: field 'end' = {end} is not after 'start' = {start}")
                transcript = str(transcripts[k])
                key = f"{video_id}#{k}"
                spans[key] = (start, end)
                examples[split].append(
                    Example(video_id, (str(entry["text"][k]),), "" if transcript == "NONE" else transcript, key=key)
                )
    return assemble(
        NAME,
        root,
        examples,
        options,
        tokenizer,
        default_videos="videos",
        annotation_file=data_path.name,
        spans=spans,
        notes=notes,
    )


def export_youcook2(world, out: Path, options: ExportOptions, clips_per_video: int = 3) -> list[Path]:
    """Write ``world``'s train and test splits as YouCook2 (test -> ``youcookii_val.csv``, as UniVL evaluates).

    Every ``clips_per_video`` consecutive clips become the segments of one video (their frames one after the
    other, ``n_frames / fps`` seconds each); a segment's caption is its clip's first caption (YouCook2 has one
    per segment). The meta split is not written: YouCook2 has no third split (read with ``meta: train``).
    """
    data, media = {}, {}
    for world_split, file in (("train", "youcookii_train.csv"), ("test", "youcookii_val.csv")):
        split = world[world_split]
        rows = []
        for first in range(0, len(split), clips_per_video):
            members = range(first, min(first + clips_per_video, len(split)))
            video_id = f"{world_split}_{first // clips_per_video:05d}"
            seconds = split.video.shape[1] / options.fps
            data[video_id] = {
                "start": [k * seconds for k in range(len(members))],
                "end": [(k + 1) * seconds for k in range(len(members))],
                "text": [split.captions[i][0] for i in members],
                "transcript": [split.transcripts[i] or "NONE" for i in members],
            }
            media[video_id] = split.video[members.start : members.stop].reshape(-1, *split.video.shape[2:])
            rows.append([video_id, f"{video_id}.npy"])
        write_table(out / file, ["video_id", "feature_file"], rows)
    write_pickle(out / "youcookii_data.pickle", data)
    write_media(out, media, options, folder="videos", pickle_name="youcookii_videos_features.pickle")
    return sorted(out.iterdir())
