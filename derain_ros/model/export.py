"""ONNX export of a deraining network, and its check against onnxruntime.

The exported graph has inputs ``frames`` ``[1, 3, C, H, W]`` and (event networks only)
``events`` ``[1, 2, bins, H, W]``, float32, and outputs ``background`` (clamped to
[0, 1], ready for display) and ``rain`` (unclamped), both ``[1, C, H, W]``. The size
is fixed at export time (the padding to ``pad_multiple`` is baked in). Uses the
TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which the project does not install.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from derain_ros.errors import ModelError
from derain_ros.model.checkpoint import unwrap_model
from derain_ros.model.derain_net import DerainNet


class OnnxExportError(ModelError):
    """Export failed, or the exported graph disagrees with torch beyond tolerance."""


class _EventsGraph(nn.Module):
    def __init__(self, net: DerainNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: Tensor, events: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(frames, events)
        return out.background.clamp(0.0, 1.0), out.rain


class _FramesGraph(nn.Module):
    def __init__(self, net: DerainNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(frames, None)
        return out.background.clamp(0.0, 1.0), out.rain


def _graph(model: nn.Module) -> tuple[nn.Module, DerainNet]:
    net = unwrap_model(model)
    return (_EventsGraph(net) if net.config.use_events else _FramesGraph(net)), net


def export_onnx(model: nn.Module, path: str | os.PathLike[str], height: int, width: int,
                opset: int = 17) -> Path:
    """Export ``model`` for ``height`` x ``width`` px frames (batch 1) to ``path``.

    The network is exported in float32 on the CPU, in eval mode (a copy: the caller's
    network is left where it was). Returns the written path.
    """
    graph, net = _graph(model)
    graph = copy.deepcopy(graph).to("cpu", torch.float32).eval()
    frames, events = net.example_inputs(height, width)
    args = (frames,) if events is None else (frames, events)
    names = ["frames"] if events is None else ["frames", "events"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                graph, args, str(out), input_names=names, output_names=["background", "rain"],
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )
    except Exception as err:  # the exporter raises many unrelated types
        raise OnnxExportError(f"ONNX export of {net.config.name} failed: {err}") from err
    return out


def verify_onnx(model: nn.Module, path: str | os.PathLike[str], height: int, width: int, *,
                atol: float = 1e-4, seed: int = 0) -> float:
    """Run the ONNX file in onnxruntime (CPU) and torch on the same random clip.

    Returns the largest absolute difference over both outputs; raises
    :class:`OnnxExportError` when it exceeds ``atol``.
    """
    # Imported here: onnxruntime is an optional extra ("export") and slow to import.
    import onnxruntime as ort

    graph, net = _graph(model)
    frames, events = net.example_inputs(height, width, seed=seed)
    net_device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            args = (frames,) if events is None else (frames, events)
            want = [t.float().cpu().numpy() for t in graph(*(a.to(net_device) for a in args))]
    finally:
        net.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"frames": frames.numpy()}
    if events is not None:
        feeds["events"] = events.numpy()
    got = session.run(["background", "rain"], feeds)
    worst = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))
    if not worst <= atol:
        raise OnnxExportError(
            f"{path}: onnxruntime differs from torch by {worst:.3g} (tolerance {atol:.3g})"
        )
    return worst


__all__ = ["OnnxExportError", "export_onnx", "verify_onnx"]
