"""The synthetic video-language world: clips, audio, captions, transcripts, QA, sentiment and labels.

A deterministic, download-free stand-in for the benchmarks of MELTR (YouCook2 / MSRVTT retrieval and
captioning, TGIF-QA and MSVD-QA, CMU-MOSI): ``make_world(config)`` generates the pretrain / train / meta /
test splits and ``World.loader(split, batch_size)`` yields batches as dicts of tensors (keys in
:data:`BATCH_KEYS`).
"""

from meltr.data.config import DOWNSTREAM_SPLITS, SPLITS, DownstreamShift, WorldConfig
from meltr.data.dataset import BATCH_KEYS, WorldDataset, collate
from meltr.data.language import Annotation, QAPair, scene_facts
from meltr.data.lexicon import ANSWERS, COLOURS, EVENT_CLASSES, QA_TYPES, SHAPES, SIZES
from meltr.data.scene import Event, Scene, SceneObject, Track, object_track
from meltr.data.tokenizer import SPECIAL_TOKENS, Tokenizer, world_tokenizer
from meltr.data.world import Clip, World, WorldSplit, generate_split, make_world, retrieval_ceiling

__all__ = [
    "ANSWERS",
    "BATCH_KEYS",
    "COLOURS",
    "DOWNSTREAM_SPLITS",
    "EVENT_CLASSES",
    "QA_TYPES",
    "SHAPES",
    "SIZES",
    "SPECIAL_TOKENS",
    "SPLITS",
    "Annotation",
    "Clip",
    "DownstreamShift",
    "Event",
    "QAPair",
    "Scene",
    "SceneObject",
    "Tokenizer",
    "Track",
    "World",
    "WorldConfig",
    "WorldDataset",
    "WorldSplit",
    "collate",
    "generate_split",
    "make_world",
    "object_track",
    "retrieval_ceiling",
    "scene_facts",
    "world_tokenizer",
]
