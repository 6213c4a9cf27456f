"""Runtime back-ends: agreement with torch eager, the export cache, the choice of ``auto``.

Tolerance: every back-end's ``background`` and ``rain`` within :data:`ATOL` (max abs) of
torch eager fp32, for ``derain_tiny`` and its frames-only twin at 64x48 with random
weights (onnxruntime measures ~1e-7 here). The ``torch_compile`` test with inductor
compiles for 6 s with a warm inductor cache and ~45 s cold on 2 cores (marked slow);
the fast one traces the same network with dynamo's ``aot_eager`` back-end.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import derain_ros.runtime as rt
from derain_ros.errors import ConfigError
from derain_ros.model import create_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 48, 64
ATOL = 2e-3
HAVE_ORT = rt.choose_backend("cpu", "fp32")[0] == "onnxruntime"
CUDA = torch.cuda.is_available()
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime is not installed")
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (none here)")
NAMES = ["derain_tiny", "derain_tiny_frames"]


def _net(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name).eval()


def _eager(net, frames, events) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        out = net(frames, events)
    return out.background.clamp(0.0, 1.0).numpy(), out.rain.numpy()


def _worst(got, want) -> float:
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runtime_cache")


def test_import_loads_neither_torch_nor_onnxruntime():
    code = ("import sys, derain_ros.runtime as rt; "
            "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@needs_ort
@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_agrees_with_eager(cache, name):
    net = _net(name)
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    want = _eager(net, frames, events)
    runner = rt.make_runner("onnxruntime", net, "cpu", "fp32", HEIGHT, WIDTH, cache, threads=1)
    assert isinstance(runner, rt.Runner)
    got = runner(frames.numpy(), None if events is None else events.numpy())
    assert all(isinstance(g, np.ndarray) and g.dtype == np.float32 for g in got)
    assert [g.shape for g in got] == [(1, 3, HEIGHT, WIDTH)] * 2
    assert _worst(got, want) <= ATOL
    # torch tensors are accepted too, with the same result
    assert _worst(runner(frames, events), got) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_torch_runner_agrees_with_eager_and_returns_numpy(name):
    net = _net(name)
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    want = _eager(net, frames, events)
    runner = rt.make_runner("torch", net, "cpu", "auto")
    assert runner.name == "torch/cpu/fp32"
    got = runner(frames.numpy(), None if events is None else events.numpy())
    assert all(isinstance(g, np.ndarray) for g in got)
    assert _worst(got, want) == 0.0
    bf16 = rt.make_runner("torch", _net(name), "cpu", "bf16")(frames, events)
    assert _worst(bf16, want) <= 0.1  # bf16 keeps 8 bits of mantissa: a looser bound


def test_torch_compile_wiring(monkeypatch):
    """dynamo traces the network (aot_eager: no code generation, a few seconds)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    net = _net("derain_tiny")
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    want = _eager(net, frames, events)
    runner = rt.make_runner("torch_compile", net, "cpu", "fp32")
    assert runner.backend == "torch_compile"
    assert _worst(runner(frames, events), want) <= ATOL
    small = net.example_inputs(32, 40, seed=2)
    assert runner(*small)[0].shape == (1, 3, 32, 40)
    assert runner.rebuilds == 1  # a new size is a recompilation, counted


@pytest.mark.slow
def test_torch_compile_inductor_agrees_with_eager():
    net = _net("derain_tiny")
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    want = _eager(net, frames, events)
    runner = rt.make_runner("torch_compile", net, "cpu", "fp32")
    assert _worst(runner(frames, events), want) <= ATOL


