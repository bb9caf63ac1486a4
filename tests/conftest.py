"""Shared test helpers: the folders of the battery helpers (``backbone_helpers``, ``adapter_helpers``,
``surgery_helpers``) are importable from every test, wherever pytest is started."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in ("models", "adapters", "surgery"):
    if str(HERE / folder) not in sys.path:
        sys.path.insert(0, str(HERE / folder))
