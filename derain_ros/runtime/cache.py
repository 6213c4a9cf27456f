"""The on-disk cache of exported graphs and engine caches, keyed by what they depend on.

Layout under the cache directory (:func:`default_cache_dir`:
``$XDG_CACHE_HOME/derain_ros``, else ``~/.cache/derain_ros``)::

    onnx/<name>-c<config8>-w<weights16>/<W>x<H>-opset<N>-v<EXPORT_VERSION>.onnx
    onnx/<name>-c<config8>-w<weights16>/<W>x<H>-opset<N>-v<EXPORT_VERSION>.json
    tensorrt/<name>-c<config8>-w<weights16>/<W>x<H>-opset<N>-v<EXPORT_VERSION>-<fp32|fp16>/

- ``config8``: the first 8 hex digits of the SHA-256 of the network's configuration
  (every :class:`~derain_ros.model.ModelConfig` field, as JSON with sorted keys);
- ``weights16``: the first 16 hex digits of the weights' hash: the checkpoint JSON's
  ``weights_sha256`` (the hash of its ``.safetensors`` file), or, for a network that only
  exists in memory, :func:`state_dict_sha256` (so the same weights loaded from a file and
  hashed in memory give two keys: pass ``checkpoint_sha`` where there is a file);
- ``W x H`` the frame size in pixels, ``N`` the ONNX opset, ``EXPORT_VERSION`` this
  module's export format (bumped when the exported graph changes for the same weights).

Different weights, configuration, size, opset or export format give a different path,
so a change never reuses a stale graph; old entries stay until removed
(:func:`clear_cache`). The ONNX graph is shared by every onnxruntime execution provider
(CPU, CUDA, TensorRT); the TensorRT EP's engine and timing caches are per precision.

Writes are atomic: the graph is exported to a temporary file in the same folder and
renamed into place, then the JSON description is written the same way; an entry counts
as present only when both exist and the JSON names the same key (a crash mid-export
leaves at most a stray ``.tmp`` file, never a truncated graph under the real name).

No torch here: hashing an in-memory network (:func:`state_dict_sha256`) and exporting
(:func:`ensure_onnx` when the entry is missing) import it on demand. A checkpoint on disk
(:class:`CheckpointExport`) is exported in a child process instead, so that the process
that runs the graph (a node) never imports torch: the import holds its interpreter for
seconds, which stalls the node's callbacks and loses frames around a checkpoint swap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derain_ros.errors import ConfigError
from derain_ros.fileio import atomic_write

_log = logging.getLogger(__name__)

#: Version of what :func:`ensure_onnx` writes for given weights (bump when the exported
#: graph changes: derain_ros.model.export, the network's forward, the exporter settings).
EXPORT_VERSION = 1
#: The ONNX opset the runners export with unless told otherwise.
DEFAULT_OPSET = 17

_EXPORTS = [0]  # graphs exported by this process (see export_count)


def export_count() -> int:
    """How many ONNX graphs this process has exported so far, itself or through a child
    process (tests check cache reuse)."""
    return _EXPORTS[0]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/derain_ros`` when ``XDG_CACHE_HOME`` is set, else
    ``~/.cache/derain_ros``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "derain_ros"


@dataclass(frozen=True)
class ModelSpec:
    """What the runners need to know about a network without torch.

    Attributes:
        name: registered model name (``derain_tiny``, ...).
        in_chans: channels per frame (3 RGB or 1).
        event_bins: voxel bins per interval.
        use_events: False for a frames-only network (no ``events`` input).
        config_sha256: SHA-256 of the full configuration (JSON, sorted keys).
    """

    name: str
    in_chans: int
    event_bins: int
    use_events: bool
    config_sha256: str

    @classmethod
    def from_config(cls, config: Any) -> ModelSpec:
        """From a :class:`~derain_ros.model.ModelConfig` or its dict (a checkpoint JSON's
        ``config`` object): the two give the same :attr:`config_sha256`."""
        if isinstance(config, ModelSpec):
            return config
        if isinstance(config, Mapping):
            fields = dict(config)
        elif hasattr(config, "to_dict"):
            fields = dict(config.to_dict())
        else:
            import dataclasses

            if not dataclasses.is_dataclass(config) or isinstance(config, type):
                raise ConfigError(f"not a model configuration: {type(config).__name__}")
            fields = dataclasses.asdict(config)
        try:
            text = json.dumps(fields, sort_keys=True, default=list)
            return cls(name=str(fields["name"]), in_chans=int(fields["in_chans"]),
                       event_bins=int(fields["event_bins"]),
                       use_events=bool(fields["use_events"]),
                       config_sha256=hashlib.sha256(text.encode()).hexdigest())
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"model configuration lacks a field the runners need: {err}") from err


def spec_from_checkpoint(path: str | os.PathLike[str]) -> tuple[ModelSpec, str]:
    """``(spec, weights_sha256)`` from a checkpoint's JSON description, without torch.

    ``path`` is the stem, the ``.json`` or the ``.safetensors`` path. The weights file
    itself is not read (its hash is the JSON's; the loader checks it when it loads).
    """
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    json_path = p.with_name(p.name + ".json")
    try:
        info = json.loads(json_path.read_text())
        spec = ModelSpec.from_config(info["config"])
        sha = str(info["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{json_path}: not a readable checkpoint description: {err}") from err
    return spec, sha


def state_dict_sha256(net: Any) -> str:
    """SHA-256 of a network's weights as float32 (names in sorted order, shapes, bytes).

    For a network that exists only in memory; wrapper prefixes (``_orig_mod.``,
    ``module.``) are stripped so a compiled or DDP-wrapped network hashes the same.
    """
    import torch

    from derain_ros.model.checkpoint import strip_wrapper_prefixes

    digest = hashlib.sha256()
    items = sorted((strip_wrapper_prefixes(k), v) for k, v in net.state_dict().items())
    for key, value in items:
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(key.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything an exported graph depends on (see the module docstring)."""

    spec: ModelSpec
    weights_sha256: str
    height: int
    width: int
    opset: int = DEFAULT_OPSET

    @property
    def model_dir(self) -> str:
        return f"{self.spec.name}-c{self.spec.config_sha256[:8]}-w{self.weights_sha256[:16]}"

    @property
    def stem(self) -> str:
        return f"{self.width}x{self.height}-opset{self.opset}-v{EXPORT_VERSION}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.spec.name, "config_sha256": self.spec.config_sha256,
            "weights_sha256": self.weights_sha256, "height": self.height, "width": self.width,
            "opset": self.opset, "export_version": EXPORT_VERSION,
            "in_chans": self.spec.in_chans, "event_bins": self.spec.event_bins,
            "use_events": self.spec.use_events,
        }


