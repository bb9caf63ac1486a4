"""PyTorch Lightning: a ``LightningModule`` whose training step is one step of the bi-level learner.

Lightning with manual optimisation synchronises DDP gradients only inside ``manual_backward`` (it turns the DDP
reducer off after the forward and prepares it again there), so a learner that calls ``loss.backward()`` itself lets
the ranks' weights drift apart without any error. :class:`MeltrLightningModule` therefore runs the learner with
``backward=self.manual_backward``, Lightning's optimiser wrapper (whose ``step()`` advances ``global_step``: once per
inner step, also under gradient accumulation) and its meta optimiser outside Lightning (a meta step does not
advance ``global_step``). The combiner is a submodule, so its weights are in Lightning's checkpoints; the meta
optimiser, the learner's counters and its replay buffer are stored under ``checkpoint["meltr_learner"]``, and a
run resumed with ``trainer.fit(..., ckpt_path=...)`` continues exactly.

Mixed precision: ``precision="bf16-mixed"`` autocasts the training step (meta steps turn autocast off and run in
float32); a precision plugin with a loss scaler (``"16-mixed"`` on a GPU) is refused, since the scaler would need
the learner to hand it every step, including the ones it skips, which it does not do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from meltr.combine.base import LossCombiner
from meltr.learner import AuxiliaryLearner, StepStats

CHECKPOINT_KEY = "meltr_learner"


class MeltrLightningModule(pl.LightningModule):
    """Fine-tune ``backbone`` on all of its losses combined by ``combiner`` (MELTR's Algorithm 1) under Lightning.

    Args:
        backbone: a module whose ``forward(batch)`` returns ``{task: loss}`` (the backbone contract).
        combiner: the loss combiner; its meta parameters are learned by the learner's meta steps.
        optimizer: ``parameters -> optimiser`` for the backbone (the inner problem), e.g.
            ``lambda params: torch.optim.AdamW(params, lr=1e-4)``.
        meta_optimizer: ``parameters -> optimiser`` for the combiner; default the learner's (Adam, lr 1e-3).
        log_every: log the step's losses every this many inner steps (``0``: never).
        **learner_options: keyword options of :class:`~meltr.learner.AuxiliaryLearner` (``meta_every``,
            ``hypergrad``, ``backend``, ``accumulate``, ``max_grad_norm``, ``replay_storage``, ...), except
            ``backward`` and ``grad_scaler``, which this module sets.

    Subclass it to add validation, schedulers (``lr_schedulers()`` are the user's to step) or other hooks; keep
    ``automatic_optimization = False``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        combiner: LossCombiner,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        *,
        meta_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        log_every: int = 1,
        **learner_options: Any,
    ) -> None:
        super().__init__()
        reserved = sorted({"backward", "grad_scaler"} & set(learner_options))
        if reserved:
            raise ValueError(f"MeltrLightningModule sets {reserved} itself (manual_backward); remove them")
        self.automatic_optimization = False
        self.backbone = backbone
        self.combiner = combiner
        self.make_optimizer = optimizer
        self.make_meta_optimizer = meta_optimizer
        self.log_every = log_every
        self.learner_options = dict(learner_options)
        self.learner: AuxiliaryLearner | None = None
        self._restored: Mapping[str, Any] | None = None

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.backbone(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.backbone.parameters())

    def build_learner(self) -> AuxiliaryLearner:
        """The learner of this fit: Lightning's optimiser, ``manual_backward``, the meta optimiser."""
        meta = None
        if self.make_meta_optimizer is not None and self.combiner.meta_parameters():
            meta = self.make_meta_optimizer(self.combiner.meta_parameters())
        return AuxiliaryLearner(
            self.backbone,
            self.combiner,
            self.optimizers(),
            meta_optimizer=meta,
            backward=self.manual_backward,
            **self.learner_options,
        )

    def on_train_start(self) -> None:
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(
                "MeltrLightningModule does not support precision='16-mixed' (Lightning's loss scaler); "
                "use precision='bf16-mixed', or a plain loop with AuxiliaryLearner(grad_scaler=...)"
            )
        if self.learner is None:
            self.learner = self.build_learner()
        if self._restored is not None:
            self.learner.load_state_dict(self._restored)
            self._restored = None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        stats = self.learner.step(batch)
        self.log_stats(stats)

    def log_stats(self, stats: StepStats) -> None:
        """Log a step's row (``loss/<task>``, ``sensitivity/<task>``, ``meta/...``) every ``log_every`` steps."""
        if not self.log_every or stats.step % self.log_every:
            return
        row = {f"meltr/{k}": float(v) for k, v in stats.as_dict().items() if k != "step"}
        self.log_dict(row, on_step=True, on_epoch=False, batch_size=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.learner is not None:
            checkpoint[CHECKPOINT_KEY] = self.learner.state_dict()

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        # Lightning restores modules before it builds optimisers; the learner is built in on_train_start.
        self._restored = checkpoint.get(CHECKPOINT_KEY)


__all__ = ["CHECKPOINT_KEY", "MeltrLightningModule"]
