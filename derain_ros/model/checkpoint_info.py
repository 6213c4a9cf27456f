"""A checkpoint's JSON description, read without torch (the node's onnxruntime path).

The weights file and everything that needs torch stay in
:mod:`derain_ros.model.checkpoint`, which re-exports all of this.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from derain_ros.errors import CheckpointError
from derain_ros.model.config import ModelConfig, ModelConfigError
from derain_ros.model.contract import InputContract, InputContractError, migrate_checkpoint_info

#: Identifies our JSON files, and its layout version (bump on incompatible change).
FORMAT = "derain_ros.checkpoint"
FORMAT_VERSION = 2
#: Older layouts this version reads (through the contract migration).
READABLE_VERSIONS = (1, 2)



class CheckpointNotFoundError(CheckpointError):
    """The weights file or its JSON description does not exist."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file is unreadable, truncated, or does not match its recorded hash."""


class CheckpointConfigMismatchError(CheckpointError):
    """The checkpoint was saved from a network of another configuration (size, channels, ...).

    ``fields`` maps each differing field to ``(checkpoint_value, expected_value)``.
    """

    def __init__(self, message: str, fields: Mapping[str, tuple[Any, Any]] | None = None):
        super().__init__(message)
        self.fields = dict(fields or {})


class CheckpointKeyMismatchError(CheckpointError):
    """Tensor names differ: ``missing`` (network has, file lacks) and ``unexpected`` (file only)."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected


class CheckpointShapeMismatchError(CheckpointError):
    """Tensors whose shapes differ: ``shapes[key] = (file_shape, network_shape)``."""

    def __init__(self, message: str, shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]):
        super().__init__(message)
        self.shapes = dict(shapes)


# -- paths ---------------------------------------------------------------------------------
def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, json)`` paths for a stem, a ``.safetensors`` or a ``.json`` path."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")



def read_checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description of a checkpoint (validated format; weights not read).

    Always has a validated ``input_contract`` (format 1 files are migrated).
    """
    weights_path, json_path = checkpoint_paths(path)
    if not json_path.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint description {json_path} not found"
            + ("" if weights_path.is_file() else f" (nor weights {weights_path})")
        )
    try:
        info = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointCorruptError(f"{json_path}: not a readable JSON file: {err}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointCorruptError(
            f"{json_path}: not a derain_ros checkpoint (format != {FORMAT!r})"
        )
    if info.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointCorruptError(
            f"{json_path}: format_version {info.get('format_version')!r} is not supported "
            f"(this derain_ros reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    if info.get("format_version") == 2 and "input_contract" not in info:
        raise CheckpointCorruptError(f"{json_path}: no input_contract (required in format 2)")
    try:
        return migrate_checkpoint_info(info, str(json_path))
    except InputContractError as err:
        raise CheckpointConfigMismatchError(f"{json_path}: {err}") from err


def read_weights_blob(path: str | os.PathLike[str], info: Mapping[str, Any]) -> bytes:
    """The bytes of a checkpoint's weights file after checking its size and SHA-256
    against its JSON description ``info`` (torch-free: the loader and the engine's
    torch-free path share it)."""
    weights_path, _ = checkpoint_paths(path)
    if not weights_path.is_file():
        raise CheckpointNotFoundError(f"checkpoint weights {weights_path} not found")
    try:
        blob = weights_path.read_bytes()
    except OSError as err:
        raise CheckpointCorruptError(f"{weights_path}: cannot read: {err}") from err
    want_bytes = info.get("weights_bytes")
    if want_bytes is not None and len(blob) != want_bytes:
        raise CheckpointCorruptError(
            f"{weights_path}: {len(blob)} bytes, its JSON records {want_bytes} "
            f"({'truncated' if len(blob) < want_bytes else 'extra bytes'})"
        )
    want_sha = info.get("weights_sha256")
    if want_sha is not None and hashlib.sha256(blob).hexdigest() != want_sha:
        raise CheckpointCorruptError(
            f"{weights_path}: SHA-256 differs from the one in its JSON (corrupt or edited file)"
        )
    return blob


def checkpoint_contract(info: Mapping[str, Any], source: str = "checkpoint") -> InputContract:
    """The :class:`InputContract` of a description from :func:`read_checkpoint_info`."""
    try:
        return InputContract.from_dict(info["input_contract"])
    except (KeyError, InputContractError) as err:
        raise CheckpointConfigMismatchError(f"{source}: no usable input contract: {err}") from err


def checkpoint_config(info: Mapping[str, Any], source: str = "checkpoint") -> ModelConfig:
    """Rebuild the :class:`ModelConfig` recorded in a checkpoint description."""
    raw = info.get("config")
    if not isinstance(raw, dict):
        raise CheckpointCorruptError(f"{source}: JSON has no 'config' object")
    try:
        return ModelConfig.from_dict(raw)
    except (ModelConfigError, TypeError, ValueError) as err:
        raise CheckpointConfigMismatchError(f"{source}: config not usable here: {err}") from err


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "CheckpointConfigMismatchError",
    "CheckpointCorruptError",
    "CheckpointKeyMismatchError",
    "CheckpointNotFoundError",
    "CheckpointShapeMismatchError",
    "checkpoint_config",
    "checkpoint_contract",
    "checkpoint_paths",
    "read_checkpoint_info",
    "read_weights_blob",
]
