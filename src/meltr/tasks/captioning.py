"""Video captioning (MELTR Tables 4, 5 and 7): the primary loss is the caption decoder's (UniVL's Decoder)."""

from __future__ import annotations

import torch

from meltr.metrics import caption_metrics
from meltr.tasks.base import TASKS, TaskModel, evaluation_mode, scoring_bar


@TASKS.register("captioning")
class Captioning(TaskModel):
    """Captioning with a UniVL-style backbone: primary ``decoder``; video only, or video + transcript.

    The input setting (Table 4: "V" or "V+T") is the backbone's ``caption_from_transcript``; choose it when the
    backbone is built. Evaluation decodes greedily and scores against every reference caption of the clip with
    pycocoevalcap (BLEU-3/4, METEOR, ROUGE-L, CIDEr).
    """

    name = "captioning"
    metric = "BLEU-4"

    def __init__(self, backbone, backbone_name: str, max_len: int = 20) -> None:
        super().__init__(backbone, backbone_name)
        if not hasattr(backbone, "generate") or "decoder" not in self.tasks:
            raise ValueError(f"captioning needs a backbone with a caption decoder (univl), got {backbone_name!r}")
        self.primary_task = "decoder"
        self.max_len = max_len

    @torch.no_grad()
    def evaluate(
        self,
        world,
        split: str,
        batch_size: int = 64,
        max_clips: int | None = None,
        meteor: bool = True,
        progress: bool = False,
    ) -> dict[str, float]:
        with evaluation_mode(self):
            hypotheses, references = {}, {}
            target = world.splits[split]
            loader = world.loader(split, batch_size, shuffle=False, caption="first")
            for batch in scoring_bar(progress, iterable=loader):
                tokens = self.backbone.generate(batch, self.max_len)
                for clip, row in zip(batch["clip_id"].tolist(), tokens.tolist(), strict=True):
                    hypotheses[clip] = world.tokenizer.decode(row) or "empty"
                    references[clip] = list(target.captions[clip])
                if max_clips is not None and len(hypotheses) >= max_clips:
                    break
        scores = caption_metrics(hypotheses, references, meteor=meteor, tokenizer="simple")
        return {k: float(v) for k, v in scores.as_dict().items() if isinstance(v, int | float) and v is not None}
