"""Bag replay through the node over DDS, quality metrics, baselines and reports.

Public API (imported on first use, so ``derain-ros replay`` does not pay for torch)::

    replay_bag(bag, out_bag, *, rate=1.0, lossless=False, node_name="derain_node", ...)
        -> ReplayResult                                    # derain-ros replay
    evaluate_bag(out_bag, *, input_bag=None, report_dir=None, ...) -> EvalResult
                                                           # derain-ros eval
    write_report(result, folder) -> ReportPaths
    psnr, ssim (tensors), image_psnr, image_ssim (numpy)   # the project's one metrics module
    niqe(image)                                            # no-reference, offline
    temporal_median(frames, window=None), BASELINES
"""

from __future__ import annotations

import importlib
from typing import Any

from derain_ros.eval.errors import (
    EvalError,
    FramesMismatchError,
    NodeNotFoundError,
    NoFramesError,
    NoReferenceError,
    ReplayError,
    RosEnvironmentError,
)

_LAZY = {
    "BASELINES": "baselines", "temporal_median": "baselines",
    "EvalResult": "evaluate", "evaluate_bag": "evaluate",
    "image_psnr": "metrics", "image_ssim": "metrics", "psnr": "metrics", "ssim": "metrics",
    "niqe": "noref",
    "ReplayResult": "replay", "replay_bag": "replay",
    "ReportPaths": "report", "write_report": "report",
}

__all__ = [
    "BASELINES",
    "EvalError",
    "EvalResult",
    "FramesMismatchError",
    "NoFramesError",
    "NoReferenceError",
    "NodeNotFoundError",
    "ReplayError",
    "ReplayResult",
    "ReportPaths",
    "RosEnvironmentError",
    "evaluate_bag",
    "image_psnr",
    "image_ssim",
    "niqe",
    "psnr",
    "replay_bag",
    "ssim",
    "temporal_median",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"derain_ros.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'derain_ros.eval' has no attribute {name!r}")
