"""Video QA: TGIF-QA (the original tsv release, or the json of Violet's code) and MSVD-QA (Violet's json).

TGIF-QA, tsv release (tab-separated, with a header)::

    Train_action_question.csv       gif_name question a1 a2 a3 a4 a5 answer vid_id key   (answer: 0-4)
    Test_action_question.csv
    Train_transition_question.csv   (same columns as action)
    Test_transition_question.csv
    Train_frameqa_question.csv      gif_name question answer type vid_id key              (answer: a word)
    Test_frameqa_question.csv
    gifs/                           {gif_name}.gif (or .mp4, ...)

TGIF-QA, Violet's json (``layout: json``)::

    txt_tgif-action.json       {"train": [{"video", "question", "option": [5], "answer": 0-4}], "val", "test"}
    txt_tgif-transition.json   (same)
    txt_tgif-frame.json        {"train": [{"video", "question", "answer": word}], ...}
    gifs/

MSVD-QA, Violet's json::

    txt_msvd-qa.json           {"train": [{"video", "question", "answer": word}], "val": [...], "test": [...]}
    ans_msvd-qa.json           {answer: index}, the answer vocabulary
    videos/                    {video}.avi (or .mp4, ...)

Each video is one clip with all its questions (the world's layout: ``qa="all"`` gives one sample per question);
videos are ordered by name, questions by task (action, transition, frame) then by row. A multiple-choice answer is
its option's word. The answer vocabulary is ``answers`` (a list or a json file: a list, or ``{answer: index}``),
else the format's vocabulary file, else every answer of the train split, most frequent first. A question whose
answer is not in the vocabulary is dropped from train and val and scored as wrong in test (``answer`` = -1); both
are reported.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meltr.data.formats.common import (
    FormatError,
    ReadOptions,
    assemble,
    convert,
    entry_field,
    need,
    read_json,
    read_rows,
)
from meltr.data.formats.corpus import Corpus, Example, TextTokenizer
from meltr.data.formats.writing import WORLD_TO_BENCHMARK, ExportOptions, write_json, write_media, write_table
from meltr.data.lexicon import ANSWERS, QA_TYPES
from meltr.data.world import clip_seed

TGIF_TASKS: dict[str, str] = {"action": "action", "transition": "transition", "frameqa": "frame"}
"""TGIF-QA's tasks (file names) and the QA type each is scored as (per-type accuracy)."""
MULTIPLE_CHOICE = ("action", "transition")
VIOLET_FILES = {
    "action": "txt_tgif-action.json",
    "transition": "txt_tgif-transition.json",
    "frameqa": "txt_tgif-frame.json",
}
MC_COLUMNS = ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer")
SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}

Question = tuple[str, str, str]  # (video, question, answer word) with the QA type known by the caller


def _mc_answer(options: Sequence[str], index: Any, path: Path, where: str) -> str:
    choice = convert(index, int, path, where, "answer")
    if not 0 <= choice < len(options):
        raise FormatError(f"{path}: {where}: field 'answer' = {choice} is not an option index 0-{len(options) - 1}")
    return str(options[choice])


def _tgif_tsv(root: Path, tasks: Sequence[str]) -> dict[str, list[tuple[Question, str]]]:
    rows: dict[str, list[tuple[Question, str]]] = defaultdict(list)
    for task in tasks:
        for split, prefix in (("train", "Train"), ("test", "Test")):
            path = need(root, f"{prefix}_{task}_question.csv", "tgifqa", f"the {task} questions of {split}")
            columns = MC_COLUMNS if task in MULTIPLE_CHOICE else ("gif_name", "question", "answer")
            for line, row in read_rows(path, columns, delimiter="\t"):
                where = f"line {line}"
                if task in MULTIPLE_CHOICE:
                    answer = _mc_answer([row[f"a{k}"] for k in range(1, 6)], row["answer"], path, where)
                else:
                    answer = row["answer"]
                rows[split].append(((row["gif_name"], row["question"], answer), TGIF_TASKS[task]))
    return rows


