"""Video QA and multimodal sentiment (MELTR Tables 3 and 6): a head on the backbone's fused representation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from meltr.data import ANSWERS, QA_TYPES
from meltr.metrics import qa_metrics, sentiment_metrics
from meltr.tasks.base import TASKS, TaskModel, evaluation_mode, scoring_bar


def _fused_width(backbone) -> int:
    return int(backbone.config.dim)


@TASKS.register("qa")
class QuestionAnswering(TaskModel):
    """Video QA as classification over the world's answer vocabulary (TGIF-QA Action / Transition / FrameQA and
    MSVD-QA style): ``logits = MLP(fused(question, video))``, primary loss ``qa`` = cross-entropy.

    Args:
        qa_types: which question types to train and test on (default: all of ``QA_TYPES``).
        num_answers: size of the answer vocabulary (default: the world's, ``len(ANSWERS)``; a dataset on disk
            has its own, ``corpus.answers``).
    """

    name = "qa"
    metric = "accuracy"

    def __init__(
        self, backbone, backbone_name: str, qa_types: list[str] | None = None, num_answers: int | None = None
    ) -> None:
        super().__init__(backbone, backbone_name)
        self.qa_types = list(qa_types or QA_TYPES)
        unknown = sorted(set(self.qa_types) - set(QA_TYPES))
        if unknown:
            raise ValueError(f"qa: unknown qa_types {unknown}; choose from {list(QA_TYPES)}")
        width = _fused_width(backbone)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, num_answers or len(ANSWERS)))
        self.primary_task = "qa"
        self.tasks = ("qa", *self.tasks)

    def logits(self, batch) -> torch.Tensor:
        return self.head(self.backbone.fused(batch, text_key="question"))

    def head_losses(self, batch):
        return {"qa": F.cross_entropy(self.logits(batch), batch["answer"], reduction="none")}

    def loader_options(self, split: str) -> dict[str, Any]:
        return {"qa_types": self.qa_types, **({"qa": "all"} if split in ("test", "meta") else {})}

    @torch.no_grad()
    def evaluate(
        self, world, split: str, batch_size: int = 64, max_clips: int | None = None, progress: bool = False
    ) -> dict[str, float]:
        predictions, answers, types = [], [], []
        with evaluation_mode(self):
            loader = world.loader(split, batch_size, shuffle=False, qa="all", qa_types=self.qa_types)
            for batch in scoring_bar(progress, iterable=loader):
                predictions += self.logits(batch).argmax(-1).tolist()
                answers += batch["answer"].tolist()
                types += [QA_TYPES[t] for t in batch["qa_type"].tolist()]
                if max_clips is not None and len(answers) >= max_clips:
                    break
        scores = qa_metrics(predictions, answers, types)
        out = {"accuracy": float(scores.accuracy)}
        out.update({f"accuracy/{t}": float(v) for t, v in scores.per_type.items()})
        return out


@TASKS.register("sentiment")
class Sentiment(TaskModel):
    """Multimodal sentiment regression (CMU-MOSI style): ``score = MLP(fused(transcript, video))`` in [-3, 3],
    primary loss ``sentiment`` = L1 (the usual MOSI training loss)."""

    name = "sentiment"
    metric = "corr"

    def __init__(self, backbone, backbone_name: str) -> None:
        super().__init__(backbone, backbone_name)
        width = _fused_width(backbone)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))
        self.primary_task = "sentiment"
        self.tasks = ("sentiment", *self.tasks)

    def predict(self, batch) -> torch.Tensor:
        return 3 * torch.tanh(self.head(self.backbone.fused(batch, text_key="transcript")).squeeze(-1) / 3)

    def head_losses(self, batch):
        return {"sentiment": (self.predict(batch) - batch["sentiment"]).abs()}

    @torch.no_grad()
    def evaluate(
        self, world, split: str, batch_size: int = 64, max_clips: int | None = None, progress: bool = False
    ) -> dict[str, float]:
        predictions, labels = [], []
        with evaluation_mode(self):
            loader = world.loader(split, batch_size, shuffle=False)
            for batch in scoring_bar(progress, iterable=loader):
                predictions.append(self.predict(batch))
                labels.append(batch["sentiment"])
                if max_clips is not None and sum(len(p) for p in predictions) >= max_clips:
                    break
        scores = sentiment_metrics(torch.cat(predictions).numpy(), torch.cat(labels).numpy())
        return {
            "BA": scores.binary_accuracy,
            "F1": scores.f1,
            "MAE": scores.mae,
            "corr": scores.corr,
            "acc7": scores.acc7,
        }
