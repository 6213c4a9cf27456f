"""ONNX export, checked against onnxruntime on the same inputs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx", reason="onnx is an optional extra (export)")
pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra (export)")

import onnx

from derain_ros.model import OnnxExportError, create_model, export_onnx, verify_onnx

SIZES = [
    pytest.param("derain_tiny", 3, id="tiny-rgb"),
    pytest.param("derain_tiny_frames", 1, id="tiny_frames-gray"),
    pytest.param("derain_base", 3, id="base-rgb", marks=pytest.mark.slow),
    pytest.param("derain_base_frames", 3, id="base_frames-rgb", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "in_chans"), SIZES)
def test_onnx_matches_torch(tmp_path, name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, in_chans=in_chans).eval()
    height, width = 30, 43  # odd width: exercises the internal padding
    path = export_onnx(model, tmp_path / f"{name}.onnx", height, width)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    inputs = [i.name for i in graph.graph.input]
    assert inputs == (["frames", "events"] if model.config.use_events else ["frames"])
    assert [o.name for o in graph.graph.output] == ["background", "rain"]
    worst = verify_onnx(model, path, height, width, atol=1e-4)
    assert worst < 1e-4
    assert model.training is False  # the caller's network is left as it was


def test_verify_catches_a_different_network(tmp_path):
    torch.manual_seed(0)
    model = create_model("derain_tiny").eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", 16, 24)
    with torch.no_grad():
        model.background_decoder.out.bias.add_(0.1)
    with pytest.raises(OnnxExportError, match="differs from torch"):
        verify_onnx(model, path, 16, 24)