def onnx_path(cache_dir: Path, key: CacheKey) -> Path:
    """Where the ONNX graph for ``key`` lives (its JSON description beside it)."""
    return Path(cache_dir) / "onnx" / key.model_dir / f"{key.stem}.onnx"


def tensorrt_dir(cache_dir: Path, key: CacheKey, precision: str) -> Path:
    """The TensorRT EP's engine and timing cache folder for ``key`` at ``precision``."""
    return Path(cache_dir) / "tensorrt" / key.model_dir / f"{key.stem}-{precision}"


def _entry_valid(path: Path, key: CacheKey) -> bool:
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return False
    try:
        recorded = json.loads(meta.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == key.as_dict()


def has_graph(cache_dir: str | os.PathLike[str], key: CacheKey) -> bool:
    """Whether the cache holds a complete entry for ``key`` (no export needed)."""
    return _entry_valid(onnx_path(Path(cache_dir), key), key)


@dataclass(frozen=True)
class CheckpointExport:
    """A checkpoint file whose graphs :func:`ensure_onnx` exports in a child process.

    Passed where a network loader goes (``get_net``). The child
    (``python -m derain_ros.runtime.export_child``) loads the checkpoint with torch
    (checking every tensor name and shape), checks that it is the network the key
    describes, and writes the cache entry; this process only waits (no GIL held) and
    reads the entry. Calling the object loads the network here instead (the fallback
    for callers that want the network itself).
    """

    checkpoint: Path
    timeout_s: float = 900.0

    def __call__(self) -> Any:
        from derain_ros.model import load_checkpoint

        return load_checkpoint(self.checkpoint)

    def export(self, cache_dir: Path, key: CacheKey) -> None:
        """Write ``key``'s entry under ``cache_dir`` from a child process.

        Raises :class:`ConfigError` with the child's last output when it fails.
        """
        cmd = [sys.executable, "-m", "derain_ros.runtime.export_child", str(self.checkpoint),
               str(cache_dir), json.dumps(key.as_dict())]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ConfigError(f"exporting {self.checkpoint} in a child process failed: "
                              f"{err}") from err
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ConfigError(f"exporting {self.checkpoint} at {key.width}x{key.height} "
                              f"failed (child exit {proc.returncode}): {' | '.join(tail)}")
        _log.info("a child process exported %s at %dx%d (%.1f s)", key.spec.name, key.width,
                  key.height, time.perf_counter() - start)


def ensure_onnx(cache_dir: Path, key: CacheKey,
                get_net: Callable[[], Any] | None) -> tuple[Path, bool]:
    """The cached graph for ``key``, exporting it first when missing: ``(path, exported)``.

    ``get_net`` returns the network to export (called only on a miss: torch is imported
    only then); a :class:`CheckpointExport` exports in a child process (no torch here);
    None means "no network here", and a miss then raises :class:`ConfigError`.
    """
    path = onnx_path(cache_dir, key)
    if _entry_valid(path, key):
        return path, False
    if get_net is None:
        raise ConfigError(
            f"no exported graph for {key.spec.name} at {key.width}x{key.height} in {path.parent} "
            "and no network to export one from (pass the network, or a loader for it)")
    if isinstance(get_net, CheckpointExport):
        get_net.export(Path(cache_dir), key)
        if not _entry_valid(path, key):
            raise ConfigError(f"the child process exported no graph for {key.spec.name} at "
                              f"{key.width}x{key.height} in {path.parent}")
        _EXPORTS[0] += 1
        return path, True
    net = get_net()
    from derain_ros.model.export import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    start = time.perf_counter()
    try:
        export_onnx(net, tmp, key.height, key.width, opset=key.opset)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    import torch

    meta = {"key": key.as_dict(), "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "export_s": round(time.perf_counter() - start, 3)}
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    _EXPORTS[0] += 1
    _log.info("exported %s at %dx%d to %s (%.1f s)", key.spec.name, key.width, key.height,
              path, time.perf_counter() - start)
    return path, True


def clear_cache(cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Remove every cached graph and engine under ``cache_dir`` (default: the default)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for sub in ("onnx", "tensorrt"):
        shutil.rmtree(root / sub, ignore_errors=True)


__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_VERSION",
    "CacheKey",
    "CheckpointExport",
    "ModelSpec",
    "clear_cache",
    "default_cache_dir",
    "ensure_onnx",
    "export_count",
    "has_graph",
    "onnx_path",
    "spec_from_checkpoint",
    "state_dict_sha256",
    "tensorrt_dir",
]
