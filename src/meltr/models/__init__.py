"""Reference video-language backbones that expose their pretext losses (the backbone contract).

Three small, from-scratch stand-ins for the foundation models MELTR fine-tunes (Sec. 5 of MELTR),
registered in :data:`BACKBONES`:

==========  =====================================================================================
name        tasks (``forward(batch)`` -> ``{task: [B] loss}``)
==========  =====================================================================================
univl       joint, align, cmlm, cmfm, decoder, m_joint, m_align, m_decoder
violet      vtm, mlm, mvm
allinone    vtm, mlm, vtc
==========  =====================================================================================

``build_backbone("univl", size="tiny", vocab_size=...)`` builds one. Each backbone also offers
``encode_text`` / ``encode_video`` (unit-norm retrieval embeddings), ``fused`` (a joint representation),
``match_score`` (a pair's matching logit) and, for UniVL, ``generate`` (greedy captions).
"""

from pathlib import Path

from meltr.models.allinone import ALLINONE_TASKS, AllInOne, AllInOneConfig
from meltr.models.base import BACKBONES, SIZES, Backbone, build_backbone, config_help
from meltr.models.layers import Transformer, TransformerBlock, attention, count_parameters
from meltr.models.masking import (
    CLS_ID,
    MASK_ID,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    SEP_ID,
    UNK_ID,
    mask_frames,
    mask_tokens,
    sample_negatives,
    sample_positions,
)
from meltr.models.univl import UNIVL_TASKS, UniVL, UniVLConfig
from meltr.models.violet import VIOLET_TASKS, PatchQuantizer, Violet, VioletConfig

CHECKPOINTS = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"


def pretrained_path(backbone: str) -> Path:
    """The pre-trained checkpoint shipped for ``backbone`` (see ``assets/checkpoints/README.md``)."""
    if backbone not in BACKBONES:
        raise KeyError(f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONES.names())}")
    return CHECKPOINTS / f"{backbone}.pt"


__all__ = [
    "ALLINONE_TASKS",
    "BACKBONES",
    "CHECKPOINTS",
    "CLS_ID",
    "MASK_ID",
    "NUM_SPECIAL_TOKENS",
    "PAD_ID",
    "SEP_ID",
    "SIZES",
    "UNIVL_TASKS",
    "UNK_ID",
    "VIOLET_TASKS",
    "AllInOne",
    "AllInOneConfig",
    "Backbone",
    "PatchQuantizer",
    "Transformer",
    "TransformerBlock",
    "UniVL",
    "UniVLConfig",
    "Violet",
    "VioletConfig",
    "attention",
    "build_backbone",
    "config_help",
    "count_parameters",
    "mask_frames",
    "mask_tokens",
    "pretrained_path",
    "sample_negatives",
    "sample_positions",
]
