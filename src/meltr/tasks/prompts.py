"""CLIP-style classification over class prompts, as a task of the backbone contract, and its accuracy.

A clip's class is the prompt (e.g. "a video of {class}") whose text embedding is most similar to the clip's video
embedding: with unit-norm embeddings ``v`` (``encode_video``) and ``w_c`` (``encode_text`` of class ``c``'s prompt)
the logits are ``cos(v, w_c) / temperature``, so classes never seen in training can be scored (the zero-shot and
base-to-novel protocols of "Efficient Transfer Learning for Video-language Foundation Models", Sec. 4.2).
Labels are indices in the world's :data:`~meltr.data.EVENT_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.adapters.consistency import class_descriptions, consistency_loss
from meltr.data.lexicon import EVENT_CLASSES
from meltr.models.losses import symmetric_info_nce
from meltr.tasks.base import evaluation_mode


def tokenize_prompts(tokenizer, texts: Sequence[str], max_len: int = 16) -> dict[str, Tensor]:
    """A batch's ``text`` / ``text_mask`` for ``texts`` (padded or cut to ``max_len`` tokens)."""
    ids = torch.as_tensor(tokenizer.encode_batch(list(texts), max_len))
    return {"text": ids, "text_mask": ids != tokenizer.pad_id}


class PromptClassification(nn.Module):
    """CLIP-style classification over class prompts as a model of the backbone contract.

    ``forward(batch)`` gives (only the tasks asked for):

    - ``"classification"`` ``[B]``: ``CE(cos(v_i, w_c) / temperature, y_i)`` over the training classes' prompts;
    - ``"consistency"`` (scalar): ``L_CC`` of the same prompt embeddings ``w_c`` against the frozen backbone's
      spatial and temporal descriptions of the classes (:func:`~meltr.adapters.consistency_loss`);
    - ``"align"`` ``[B]``: the pretext loss Align, symmetric InfoNCE of the clips' captions and videos.

    Args:
        backbone: the (adapted) backbone; ``encode_text`` / ``encode_video`` give unit-norm embeddings.
        tokenizer: the world's tokenizer.
        classes: the classes of ``batch["label"]`` that are scored (labels are indices in EVENT_CLASSES).
        prompts: one prompt per class.
        tasks: which of the three losses ``forward`` returns.
        temperature: the logit temperature.
        frozen: the pre-trained backbone, needed for ``"consistency"`` (its description embeddings are computed
            once, here, and kept as buffers; the module itself is not kept).
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer,
        classes: Sequence[str],
        prompts: Sequence[str],
        tasks: Sequence[str] = ("classification",),
        temperature: float = 0.05,
        frozen: nn.Module | None = None,
    ) -> None:
        super().__init__()
        unknown = [t for t in tasks if t not in ("classification", "consistency", "align")]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose among classification, consistency, align")
        self.backbone = backbone
        self.tasks = tuple(tasks)
        self.temperature = temperature
        prompt_tokens = tokenize_prompts(tokenizer, prompts)
        self.register_buffer("prompt_tokens", prompt_tokens["text"], persistent=False)
        self.register_buffer("prompt_mask", prompt_tokens["text_mask"], persistent=False)
        index = torch.full((len(EVENT_CLASSES),), -1, dtype=torch.int64)
        index[[EVENT_CLASSES.index(c) for c in classes]] = torch.arange(len(classes))
        self.register_buffer("class_index", index, persistent=False)
        if "consistency" in self.tasks:
            if frozen is None:
                raise ValueError("the consistency task needs frozen=, the pre-trained backbone")
            descriptions = class_descriptions(classes)
            with torch.no_grad(), evaluation_mode(frozen):
                for kind in ("spatial", "temporal"):
                    embeddings = frozen.encode_text(
                        tokenize_prompts(tokenizer, [getattr(d, kind) for d in descriptions])
                    )
                    self.register_buffer(f"{kind}_embeddings", embeddings.clone(), persistent=False)

    def prompt_embeddings(self) -> Tensor:
        """``[C, d]`` the backbone's embeddings ``w_c`` of the class prompts."""
        return self.backbone.encode_text({"text": self.prompt_tokens, "text_mask": self.prompt_mask})

    def logits(self, video_embeddings: Tensor, prompt_embeddings: Tensor) -> Tensor:
        return video_embeddings @ prompt_embeddings.t() / self.temperature

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        labels = self.class_index[batch["label"]]
        if bool((labels < 0).any()):
            raise ValueError("the batch holds clips of classes this task does not score")
        video = self.backbone.encode_video(batch)
        prompts = self.prompt_embeddings()
        losses = {"classification": F.cross_entropy(self.logits(video, prompts), labels, reduction="none")}
        if "consistency" in self.tasks:
            losses["consistency"] = consistency_loss(prompts, self.spatial_embeddings, self.temporal_embeddings)
        if "align" in self.tasks:
            text = self.backbone.encode_text(batch)
            losses["align"] = symmetric_info_nce(text @ video.t() / self.temperature)
        return {task: losses[task] for task in self.tasks}


@torch.no_grad()
def prompt_accuracy(
    backbone: nn.Module, tokenizer, videos: Tensor, labels: Tensor, classes: Sequence[str], prompts
) -> float:
    """Percent of the clips ``videos`` (whose labels are among ``classes``) whose nearest prompt is their class's."""
    targets = torch.tensor([EVENT_CLASSES.index(c) for c in classes])
    keep = torch.isin(labels, targets)
    if not bool(keep.any()):
        raise ValueError(f"no test clip of the classes {list(classes)}; raise test_clips")
    with evaluation_mode(backbone):
        text = backbone.encode_text(tokenize_prompts(tokenizer, prompts))
        video = torch.cat([backbone.encode_video({"video": chunk}) for chunk in videos[keep].split(200)])
    predicted = targets[(video @ text.t()).argmax(1)]
    return 100.0 * float((predicted == labels[keep]).float().mean())


__all__ = ["PromptClassification", "prompt_accuracy", "tokenize_prompts"]
