"""derain_training: fine-tunes the derain_ros network on recorded rosbags.

Installed as ``derain_training`` (from the ``training/`` folder) so that its name
cannot collide with another distribution's ``training`` package. It reads bags
through the same decode/sync/voxel code as the node (``derain_ros``).

Public API (imported on first use, so ``import derain_training`` stays light):
``TrainConfig``, ``load_config`` (config), ``ClipDataset`` (data), ``Trainer``,
``TrainResult`` (trainer), ``Objective`` (objective), and the errors
``TrainConfigError``, ``DatasetError``, ``NonFiniteLossError``.
PSNR/SSIM come from the project's one metrics module, ``derain_ros.eval.metrics``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "load_config": "config", "ClipDataset": "data",
    "Trainer": "trainer", "TrainResult": "trainer", "Objective": "objective",
    "TrainConfigError": "errors",
    "DatasetError": "errors", "NonFiniteLossError": "errors", "TrainingError": "errors",
}

__all__ = [
    "ClipDataset", "DatasetError", "NonFiniteLossError", "Objective", "TrainConfig",
    "TrainConfigError", "TrainResult", "Trainer", "TrainingError", "load_config",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"derain_training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'derain_training' has no attribute {name!r}")
