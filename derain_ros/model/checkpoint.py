"""Self-describing checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (description).

The JSON holds the model name, every :class:`ModelConfig` field, the network's
:class:`~derain_ros.model.contract.InputContract` (how its inputs are prepared, as data),
versions, the size and SHA-256 of the weights file, and free-form training provenance.
Format 1 files (before the contract) are read through
:func:`~derain_ros.model.contract.migrate_checkpoint_info`. Loading is strict: the file must be
intact (size and hash), its config must match what the caller expects, and its tensor
names and shapes must match the network exactly; otherwise a :class:`CheckpointError`
subclass names exactly what does not match. Weights are never unpickled.

Wrapper prefixes (``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``) are
stripped on save and on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

import derain_ros
from derain_ros.errors import CheckpointError
from derain_ros.fileio import atomic_write
from derain_ros.model.checkpoint_info import (
    FORMAT,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    CheckpointConfigMismatchError,
    CheckpointCorruptError,
    CheckpointKeyMismatchError,
    CheckpointNotFoundError,
    CheckpointShapeMismatchError,
    checkpoint_config,
    checkpoint_contract,
    checkpoint_paths,
    read_checkpoint_info,
    read_weights_blob,
)
from derain_ros.model.config import ModelConfig
from derain_ros.model.contract import InputContract, InputContractError
from derain_ros.model.derain_net import DerainNet
from derain_ros.model.registry import model_config

#: Prefixes added by wrappers (DDP, torch.compile) that are not part of the network.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: How many keys an error message lists before "... and N more".
_MAX_LISTED = 12


def strip_wrapper_prefixes(key: str) -> str:
    """``module._orig_mod.x.weight`` -> ``x.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                stripped = True
    return key


def unwrap_model(model: nn.Module) -> DerainNet:
    """The :class:`DerainNet` inside DDP / ``torch.compile`` wrappers."""
    inner: nn.Module = model
    for _ in range(8):
        if isinstance(inner, DerainNet):
            return inner
        nxt = getattr(inner, "_orig_mod", None) or getattr(inner, "module", None)
        if not isinstance(nxt, nn.Module):
            break
        inner = nxt
    raise CheckpointError(f"not a DerainNet (or a wrapper of one): {type(model).__name__}")


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


# -- save ----------------------------------------------------------------------------------
def write_checkpoint(tensors: Mapping[str, Tensor], config: ModelConfig,
                     path: str | os.PathLike[str], provenance: Mapping[str, Any] | None = None,
                     contract: InputContract | None = None) -> Path:
    """Write a tensor dict and its description as a checkpoint pair (low level).

    :func:`save_checkpoint` calls this with a network's state; tools that edit weights
    use it directly. ``contract`` defaults to a fresh network's
    (:meth:`InputContract.for_config`) and must agree with ``config``. Returns the
    weights path.
    """
    contract = InputContract.for_config(config) if contract is None else contract
    contract.check_matches(config, str(path))
    weights_path, json_path = checkpoint_paths(path)
    state = {
        strip_wrapper_prefixes(k): v.detach().to("cpu").contiguous() for k, v in tensors.items()
    }
    blob = st_save(state, metadata={"format": FORMAT, "model": config.name})
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.name,
        "config": config.to_dict(),
        "in_chans": config.in_chans,
        "use_events": config.use_events,
        "event_bins": config.event_bins,
        "input_contract": contract.to_dict(),
        "num_parameters": int(sum(v.numel() for v in state.values())),
        "package_version": derain_ros.__version__,
        "torch_version": torch.__version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights_file": weights_path.name,
        "weights_bytes": len(blob),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "provenance": dict(provenance or {}),
    }
    try:
        text = json.dumps(description, indent=2, sort_keys=False, default=str) + "\n"
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"provenance is not JSON-serialisable: {err}") from err
    atomic_write(weights_path, blob)
    atomic_write(json_path, text.encode())
    return weights_path


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str],
                    provenance: Mapping[str, Any] | None = None,
                    contract: InputContract | None = None) -> Path:
    """Save a network (or a DDP/compiled wrapper of one) as ``NAME.safetensors`` + ``NAME.json``.

    Args:
        model: the network; its weights are written in their current dtype (float32
            for a normally trained network).
        path: a stem (``weights/derain_tiny``) or either file's path.
        provenance: JSON-serialisable facts about the training (data, steps, metrics).
        contract: the input contract the weights were trained with; default the
            network's ``input_contract``.

    Returns:
        The ``.safetensors`` path.
    """
    net = unwrap_model(model)
    return write_checkpoint(net.state_dict(), net.config, path, provenance,
                            net.input_contract if contract is None else contract)


