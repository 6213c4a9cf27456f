"""Training-state checkpoints: safetensors for tensors, JSON for the rest, never pickle.

A checkpoint is a folder ``RUN/checkpoints/step_00000100/`` holding ``state.safetensors``
(network, discriminator and loss-head weights, optimiser moments, RNG states) and
``state.json`` (step, optimiser hyper-parameters, scheduler state, scalar RNG state,
the run's config). It is written under a temporary name and renamed into place, and
``RUN/checkpoints/latest.json`` (itself replaced atomically) names the newest one, so
a crash mid-write never leaves a half checkpoint that ``--resume`` would pick up.

The final network for the node is exported separately with
``derain_ros.model.save_checkpoint`` (what the engine loads).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from derain_ros.fileio import atomic_write
from derain_training.errors import TrainingError

__all__ = [
    "CheckpointState",
    "find_latest",
    "get_rng_state",
    "load_state",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "save_state",
    "set_rng_state",
]

FORMAT = "derain_training.state"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointState(dict):
    """``{"tensors": {...}, "meta": {...}, "path": Path}`` of a loaded training checkpoint."""


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1))


# -- optimiser <-> flat tensors + JSON --------------------------------------------------
def optimizer_to_flat(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict]:
    """Split an optimiser's state dict into tensors (``PREFIX.ID.NAME``) and JSON data."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, prefix: str, tensors: Mapping[str, Tensor],
                        meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_flat` (loads into ``opt``)."""
    state: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for key, value in tensors.items():
        if key.startswith(head):
            pid, name = key[len(head):].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


# -- RNG ---------------------------------------------------------------------------------
def get_rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """torch, numpy and Python RNG states as (tensors, JSON data)."""
    # (cast: the legacy global generator is an MT19937, whose state is this tuple; numpy's
    # stub also allows the dict form of other bit generators)
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    py_state = random.getstate()
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, meta


def set_rng_state(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` saved."""
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


# -- save / load ---------------------------------------------------------------------------
def module_tensors(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """``PREFIX.name`` -> tensor for a module's state dict (wrapper prefixes stripped)."""
    from derain_ros.model.checkpoint import strip_wrapper_prefixes

    return {f"{prefix}.{strip_wrapper_prefixes(k)}": v.detach().cpu().clone().contiguous()
            for k, v in module.state_dict().items()}


def load_module(module: nn.Module, prefix: str, tensors: Mapping[str, Tensor]) -> None:
    """Load ``PREFIX.*`` tensors into ``module`` strictly (names must match)."""
    head = prefix + "."
    sd = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise TrainingError(
            f"training checkpoint does not fit the {prefix!r} module: {err}") from err


def save_state(ckpt_dir: Path, step: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any],
               keep: int = 3) -> Path:
    """Write ``ckpt_dir/step_NNNNNNNN`` atomically, point ``latest.json`` at it, prune old ones."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=ckpt_dir))
    try:
        save_file(dict(tensors), str(tmp / "state.safetensors"), metadata={"format": FORMAT})
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, **meta}
        (tmp / "state.json").write_text(json.dumps(body, indent=1, default=_json_default))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_json_atomic(ckpt_dir / "latest.json", {"step": step, "dir": final.name})
    if keep > 0:
        old = sorted(p for p in ckpt_dir.iterdir() if _STEP_DIR.match(p.name))[:-keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    return final


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set):
        return list(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def find_latest(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (``latest.json``, else the highest step), or None."""
    pointer = ckpt_dir / "latest.json"
    if pointer.is_file():
        try:
            target = ckpt_dir / json.loads(pointer.read_text())["dir"]
            if (target / "state.json").is_file():
                return target
        except (OSError, ValueError, KeyError):
            pass
    if not ckpt_dir.is_dir():
        return None
    steps = sorted(p for p in ckpt_dir.iterdir()
                   if _STEP_DIR.match(p.name) and (p / "state.json").is_file())
    return steps[-1] if steps else None


def load_state(path: Path) -> CheckpointState:
    """Read a checkpoint folder written by :func:`save_state`."""
    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise TrainingError(f"cannot read training checkpoint {path}: {err}") from err
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise TrainingError(f"{path}: not a derain_training checkpoint of version {FORMAT_VERSION}")
    return CheckpointState(tensors=tensors, meta=meta, path=path)
