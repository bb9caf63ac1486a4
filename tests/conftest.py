"""Shared test helpers: the folders of the battery helpers (``backbone_helpers``, ``adapter_helpers``,
``surgery_helpers``, ``hypergrad_helpers``), of the distributed workers (``ddp_worker``, ``torchrun`` here;
``lightning_worker``, ``accelerate_worker`` in integrations/) are importable from every test, wherever pytest is
started."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in ("models", "adapters", "surgery", "hypergrad", "integrations", "."):
    if str(HERE / folder) not in sys.path:
        sys.path.insert(0, str(HERE / folder))