@needs_ort
def test_cache_reuse_and_invalidation(tmp_path):
    net = _net("derain_tiny")
    before = rt.export_count()
    first = rt.make_runner("onnxruntime", net, "cpu", "fp32", HEIGHT, WIDTH, tmp_path)
    assert (first.exports, rt.export_count()) == (1, before + 1)
    path = first.onnx_paths[(HEIGHT, WIDTH)]
    mtime = path.stat().st_mtime_ns
    meta = json.loads(path.with_suffix(".json").read_text())["key"]
    assert (meta["height"], meta["width"], meta["model"]) == (HEIGHT, WIDTH, "derain_tiny")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    # Same weights, size, opset: the graph is reused, not exported again.
    second = rt.make_runner("onnxruntime", net, "cpu", "fp32", HEIGHT, WIDTH, tmp_path)
    assert (second.exports, rt.export_count()) == (0, before + 1)
    assert second.onnx_paths[(HEIGHT, WIDTH)] == path
    assert path.stat().st_mtime_ns == mtime

    # Other weights: another key, another export; the new graph gives the new output.
    with torch.no_grad():
        net.background_decoder.out.bias.add_(0.25)
    changed = rt.make_runner("onnxruntime", net, "cpu", "fp32", HEIGHT, WIDTH, tmp_path)
    assert changed.exports == 1
    assert changed.onnx_paths[(HEIGHT, WIDTH)] != path
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    assert _worst(changed(frames, events), _eager(net, frames, events)) <= ATOL

    # Another frame size in a running runner: its own graph, a session rebuild.
    small = net.example_inputs(32, 40, seed=2)
    got = changed(*small)
    assert (changed.rebuilds, changed.exports) == (1, 2)
    assert _worst(got, _eager(net, *small)) <= ATOL
    assert len({p.parent for p in changed.onnx_paths.values()}) == 1  # same model folder

    # A damaged description is a miss: the graph is exported again, atomically.
    path.with_suffix(".json").write_text("{")
    again = rt.make_runner("onnxruntime", _net("derain_tiny"), "cpu", "fp32", HEIGHT, WIDTH,
                           tmp_path)
    assert again.exports == 1


@needs_ort
def test_numpy_only_from_the_cache(tmp_path):
    """Given an exported graph, the onnxruntime runner runs in a process without torch."""
    net = _net("derain_tiny")
    ckpt = save_checkpoint(net, tmp_path / "ckpt" / "tiny")
    spec, sha = rt.spec_from_checkpoint(ckpt)
    assert spec == rt.ModelSpec.from_config(net.config)
    cache = tmp_path / "cache"
    # The parent exports (through a loader, called once) ...
    calls = []

    def load():
        calls.append(1)
        return net

    runner = rt.make_runner("onnxruntime", load, "cpu", "fp32", HEIGHT, WIDTH, cache, sha,
                            spec=spec)
    assert (runner.exports, len(calls)) == (1, 1)
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=3)
    np.save(tmp_path / "frames.npy", frames.numpy())
    np.save(tmp_path / "events.npy", events.numpy())
    want = runner(frames, events)
    # ... the child, with torch made unimportable, only loads.
    child = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, Block())
