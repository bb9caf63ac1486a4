"""The Hugging Face ``Trainer``: ``compute_loss`` is the combined loss, every optimiser step closes a learner step.

The Trainer owns backward (``accelerator.backward``, with its loss scaling and DDP synchronisation), gradient
accumulation, clipping (``max_grad_norm``) and the optimiser step; :class:`MeltrTrainer` uses the learner's split
API: ``compute_loss`` returns :meth:`~meltr.learner.AuxiliaryLearner.inner_loss` of the batch, and a callback on
``on_optimizer_step`` calls :meth:`~meltr.learner.AuxiliaryLearner.after_optimizer_step`, which puts that step's
micro-batches in the replay buffer and runs a meta step every ``meta_every`` optimiser steps. The backbone's
``forward(batch)`` takes the whole batch, so the Trainer's ``remove_unused_columns`` (which drops every column not
named in ``forward``'s signature) is turned off. The learner's state is saved in every checkpoint folder as
``meltr_learner.pt`` and restored by ``train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from meltr.combine.base import LossCombiner
from meltr.learner import AuxiliaryLearner

STATE_FILE = "meltr_learner.pt"


class MeltrTrainer(Trainer):
    """A ``transformers.Trainer`` that fine-tunes ``model`` on all of its losses combined by ``combiner``.

    Args:
        model: a module whose ``forward(batch)`` returns ``{task: loss}`` (the backbone contract).
        args: the ``TrainingArguments``; ``remove_unused_columns`` is set to ``False`` (with a warning if it was on).
        combiner: the loss combiner.
        meta_optimizer: optimiser over ``combiner.meta_parameters()`` (default: the learner's Adam).
        learner_options: options of :class:`~meltr.learner.AuxiliaryLearner` (``meta_every``, ``hypergrad``, ...);
            the loop options (``backward``, ``accumulate``, ``max_grad_norm``, ``precision``, ``grad_scaler``) are
            the Trainer's (``gradient_accumulation_steps``, ``max_grad_norm``, ``bf16``) and are refused here.
        **kwargs: the other arguments of ``Trainer`` (``train_dataset``, ``data_collator``, ``optimizers``, ...).
    """

    LOOP_OPTIONS = ("backward", "accumulate", "max_grad_norm", "precision", "grad_scaler")

    def __init__(
        self,
        model: nn.Module,
        args: TrainingArguments,
        *,
        combiner: LossCombiner,
        meta_optimizer: torch.optim.Optimizer | None = None,
        learner_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        options = dict(learner_options or {})
        owned = sorted(set(options) & set(self.LOOP_OPTIONS))
        if owned:
            raise ValueError(
                f"learner_options {owned} belong to the Trainer here (TrainingArguments: gradient_accumulation_steps, "
                "max_grad_norm, bf16); remove them"
            )
        if args.remove_unused_columns:
            warnings.warn(
                "MeltrTrainer sets TrainingArguments.remove_unused_columns=False: the backbone reads the whole batch",
                UserWarning,
                stacklevel=2,
            )
            args.remove_unused_columns = False
        super().__init__(model=model, args=args, **kwargs)
        self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by the accumulation steps
        self.combiner = combiner.to(self.args.device)
        self.meta_optimizer = meta_optimizer
        self.learner_options = options
        self.learner: AuxiliaryLearner | None = None
        self._restored: Mapping[str, Any] | None = None
        self.add_callback(_CloseLearnerStep(self))

    def build_learner(self, model: nn.Module) -> AuxiliaryLearner:
        """The learner of this run, over the Trainer's (possibly wrapped) model and optimiser."""
        learner = AuxiliaryLearner(
            model, self.combiner, self.optimizer, meta_optimizer=self.meta_optimizer, **self.learner_options
        )
        if self._restored is not None:
            learner.load_state_dict(self._restored)
            self._restored = None
        return learner

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if not model.training:  # evaluation: the combined loss, recorded nowhere
            losses = self.combiner.stack(model(inputs))
            loss = self.combiner(losses.float())
            return (loss, {"losses": losses}) if return_outputs else loss
        if self.learner is None:
            self.learner = self.build_learner(model)
        self.learner.model = model  # the wrapper the Trainer calls this step (DDP or not)
        loss = self.learner.inner_loss(inputs)
        return (loss, {}) if return_outputs else loss

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.learner is not None and self.is_world_process_zero():
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            torch.save(self.learner.state_dict(), os.path.join(folder, STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path}: the checkpoint holds no meltr learner state; resume from a MeltrTrainer run"
            )
        self._restored = torch.load(path, map_location="cpu", weights_only=True)


class _CloseLearnerStep(TrainerCallback):
    """Calls ``after_optimizer_step`` after each optimiser step of the Trainer (and logs the meta step)."""

    def __init__(self, trainer: MeltrTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        learner = self.trainer.learner
        if learner is None:
            return control
        meta = learner.after_optimizer_step()
        if meta is not None:
            state.log_history.append(
                {"step": state.global_step + 1, **{f"meta/{k}": v for k, v in vars(meta).items() if k != "extras"}}
            )
        return control


__all__ = ["STATE_FILE", "MeltrTrainer"]
