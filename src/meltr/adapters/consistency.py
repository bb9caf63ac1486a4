"""The spatiotemporal description-guided consistency constraint ``L_CC`` of MSTA (Sec. 3 of arXiv:2411.11223).

For every class ``c``, the trainable model embeds the plain prompt ("a clip of {c}") as ``w_c`` and the frozen
pre-trained model embeds a spatial description ``D_s^c`` and a temporal description ``D_t^c`` of the class; then

    L_CC = mean_c ( 2 - cos(w_c, D_s^c) - cos(w_c, D_t^c) ),        L = L_CE + alpha * L_CC   (alpha = 1 in the paper).

The paper writes the descriptions with a large language model (N = 2 best). Here they are fixed sentences in the
synthetic world's own words (:data:`~meltr.data.EVENT_CLASSES`, the lexicon's colours and sizes), no language model:
one spatial description (what a frame of the class looks like) and one temporal description (how the event unfolds).

:class:`ConsistencyTask` exposes ``L_CC`` through the backbone contract, as one more task loss next to the backbone's
own, so that MELTR (or any combiner) can weigh it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.data.lexicon import COLOURS, EVENT_CLASSES, SIZES

PROMPT_TEMPLATE = "a clip of {}"
"""The plain prompt of the trainable branch. The paper's is "a video of {cls}", but "video" is not a word of the
synthetic world (it would be [UNK]); "clip" is."""


@dataclass(frozen=True)
class ClassDescriptions:
    """The N = 2 descriptions of one class: what a frame shows (spatial) and what happens over time (temporal)."""

    spatial: str
    temporal: str


_ANY_COLOUR = " or ".join(COLOURS)
_ANY_SIZE = " or ".join(SIZES)

WORLD_DESCRIPTIONS: dict[str, ClassDescriptions] = {
    "move_left": ClassDescriptions(
        "a shape on the left of the frame", "first the shape is on the right then it moves to the left"
    ),
    "move_right": ClassDescriptions(
        "a shape on the right of the frame", "first the shape is on the left then it moves to the right"
    ),
    "move_up": ClassDescriptions(
        "a shape at the top of the frame", "first the shape is at the bottom then it moves up"
    ),
    "move_down": ClassDescriptions(
        "a shape at the bottom of the frame", "first the shape is at the top then it moves down"
    ),
    "turn": ClassDescriptions(f"a {_ANY_COLOUR} shape", "first the shape is one colour then it changes colour"),
    "grow": ClassDescriptions(
        "a large shape in the centre of the frame", "first the shape is small then it gets bigger"
    ),
    "shrink": ClassDescriptions(
        "a small shape in the centre of the frame", "first the shape is large then it gets smaller"
    ),
    "appear": ClassDescriptions(f"a {_ANY_SIZE} shape in the frame", "first there is not a shape then it shows up"),
    "vanish": ClassDescriptions(f"a {_ANY_SIZE} shape in the frame", "first there is a shape then it disappears"),
    "jump": ClassDescriptions("a shape at the bottom of the frame", "the shape jumps up and down many times"),
    "blink": ClassDescriptions(f"a {_ANY_COLOUR} shape", "the shape blinks and flickers many times"),
    "shake": ClassDescriptions("a shape in the middle of the frame", "the shape shakes from side to side many times"),
}
"""Descriptions of every class of :data:`~meltr.data.EVENT_CLASSES`, in words of the world's vocabulary."""


def class_name(event_class: str) -> str:
    """The words of a class name: ``"move_left"`` -> ``"move left"``."""
    return event_class.replace("_", " ")


