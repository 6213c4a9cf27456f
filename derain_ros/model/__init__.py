"""The event-guided deraining network: sizes, factory, checkpoints, ONNX export.

Contract (what the engine, the node and the training package code against):

- ``create_model(name, *, pretrained=False, checkpoint=None, **overrides) -> DerainNet``.
  Names (:func:`list_models`): ``derain_tiny`` (real-time on a 2-core CPU),
  ``derain_base`` (about the paper's size, ~4 M parameters, for a GPU) and their
  frames-only twins ``derain_tiny_frames`` / ``derain_base_frames`` (same network
  without the event branch, for ablation). Overrides are :class:`ModelConfig` fields,
  e.g. ``in_chans=1`` for grayscale frames. ``pretrained=True`` loads
  :func:`default_checkpoint_path` (``weights/NAME.safetensors``, ``NAME_gray`` for
  ``in_chans=1``) or raises :class:`CheckpointNotFoundError`.
- :class:`ModelConfig` (frozen): ``name, in_chans (3 | 1), event_bins (10), use_events,
  widths, blocks, decoder_blocks, head_chans, fusion_blocks, refine_blocks,
  internal_scale, reduction, gate_kernels``; every network has ``model.config``.
- :class:`InputContract` (frozen, validated enums): how the network's inputs are prepared
  (frame channels and range, event bins, voxel kind and normalisation, polarity, clip
  length and arrangement, frames-only, precision); every network has
  ``model.input_contract``, every checkpoint carries it, and :class:`InputBuilder` is the
  one code that prepares inputs from it (engine, training, benchmarks).
- ``model(frames, events) -> DerainOutput``:
  ``frames`` ``[N, 3, C, H, W]`` float in [0, 1] (previous, centre = target, next);
  ``events`` ``[N, 2, bins, H, W]`` voxel grids of the intervals previous->centre and
  centre->next (prepared by :class:`InputBuilder`; the network compresses them itself by
  ``v / sqrt(1 + |v|)``), or None for a frames-only network (an event network given
  None, or a frames-only network given events, raises :class:`ModelInputError`). Any
  H, W (padded internally to ``config.pad_multiple``, cropped back).
  ``DerainOutput(background [N, C, H, W], rain [N, C, H, W], features)``: ``background``
  is ``centre + correction`` and ``rain`` the rain layer, both **unclamped** (train
  with ``L1(rain + background, centre)`` etc.; clamp ``background`` to [0, 1] for
  display). ``features`` is a tuple of 3 :class:`ScaleFeatures` (``frame_rain,
  frame_background, event_rain, event_background``, the encoder features for the
  cross-modal contrastive losses, on the padded grid at 1, 1/2, 1/4 of the working
  resolution) or None for a frames-only network.
- ``save_checkpoint(model, path, provenance)`` writes ``NAME.safetensors`` +
  ``NAME.json``; ``load_checkpoint(path, *, map_location="cpu", expected=None)``
  rebuilds and loads strictly; ``load_weights(model, path)`` loads into an existing
  network. Mismatches raise :class:`CheckpointError` subclasses naming what differs.
- ``export_onnx(model, path, height, width, opset=17)`` and ``verify_onnx(...)``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from derain_ros.model.checkpoint_info import (
    CheckpointConfigMismatchError,
    CheckpointCorruptError,
    CheckpointKeyMismatchError,
    CheckpointNotFoundError,
    CheckpointShapeMismatchError,
    read_checkpoint_info,
)
from derain_ros.model.config import ModelConfig, ModelConfigError
from derain_ros.model.contract import ARRANGEMENTS, InputContract, InputContractError
from derain_ros.model.inputs import CLIP_TARGET, InputBuilder, build_clip, mirror_voxel
from derain_ros.model.registry import (
    DEFAULT_MODEL,
    UnknownModelError,
    default_checkpoint_path,
    list_models,
    model_config,
    register_model,
)

if TYPE_CHECKING:
    from derain_ros.model.checkpoint import load_checkpoint, load_weights, save_checkpoint
    from derain_ros.model.derain_net import (
        CLIP_FRAMES,
        CLIP_INTERVALS,
        DerainNet,
        DerainOutput,
        ModelInputError,
        ScaleFeatures,
    )
    from derain_ros.model.export import OnnxExportError, export_onnx, verify_onnx
    from derain_ros.model.factory import create_model

#: What needs torch, imported at first use (PEP 562): importing this package (the input
#: contract and builder, the registry, checkpoint descriptions) does not import torch,
#: so a node on the onnxruntime back-end never loads it.
_LAZY = {
    "load_checkpoint": "checkpoint", "load_weights": "checkpoint",
    "save_checkpoint": "checkpoint",
    "CLIP_FRAMES": "derain_net", "CLIP_INTERVALS": "derain_net", "DerainNet": "derain_net",
    "DerainOutput": "derain_net", "ModelInputError": "derain_net",
    "ScaleFeatures": "derain_net",
    "OnnxExportError": "export", "export_onnx": "export", "verify_onnx": "export",
    "create_model": "factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"derain_ros.model.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ARRANGEMENTS",
    "CLIP_FRAMES",
    "CLIP_INTERVALS",
    "CLIP_TARGET",
    "DEFAULT_MODEL",
    "CheckpointConfigMismatchError",
    "CheckpointCorruptError",
    "CheckpointKeyMismatchError",
    "CheckpointNotFoundError",
    "CheckpointShapeMismatchError",
    "DerainNet",
    "DerainOutput",
    "InputBuilder",
    "InputContract",
    "InputContractError",
    "ModelConfig",
    "ModelConfigError",
    "ModelInputError",
    "OnnxExportError",
    "ScaleFeatures",
    "UnknownModelError",
    "build_clip",
    "create_model",
    "default_checkpoint_path",
    "export_onnx",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "mirror_voxel",
    "model_config",
    "read_checkpoint_info",
    "register_model",
    "save_checkpoint",
    "verify_onnx",
]
