"""Reference video-language backbones that expose their pretext losses (the backbone contract).

Small, from-scratch stand-ins for the foundation models MELTR fine-tunes (Sec. 5 of MELTR) and for the
modality-agnostic VATT of gradient harmonisation (Wu et al., NeurIPS 2022), registered in :data:`BACKBONES`:

==========  =====================================================================================
name        tasks (``forward(batch)`` -> ``{task: [B] loss}``)
==========  =====================================================================================
univl       joint, align, cmlm, cmfm, decoder, m_joint, m_align, m_decoder
violet      vtm, mlm, mvm
allinone    vtm, mlm, vtc
vatt        cma_va, cma_vt (video, audio and text through one shared transformer)
==========  =====================================================================================

``build_backbone("univl", size="tiny", vocab_size=...)`` builds one. Each backbone also offers
``encode_text`` / ``encode_video`` (unit-norm retrieval embeddings), ``fused`` (a joint representation),
``match_score`` (a pair's matching logit) and, for UniVL, ``generate`` (greedy captions).
"""

from pathlib import Path

from meltr.config import config_help
from meltr.models.allinone import ALLINONE_TASKS, AllInOne, AllInOneConfig
from meltr.models.base import BACKBONES, SIZES, Backbone, build_backbone
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
from meltr.models.vatt import VATT_TASKS, Vatt, VattConfig
from meltr.models.violet import VIOLET_TASKS, PatchQuantizer, Violet, VioletConfig

CHECKPOINTS = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"


def pretrained_path(backbone: str, size: str = "default") -> Path:
    """The pre-trained checkpoint shipped for ``backbone`` at preset ``size`` (see ``assets/checkpoints/README.md``):
    ``<backbone>.pt`` for the default preset, ``<backbone>-<size>.pt`` for another. The file may not exist: not
    every backbone ships every size (the caller says so)."""
    if backbone not in BACKBONES:
        raise KeyError(f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONES.names())}")
    return CHECKPOINTS / (f"{backbone}.pt" if size == "default" else f"{backbone}-{size}.pt")


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
    "VATT_TASKS",
    "VIOLET_TASKS",
    "AllInOne",
    "AllInOneConfig",
    "Backbone",
    "PatchQuantizer",
    "Transformer",
    "TransformerBlock",
    "UniVL",
    "UniVLConfig",
    "Vatt",
    "VattConfig",
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