def class_prompts(classes: Sequence[str] = EVENT_CLASSES, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The plain prompt of every class, ``template.format(class name)``."""
    return [template.format(class_name(c)) for c in classes]


def class_descriptions(classes: Sequence[str] = EVENT_CLASSES) -> list[ClassDescriptions]:
    """The spatial and temporal descriptions of every class (:data:`WORLD_DESCRIPTIONS`).

    Raises:
        KeyError: a class has no description (the message lists those that have).
    """
    missing = [c for c in classes if c not in WORLD_DESCRIPTIONS]
    if missing:
        raise KeyError(
            f"no descriptions for classes {missing}; described: {', '.join(WORLD_DESCRIPTIONS)}. "
            "Add them to WORLD_DESCRIPTIONS"
        )
    return [WORLD_DESCRIPTIONS[c] for c in classes]


def consistency_loss(text_embeddings: Tensor, spatial_embeddings: Tensor, temporal_embeddings: Tensor) -> Tensor:
    """``L_CC = mean_c (2 - cos(w_c, D_s^c) - cos(w_c, D_t^c))`` (MSTA, Sec. 3).

    Args:
        text_embeddings: ``[C, d]`` the trainable branch's embeddings ``w_c`` of the class prompts.
        spatial_embeddings: ``[C, d]`` the frozen branch's embeddings of the spatial descriptions (no gradient flows
            into them: they are the distillation targets).
        temporal_embeddings: ``[C, d]`` the same for the temporal descriptions.

    Returns:
        a scalar in ``[0, 4]``.
    """
    if not text_embeddings.shape == spatial_embeddings.shape == temporal_embeddings.shape:
        raise ValueError(
            "the three embeddings must have the same shape [C, d], got "
            f"{tuple(text_embeddings.shape)}, {tuple(spatial_embeddings.shape)}, {tuple(temporal_embeddings.shape)}"
        )
    spatial = F.cosine_similarity(text_embeddings, spatial_embeddings.detach(), dim=-1)
    temporal = F.cosine_similarity(text_embeddings, temporal_embeddings.detach(), dim=-1)
    return (2.0 - spatial - temporal).mean()


def _encode_texts(tokenizer, texts: Sequence[str], max_len: int) -> dict[str, Tensor]:
    tokens = torch.as_tensor(tokenizer.encode_batch(list(texts), max_len))
    return {"text": tokens, "text_mask": tokens != tokenizer.pad_id}


class ConsistencyTask(nn.Module):
    """A model whose losses are its backbone's plus ``{"consistency": L_CC}`` (a scalar): the backbone contract.

    The frozen branch's description embeddings are computed once, here, with ``frozen_model.encode_text`` under
    ``no_grad``, and kept as buffers; ``frozen_model`` itself is not kept. The trainable branch embeds the class
    prompts with ``model.encode_text`` at every forward pass.

    Args:
        model: the trainable (e.g. MSTA-adapted) backbone; ``forward(batch, generator)`` gives its task losses.
        frozen_model: the pre-trained backbone (before adaptation), e.g. a deep copy taken before ``inject_msta``.
        tokenizer: the world's tokenizer (``encode_batch``, ``pad_id``).
        classes: the class names (default :data:`~meltr.data.EVENT_CLASSES`).
        template: the prompt template.
        max_len: token length of prompts and descriptions ([CLS] and [SEP] included).
    """

    def __init__(
        self,
        model: nn.Module,
        frozen_model: nn.Module,
        tokenizer,
        classes: Sequence[str] = EVENT_CLASSES,
        template: str = PROMPT_TEMPLATE,
        max_len: int = 16,
    ) -> None:
        super().__init__()
        self.model = model
        self.tasks: tuple[str, ...] = (*model.tasks, "consistency")
        self.classes = tuple(classes)
        descriptions = class_descriptions(self.classes)
        home = next(model.parameters()).device  # buffers live with the trainable model
        prompts = {
            k: v.to(home) for k, v in _encode_texts(tokenizer, class_prompts(self.classes, template), max_len).items()
        }
        self.register_buffer("prompt_tokens", prompts["text"], persistent=False)
        self.register_buffer("prompt_mask", prompts["text_mask"], persistent=False)
        was_training = frozen_model.training
        frozen_model.eval()
        with torch.no_grad():
            for kind in ("spatial", "temporal"):
                texts = [getattr(d, kind) for d in descriptions]
                device = next(frozen_model.parameters()).device
                inputs = {k: v.to(device) for k, v in _encode_texts(tokenizer, texts, max_len).items()}
                embeddings = frozen_model.encode_text(inputs)
                self.register_buffer(f"{kind}_embeddings", embeddings.detach().to(home).clone(), persistent=False)
        frozen_model.train(was_training)

    def prompt_embeddings(self) -> Tensor:
        """``[C, d]`` the trainable branch's embeddings of the class prompts."""
        return self.model.encode_text({"text": self.prompt_tokens, "text_mask": self.prompt_mask})

    def consistency(self) -> Tensor:
        """``L_CC`` at the model's current weights."""
        return consistency_loss(self.prompt_embeddings(), self.spatial_embeddings, self.temporal_embeddings)

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The backbone's ``{task: [B] loss}`` plus ``"consistency"``: ``L_CC``, a scalar."""
        losses = dict(self.model(batch, generator))
        losses["consistency"] = self.consistency()
        return losses

    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        return self.model.encode_text(batch, text_key)

    def encode_video(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.model.encode_video(batch)

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        return self.model.fused(batch, text_key)

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        return self.model.match_score(batch, text_key)


__all__ = [
    "PROMPT_TEMPLATE",
    "WORLD_DESCRIPTIONS",
    "ClassDescriptions",
    "ConsistencyTask",
    "class_descriptions",
    "class_name",
    "class_prompts",
    "consistency_loss",
]