def _violet_json(root: Path, files: dict[str, str], fmt: str) -> dict[str, list[tuple[Question, str]]]:
    rows: dict[str, list[tuple[Question, str]]] = defaultdict(list)
    for qa_type, file in files.items():
        path = need(root, file, fmt, f"the {qa_type} questions")
        data = read_json(path)
        if not isinstance(data, dict):
            raise FormatError(f"{path}: top level: expected {{split: [questions]}}, got {type(data).__name__}")
        for split, entries in data.items():
            if split not in SPLIT_NAMES:
                raise FormatError(f"{path}: top level: split {split!r} is not one of {list(SPLIT_NAMES)}")
            for i, entry in enumerate(entries):
                where = f"{split}[{i}]"
                video = str(entry_field(entry, "video", path, where))
                question = str(entry_field(entry, "question", path, where))
                answer = entry_field(entry, "answer", path, where)
                if "option" in entry:
                    answer = _mc_answer(entry["option"], answer, path, where)
                rows[SPLIT_NAMES[split]].append(((video, question, str(answer)), qa_type))
    return rows


def _vocabulary(answers: Any, root: Path, default_file: str | None, train: list[tuple[Question, str]]) -> list[str]:
    if isinstance(answers, (list, tuple)):
        return [str(a) for a in answers]
    path = None
    if isinstance(answers, str):
        path = need(root, answers, "qa", "data.answers: the answer vocabulary")
    elif default_file is not None and (root / default_file).is_file():
        path = root / default_file
    if path is not None:
        table = read_json(path)
        if isinstance(table, dict):
            return [str(a) for a, _ in sorted(table.items(), key=lambda item: item[1])]
        if isinstance(table, list):
            return [str(a) for a in table]
        raise FormatError(f"{path}: top level: an answer vocabulary is a list or {{answer: index}}")
    counts = Counter(q[2] for q, _ in train)
    return [a for a, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _examples(
    fmt: str, rows: dict[str, list[tuple[Question, str]]], vocabulary: list[str]
) -> tuple[dict[str, list[Example]], list[str]]:
    index = {answer: i for i, answer in enumerate(vocabulary)}
    examples, notes = {}, []
    for split, split_rows in rows.items():
        by_video: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        unknown = 0
        for (video, question, answer), qa_type in split_rows:
            label = index.get(answer, -1)
            unknown += label < 0
            if label < 0 and split != "test":
                continue  # a training or meta batch needs a class to score; the test counts it as wrong
            by_video[video].append((question, label, QA_TYPES.index(qa_type)))
        if unknown:
            action = "scored as wrong" if split == "test" else "dropped"
            notes.append(f"{fmt}: {unknown} {split} question(s) have an answer outside the vocabulary ({action})")
        examples[split] = [Example(video, questions=tuple(by_video[video])) for video in sorted(by_video)]
    return examples, notes


def read_tgifqa(
    root: str | Path,
    tokenizer: TextTokenizer,
    options: ReadOptions | None = None,
    *,
    layout: str = "tsv",
    tasks: Sequence[str] = tuple(TGIF_TASKS),
    answers: Any = None,
) -> Corpus:
    """Read TGIF-QA (module docstring): ``layout`` ``tsv`` (the release) or ``json`` (Violet's); ``tasks`` among
    ``action``, ``transition``, ``frameqa``."""
    options = options or ReadOptions()
    root = Path(root)
    unknown = [t for t in tasks if t not in TGIF_TASKS]
    if unknown or not tasks:
        raise ValueError(f"tgifqa: tasks must be among {list(TGIF_TASKS)}, got {list(tasks)}")
    if layout == "tsv":
        rows = _tgif_tsv(root, tasks)
    elif layout == "json":
        rows = _violet_json(root, {TGIF_TASKS[t]: VIOLET_FILES[t] for t in tasks}, "tgifqa")
    else:
        raise ValueError(f"tgifqa: layout must be 'tsv' or 'json', got {layout!r}")
    vocabulary = _vocabulary(answers, root, "ans_tgif-frame.json" if layout == "json" else None, rows["train"])
    examples, notes = _examples("tgifqa", rows, vocabulary)
    corpus = assemble(
        "tgifqa",
        root,
        examples,
        options,
        tokenizer,
        default_videos="gifs",
        annotation_file="the question files",
        answers=vocabulary,
        notes=notes,
    )
    corpus.provenance.update(layout=layout, tasks=list(tasks))
    return corpus


def read_msvdqa(
    root: str | Path, tokenizer: TextTokenizer, options: ReadOptions | None = None, *, answers: Any = None
) -> Corpus:
    """Read MSVD-QA in Violet's json (module docstring); every question is scored as QA type ``open``."""
    options = options or ReadOptions()
    root = Path(root)
    rows = _violet_json(root, {"open": "txt_msvd-qa.json"}, "msvdqa")
    vocabulary = _vocabulary(answers, root, "ans_msvd-qa.json", rows["train"])
    examples, notes = _examples("msvdqa", rows, vocabulary)
    return assemble(
        "msvdqa",
        root,
        examples,
        options,
        tokenizer,
        default_videos="videos",
        annotation_file="txt_msvd-qa.json",
        answers=vocabulary,
        notes=notes,
    )


def _world_questions(world, qa_types: Sequence[str]):
    """Per benchmark split: ``(video name, clip seed, question, answer word, QA type)`` of the chosen types,
    clips named ``{split}_{index:05d}`` (so that sorting by name keeps the world's order)."""
    out = {}
    for world_split, benchmark_split in WORLD_TO_BENCHMARK.items():
        split = world[world_split]
        names, rows = [], []
        for i, clip in enumerate(split.clips):
            name = f"{benchmark_split}_{i:05d}"
            names.append(name)
            for q in clip.annotation.qa:
                if q.qa_type in qa_types:
                    rows.append((name, clip.seed, q.question, q.answer, q.qa_type))
        out[benchmark_split] = (split, names, rows)
    return out


def _options(seed: int, answer: str) -> tuple[list[str], int]:
    """Five options: the answer and four other answers of the world, in a seeded order."""
    rng = random.Random(seed)
    options = [answer, *rng.sample([a for a in ANSWERS if a != answer], 4)]
    rng.shuffle(options)
    return options, options.index(answer)


def export_tgifqa(world, out: Path, options: ExportOptions) -> list[Path]:
    """Write ``world``'s action, transition and frame questions as TGIF-QA, both layouts: the tsv release (train
    and test) and Violet's json (train, val = the world's meta, test), with the answer vocabulary (the world's)
    as ``ans_tgif-frame.json``. Multiple-choice options: the answer and four other answers, seeded per clip.
    Videos are written as ``gifs/{name}.mp4`` (lossless H.264, not GIF's 256-colour palette)."""
    per_split = _world_questions(world, ("action", "transition", "frame"))
    media = {}
    violet: dict[str, dict[str, list]] = {task: defaultdict(list) for task in TGIF_TASKS}
    for benchmark_split, (split, names, rows) in per_split.items():
        media.update({name: split.video[i] for i, name in enumerate(names)})
        tables: dict[str, list] = {task: [] for task in TGIF_TASKS}
        for key, (name, seed, question, answer, qa_type) in enumerate(rows):
            task = next(t for t, q in TGIF_TASKS.items() if q == qa_type)
            if task in MULTIPLE_CHOICE:
                choices, correct = _options(clip_seed(seed, question, key), answer)
                tables[task].append([name, question, *choices, correct, name, key])
                violet[task][benchmark_split].append(
                    {"video": name, "question": question, "option": choices, "answer": correct}
                )
            else:
                tables[task].append([name, question, answer, 0, name, key])
                violet[task][benchmark_split].append({"video": name, "question": question, "answer": answer})
        if benchmark_split == "val":
            continue
        prefix = "Train" if benchmark_split == "train" else "Test"
        for task, table in tables.items():
            columns = (
                (*MC_COLUMNS, "vid_id", "key")
                if task in MULTIPLE_CHOICE
                else ("gif_name", "question", "answer", "type", "vid_id", "key")
            )
            write_table(out / f"{prefix}_{task}_question.csv", columns, table, delimiter="\t")
    for task, by_split in violet.items():
        write_json(out / VIOLET_FILES[task], dict(by_split))
    write_json(out / "ans_tgif-frame.json", {answer: i for i, answer in enumerate(ANSWERS)})
    write_media(out, media, options, folder="gifs", pickle_name="tgif_features.pickle")
    return sorted(out.iterdir())


def export_msvdqa(world, out: Path, options: ExportOptions) -> list[Path]:
    """Write ``world``'s open-ended questions as MSVD-QA in Violet's json (train, val = meta, test) with the answer
    vocabulary ``ans_msvd-qa.json`` (the world's answers, in order)."""
    per_split = _world_questions(world, ("open",))
    media, questions = {}, {}
    for benchmark_split, (split, names, rows) in per_split.items():
        media.update({name: split.video[i] for i, name in enumerate(names)})
        questions[benchmark_split] = [{"video": n, "question": q, "answer": a} for n, _, q, a, _ in rows]
    write_json(out / "txt_msvd-qa.json", questions)
    write_json(out / "ans_msvd-qa.json", {answer: i for i, answer in enumerate(ANSWERS)})
    write_media(out, media, options, folder="videos", pickle_name="msvd_features.pickle")
    return sorted(out.iterdir())
