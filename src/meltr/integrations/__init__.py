"""meltr inside the training loops people use: PyTorch Lightning, Accelerate and the Hugging Face Trainer.

Each integration lives in its own module and imports its framework only when imported, so that none of them is a
dependency of meltr (extras: ``meltr[lightning]``, ``meltr[hf]``):

- :mod:`meltr.integrations.lightning`: :class:`~meltr.integrations.lightning.MeltrLightningModule`, manual
  optimisation with the learner's inner gradients through ``manual_backward``;
- :mod:`meltr.integrations.accelerate`: :func:`~meltr.integrations.accelerate.prepare_learner`, a learner whose
  backward is ``accelerator.backward``;
- :mod:`meltr.integrations.hf_trainer`: :class:`~meltr.integrations.hf_trainer.MeltrTrainer`, a ``Trainer`` whose
  ``compute_loss`` is the combined loss and whose optimiser steps close the learner's steps.

docs/integrations.md has a runnable example of each.
"""
