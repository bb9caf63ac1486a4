"""Text-to-video retrieval (MELTR Tables 1-2): the primary loss is the backbone's own retrieval loss."""

from __future__ import annotations

from typing import Any

import torch

from meltr.metrics import retrieval_metrics
from meltr.tasks.base import TASKS, TaskModel, evaluation_mode, scoring_bar


@TASKS.register("retrieval")
class Retrieval(TaskModel):
    """Text-to-video retrieval. No head: the primary loss is one of the backbone's pretext losses, by default the
    one its class declares as ``retrieval_loss`` (as the paper, Sec. 5: Align for UniVL, VTM for Violet, VTC for
    All-in-one).

    Scoring at test time: ``dual`` ranks by the cosine of ``encode_text`` and ``encode_video`` (UniVL's Align,
    All-in-one's VTC); ``pairwise`` ranks by the cross-encoder's matching logit ``match_score`` over every (text,
    video) pair (Violet's VTM), which costs one joint pass per pair.

    Args:
        backbone: the backbone.
        backbone_name: ``univl``, ``violet`` or ``allinone``.
        scoring: ``dual`` or ``pairwise`` (default: ``pairwise`` when the primary loss is the one the backbone's
            cross encoder scores, its ``matching_loss``, as Violet's VTM or UniVL's Joint; else ``dual``).
        primary: the primary loss (default: the backbone's ``retrieval_loss``); any of the backbone's tasks, e.g.
            ``joint`` for Table 1's UniVL-Joint.
    """

    name = "retrieval"
    metric = "t2v/R@1"

    def __init__(self, backbone, backbone_name: str, scoring: str | None = None, primary: str | None = None) -> None:
        super().__init__(backbone, backbone_name)
        declared = getattr(backbone, "retrieval_loss", None)
        if primary is None and declared is None:
            raise ValueError(
                f"retrieval: backbone {backbone_name!r} declares no retrieval_loss; pass primary= (one of "
                f"{list(self.tasks)}) or set retrieval_loss on its class"
            )
        self.primary_task = primary or declared
        if self.primary_task not in self.tasks:
            raise ValueError(
                f"retrieval: primary {self.primary_task!r} is not a task of {backbone_name}; choose from "
                f"{list(self.tasks)}"
            )
        pairwise = self.primary_task == getattr(backbone, "matching_loss", None)
        self.scoring = scoring or ("pairwise" if pairwise else "dual")
        if self.scoring not in ("dual", "pairwise"):
            raise ValueError(f"retrieval: scoring must be 'dual' or 'pairwise', got {self.scoring!r}")

    def loader_options(self, split: str) -> dict[str, Any]:
        return {"caption": "first"} if split in ("test", "meta") else {}

    @torch.no_grad()
    def similarity(
        self, world, split: str, batch_size: int = 64, max_clips: int | None = None, progress: bool = False
    ) -> torch.Tensor:
        """``[texts, videos]`` scores of caption 0 of each clip against every clip of ``split``; ``progress``
        shows a bar over the batches encoded (dual scoring) or the captions scored (pairwise)."""
        batches = list(world.loader(split, batch_size, shuffle=False, caption="first"))
        if max_clips is not None:
            batches = _truncate(batches, max_clips)
        with evaluation_mode(self):
            if self.scoring == "dual":
                with scoring_bar(progress, 2 * len(batches)) as bar:
                    text = torch.cat([_advance(bar, self.backbone.encode_text(b)) for b in batches])
                    video = torch.cat([_advance(bar, self.backbone.encode_video(b)) for b in batches])
                return text @ video.T
            rows = []
            videos = {k: torch.cat([b[k] for b in batches]) for k in ("video",)}
            texts = {k: torch.cat([b[k] for b in batches]) for k in ("text", "text_mask")}
            count = len(texts["text"])
            for i in scoring_bar(progress, count, unit="caption", iterable=range(count)):
                scores = []
                for start in range(0, count, batch_size):
                    stop = min(count, start + batch_size)
                    pair = {
                        "video": videos["video"][start:stop],
                        "text": texts["text"][i].expand(stop - start, -1),
                        "text_mask": texts["text_mask"][i].expand(stop - start, -1),
                    }
                    scores.append(self.backbone.match_score(pair))
                rows.append(torch.cat(scores))
            return torch.stack(rows)

    def evaluate(
        self, world, split: str, batch_size: int = 64, max_clips: int | None = None, progress: bool = False
    ) -> dict[str, float]:
        sim = self.similarity(world, split, batch_size, max_clips, progress)
        scores = retrieval_metrics(sim.double().cpu().numpy())
        return {k: float(v) for k, v in scores.as_dict().items() if k.startswith("t2v/")}


def _advance(bar, value):
    bar.update(1)
    return value


def _truncate(batches: list[dict], count: int) -> list[dict]:
    kept, total = [], 0
    for batch in batches:
        take = min(len(batch["clip_id"]), count - total)
        if take <= 0:
            break
        kept.append({k: v[:take] for k, v in batch.items()})
        total += take
    return kept