# -- load ----------------------------------------------------------------------------------
def read_checkpoint_tensors(path: str | os.PathLike[str], info: Mapping[str, Any] | None = None,
                            ) -> dict[str, Tensor]:
    """The tensors of a checkpoint (CPU), after checking size and SHA-256 against its JSON."""
    weights_path, _ = checkpoint_paths(path)
    info = read_checkpoint_info(path) if info is None else info
    blob = read_weights_blob(path, info)
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointCorruptError(
            f"{weights_path}: not a readable safetensors file: {err}"
        ) from err
    return {strip_wrapper_prefixes(k): v for k, v in tensors.items()}


def load_state_strict(model: nn.Module, tensors: Mapping[str, Tensor], source: str = "checkpoint",
                      ) -> None:
    """Copy ``tensors`` into ``model``; names and shapes must match exactly.

    Raises :class:`CheckpointKeyMismatchError` (listing missing and unexpected names)
    or :class:`CheckpointShapeMismatchError` (listing each name with both shapes).
    Values are cast to the network's dtype and device.
    """
    net = unwrap_model(model)
    own = net.state_dict()
    given = {strip_wrapper_prefixes(k): v for k, v in tensors.items()}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from the file: {_listed(missing)}")
        if unexpected:
            parts.append(f"not in the network: {_listed(unexpected)}")
        raise CheckpointKeyMismatchError(
            f"{source} does not fit {net.config.name}: " + "; ".join(parts), missing, unexpected
        )
    shapes = {
        k: (tuple(given[k].shape), tuple(own[k].shape))
        for k in sorted(own)
        if tuple(given[k].shape) != tuple(own[k].shape)
    }
    if shapes:
        listed = [f"{k}: file {list(a)} vs network {list(b)}" for k, (a, b) in shapes.items()]
        raise CheckpointShapeMismatchError(
            f"{source} does not fit {net.config.name}: shape differs for {_listed(listed)}", shapes
        )
    with torch.no_grad():
        net.load_state_dict(
            {k: given[k].to(device=own[k].device, dtype=own[k].dtype) for k in own}, strict=True
        )


def _check_config(found: ModelConfig, expected: ModelConfig, source: str) -> None:
    diff = found.diff(expected)
    if diff:
        listed = [f"{k}: file {a!r} vs expected {b!r}" for k, (a, b) in diff.items()]
        raise CheckpointConfigMismatchError(
            f"{source} was saved from {found.name!r}, which differs from {expected.name!r} in "
            + "; ".join(listed),
            diff,
        )


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint into an existing network; its config must equal the network's.

    Returns the checkpoint's JSON description (provenance included).
    """
    net = unwrap_model(model)
    info = read_checkpoint_info(path)
    source = str(checkpoint_paths(path)[0])
    _check_config(checkpoint_config(info, source), net.config, source)
    contract = checkpoint_contract(info, source)
    load_state_strict(net, read_checkpoint_tensors(path, info), source)
    net.input_contract = contract
    return info


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                    expected: str | ModelConfig | None = None) -> DerainNet:
    """Build the network a checkpoint describes and load its weights (strictly).

    Args:
        path: a stem or either file's path.
        map_location: device for the network.
        expected: a model name (the checkpoint must be of that size; ``in_chans`` may
            differ) or a full :class:`ModelConfig` (every field must match); None accepts
            any size.

    Returns:
        The network, in eval mode, on ``map_location``.
    """
    info = read_checkpoint_info(path)
    source = str(checkpoint_paths(path)[0])
    cfg = checkpoint_config(info, source)
    if isinstance(expected, ModelConfig):
        _check_config(cfg, expected, source)
    elif expected is not None:
        _check_config(cfg, model_config(expected, in_chans=cfg.in_chans), source)
    contract = checkpoint_contract(info, source)
    try:
        contract.check_matches(cfg, source)
    except InputContractError as err:
        raise CheckpointConfigMismatchError(str(err)) from err
    model = DerainNet(cfg)
    load_state_strict(model, read_checkpoint_tensors(path, info), source)
    model.input_contract = contract
    return model.to(map_location).eval()


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
    "load_checkpoint",
    "load_state_strict",
    "load_weights",
    "read_checkpoint_info",
    "read_checkpoint_tensors",
    "save_checkpoint",
    "strip_wrapper_prefixes",
    "unwrap_model",
    "write_checkpoint",
]