import numpy as np
import derain_ros.runtime as rt
spec, sha = rt.spec_from_checkpoint({str(ckpt)!r})
runner = rt.make_runner("auto", None, "cpu", "fp32", None, None, {str(cache)!r}, sha, spec=spec)
frames = np.load({str(tmp_path / "frames.npy")!r})
bg, rain = runner(frames, np.load({str(tmp_path / "events.npy")!r}))
np.save({str(tmp_path / "bg.npy")!r}, bg)
print(runner.backend, runner.exports, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["onnxruntime", "0", "False"]
    assert float(np.abs(np.load(tmp_path / "bg.npy") - want[0]).max()) == 0.0


@needs_ort
def test_missing_graph_without_a_network_is_an_error(tmp_path):
    spec = rt.ModelSpec.from_config(_net("derain_tiny").config)
    with pytest.raises(ConfigError, match="no exported graph"):
        rt.make_runner("onnxruntime", None, "cpu", "fp32", HEIGHT, WIDTH, tmp_path, "0" * 64,
                       spec=spec)


@needs_ort
def test_wrong_inputs_are_named(cache):
    net = _net("derain_tiny_frames")
    runner = rt.make_runner("onnxruntime", net, "cpu", "fp32", HEIGHT, WIDTH, cache)
    frames, _ = net.example_inputs(HEIGHT, WIDTH)
    with pytest.raises(rt.RunnerInputError, match="frames-only"):
        runner(frames, torch.zeros(1, 2, 10, HEIGHT, WIDTH))
    with pytest.raises(rt.RunnerInputError, match="frames must be"):
        runner(frames[0], None)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(rt.UnknownBackendError) as err:
        rt.make_runner("tensorflow", _net("derain_tiny"), "cpu")
    for name in rt.BACKENDS:
        assert name in str(err.value)
    assert isinstance(err.value, ConfigError)


def test_auto_choice_on_this_cpu(cache):
    backend, reason = rt.choose_backend("cpu", "auto")
    assert backend == ("onnxruntime" if HAVE_ORT else "torch")
    assert reason.startswith("cpu")
    assert rt.choose_backend("cpu", "bf16")[0] == "torch"  # the ONNX graph is fp32
    if HAVE_ORT:
        runner = rt.make_runner("auto", _net("derain_tiny"), "cpu", "auto", HEIGHT, WIDTH, cache)
        assert runner.backend == "onnxruntime" and "onnxruntime is installed" in runner.reason
        assert "onnxruntime" in rt.describe(runner)


@needs_ort
def test_dtype_the_backend_cannot_run_is_refused(cache):
    with pytest.raises(ConfigError, match="float32 graph"):
        rt.make_runner("onnxruntime", _net("derain_tiny"), "cpu", "bf16", HEIGHT, WIDTH, cache)
    with pytest.raises(ConfigError, match="fp16 is not supported on the CPU"):
        rt.make_runner("torch", _net("derain_tiny"), "cpu", "fp16")


def test_threads_setting(tmp_path):
    old = torch.get_num_threads()
    try:
        runner = rt.make_runner("torch", _net("derain_tiny"), "cpu", "fp32", threads=1)
        assert torch.get_num_threads() == 1 and runner.threads == 1
    finally:
        torch.set_num_threads(old)
    if HAVE_ORT:
        ort_runner = rt.make_runner("onnxruntime", _net("derain_tiny"), "cpu", "fp32",
                                    threads=1, cache_dir=tmp_path)
        assert ort_runner.threads == 1  # no size given: nothing built or written yet
        # its CPU sessions do not spin-wait: a node shares its cores (bench/RESULTS.md)
        options = ort_runner._session(48, 64).get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_default_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert rt.default_cache_dir() == tmp_path / "derain_ros"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert rt.default_cache_dir() == Path.home() / ".cache" / "derain_ros"


@pytest.mark.skipif(CUDA, reason="CUDA is present here: the error path cannot be checked")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "tensorrt", "auto"])
def test_cuda_without_cuda_fails_at_once(backend):
    with pytest.raises(rt.BackendUnavailableError, match="CUDA is not available"):
        rt.make_runner(backend, _net("derain_tiny"), "cuda", "auto")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_torch_cuda_agrees_with_eager(dtype):
    net = _net("derain_tiny")
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    want = _eager(net, frames, events)
    runner = rt.make_runner("torch", _net("derain_tiny"), "cuda", dtype, channels_last=True)
    assert _worst(runner(frames, events), want) <= (ATOL if dtype == "fp32" else 0.1)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_onnxruntime_gpu_agrees_with_eager(tmp_path, backend):
    onnxruntime = pytest.importorskip("onnxruntime")

    wanted = {"onnxruntime": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    if wanted[backend] not in onnxruntime.get_available_providers():
        pytest.skip(f"onnxruntime here has no {wanted[backend]}")
    net = _net("derain_tiny")
    frames, events = net.example_inputs(HEIGHT, WIDTH, seed=1)
    want = _eager(net, frames, events)
    runner = rt.make_runner(backend, net, "cuda", "fp32", HEIGHT, WIDTH, tmp_path)
    assert _worst(runner(frames, events), want) <= ATOL
