"""The inference engine: clip assembly, fallbacks, checkpoint swap. ROS-free, CPU, tiny nets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from derain_ros.engine import DerainEngine, resolve_device, resolve_dtype
from derain_ros.errors import CheckpointError, ConfigError
from derain_ros.events.voxel import voxel_grid
from derain_ros.model import (
    CheckpointNotFoundError,
    build_clip,
    create_model,
    mirror_voxel,
    save_checkpoint,
)
from derain_ros.records import EventBatch, TriggerBatch
from derain_ros.sync import FrameImage, FrameWindow

W, H = 40, 32
MS = 1_000_000


def window(i: int, *, events: int = 200, encoding: str = "rgb8", missing: bool = False,
           first: bool = False, seed: int = 0) -> FrameWindow:
    rng = np.random.default_rng(seed + i)
    t1 = (i + 1) * 33 * MS
    t0 = t1 - 33 * MS
    t = np.sort(rng.integers(t0 + 1, t1 + 1, events))
    ev = EventBatch(t, rng.integers(0, W, events), rng.integers(0, H, events),
                    rng.integers(0, 2, events), W, H)
    shape = (H, W, 3) if encoding == "rgb8" else (H, W)
    img = FrameImage(rng.integers(0, 255, shape).astype(np.uint8), encoding)
    return FrameWindow(i, t1, None if first else t0, img, ev if not missing else ev[:0],
                       TriggerBatch.empty(), t1, "cam", events_missing=missing)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("derain_tiny").eval()


def test_mirror_voxel_is_the_grid_of_the_time_reversed_events() -> None:
    rng = np.random.default_rng(1)
    n, t0, t1, bins = 500, 0, 33 * MS, 5
    t = np.sort(rng.integers(t0 + 1, t1, n))
    ev = EventBatch(t, rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n), W, H)
    rev = EventBatch(t0 + t1 - t[::-1], ev.x[::-1], ev.y[::-1], 1 - ev.p[::-1], W, H)
    forward = torch.as_tensor(voxel_grid(ev, t0, t1, bins))
    backward = torch.as_tensor(voxel_grid(rev, t0, t1, bins))
    assert torch.allclose(mirror_voxel(forward), backward, atol=1e-3)


def test_build_clip_arrangements() -> None:
    a, b, c = (torch.full((3, 4, 4), float(v)) for v in (1, 2, 3))
    v1, v2 = torch.randn(5, 4, 4), torch.randn(5, 4, 4)
    frames, events = build_clip((a, b), (v1,), "causal")
    assert [float(f[0, 0, 0]) for f in frames] == [1.0, 2.0, 1.0]
    assert torch.equal(events[0], v1) and torch.equal(events[1], -v1.flip(0))
    frames, events = build_clip((a, b, c), (v1, v2), "centre")
    assert [float(f[0, 0, 0]) for f in frames] == [1.0, 2.0, 3.0]
    assert torch.equal(events, torch.stack([v1, v2]))
    assert build_clip((a, b), (None,), "causal")[1] is None
    with pytest.raises(ConfigError, match="arrangement"):
        build_clip((a, b), (v1,), "future")


def test_causal_results_are_for_the_newest_frame(tiny) -> None:
    engine = DerainEngine(tiny, device="cpu", want_events_image=True)
    engine.warm_up(H, W)
    for i in range(3):
        w = window(i, first=i == 0)
        r = engine.process(w)
        assert r is not None and r.window is w
        assert r.derained.shape == (H, W, 3) and r.derained.dtype == np.float32
        assert r.derained.min() >= 0.0 and r.derained.max() <= 1.0
        assert r.rain.shape == (H, W, 3) and r.events_image.shape == (H, W, 3)
        assert not r.frames_only
        assert set(r.timings_ms) == {"prepare", "infer", "total", "prepare_cpu",
                                     "infer_cpu", "total_cpu"}
        assert all(v >= 0.0 for v in r.timings_ms.values())


def test_centre_arrangement_lags_one_frame() -> None:
    torch.manual_seed(0)
    centre = create_model("derain_tiny").eval()
    centre.input_contract = centre.input_contract.replace(arrangement="centre")
    engine = DerainEngine(centre, device="cpu")
    assert engine.arrangement == "centre"  # from the network's contract
    windows = [window(i, first=i == 0) for i in range(3)]
    assert engine.process(windows[0]) is None
    assert engine.process(windows[1]).window is windows[0]
    assert engine.process(windows[2]).window is windows[1]


def test_an_arrangement_that_contradicts_the_checkpoint_is_refused(tiny, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"arrangement='centre'.*trained with 'causal'"):
        DerainEngine(tiny, device="cpu", arrangement="centre")
    assert DerainEngine(tiny, device="cpu", arrangement="causal").arrangement == "causal"
    with pytest.raises(ConfigError, match=r"sideways.*causal, centre"):
        DerainEngine(tiny, device="cpu", arrangement="sideways")
    # A swap to a checkpoint of another arrangement is refused while one is requested ...
    centre = create_model("derain_tiny").eval()
    centre.input_contract = centre.input_contract.replace(arrangement="centre")
    save_checkpoint(centre, tmp_path / "centre")
    pinned = DerainEngine(tiny, device="cpu", arrangement="causal")
    with pytest.raises(CheckpointError, match="contradict"):
        pinned.swap_checkpoint(tmp_path / "centre")
    assert pinned.arrangement == "causal"
    # ... and followed (with a builder re-derived from it) when none is.
    follower = DerainEngine(tiny, device="cpu")
    follower.swap_checkpoint(tmp_path / "centre")
    assert follower.arrangement == "centre" and follower.contract.arrangement == "centre"
    assert follower.process(window(0, first=True)) is None  # centre lags one frame


def test_missing_events_use_the_frames_only_fallback(tiny) -> None:
    engine = DerainEngine(tiny, device="cpu")
    engine.process(window(0, first=True))
    r = engine.process(window(1, missing=True))
    assert r.frames_only
    assert not engine.process(window(2)).frames_only


def test_frames_only_network_and_mono_frames() -> None:
    engine = DerainEngine(create_model("derain_tiny_frames"), device="cpu")
    r = engine.process(window(0, encoding="mono8", first=True))
    assert r.frames_only and r.derained.shape == (H, W, 3)  # grey replicated into RGB
    grey = DerainEngine(create_model("derain_tiny", in_chans=1), device="cpu")
    r = grey.process(window(0, first=True))  # colour frames into a grey network
    assert r.derained.shape == (H, W, 1)


def test_event_sensor_of_another_size_is_resized(tiny) -> None:
    engine = DerainEngine(tiny, device="cpu")
    w = window(0, first=True)
    big = EventBatch(w.events.t, w.events.x * 2, w.events.y * 2, w.events.p, 2 * W, 2 * H)
    r = engine.process(dataclasses.replace(w, events=big))
    assert r.derained.shape == (H, W, 3)


def test_swap_checkpoint_keeps_the_old_network_on_a_corrupt_file(tiny, tmp_path) -> None:
    engine = DerainEngine(tiny, device="cpu")
    w0, w1 = window(0, first=True), window(1)
    engine.process(w0)
    before = engine.process(w1).derained
    other = create_model("derain_tiny")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    save_checkpoint(other, tmp_path / "tuned")
    data = (tmp_path / "tuned.safetensors").read_bytes()
    (tmp_path / "broken.json").write_bytes((tmp_path / "tuned.json").read_bytes())
    (tmp_path / "broken.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError):
        engine.swap_checkpoint(tmp_path / "broken.safetensors")
    assert engine.swap_failures == 1 and engine.swaps == 0
    engine.process(w0)
    assert np.array_equal(engine.process(w1).derained, before)  # still the old network
    grey = create_model("derain_tiny", in_chans=1)
    save_checkpoint(grey, tmp_path / "grey")
    with pytest.raises(CheckpointError, match="channel"):
        engine.swap_checkpoint(tmp_path / "grey")
    engine.swap_checkpoint(tmp_path / "tuned.safetensors")
    assert engine.swaps == 1 and engine.source.endswith("tuned.safetensors")
    engine.process(w0)
    assert not np.array_equal(engine.process(w1).derained, before)


def test_missing_weights_refuse_unless_random_allowed(monkeypatch, tmp_path) -> None:
    import derain_ros.engine as engine_mod

    monkeypatch.setattr(engine_mod, "default_checkpoint_path",
                        lambda name, in_chans=3: tmp_path / f"{name}.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="allow random weights"):
        DerainEngine("derain_tiny", device="cpu")
    engine = DerainEngine("derain_tiny", device="cpu", allow_random_weights=True)
    assert engine.random_weights and "random" in engine.model_name


def test_device_and_dtype_resolution() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ConfigError, match="fp16"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError):
        resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_cuda_half_precision(tiny) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    engine = DerainEngine(tiny, device="cuda")
    assert engine.dtype in (torch.bfloat16, torch.float16)
    engine.process(window(0, first=True))
    r = engine.process(window(1))
    assert r.derained.dtype == np.float32 and np.isfinite(r.derained).all()


def test_onnxruntime_backend_agrees_with_torch_and_swaps(tiny, tmp_path) -> None:
    """The engine on onnxruntime gives torch's frames (2e-3) and swaps checkpoints too."""
    pytest.importorskip("onnxruntime")
    ref = DerainEngine(tiny, device="cpu")
    ort = DerainEngine(tiny, device="cpu", backend="onnxruntime", cache_dir=tmp_path / "c")
    assert ort.backend_reason and "onnxruntime" in ort._runner.name
    for i in range(3):
        w = window(i, first=i == 0)
        a, b = ref.process(w), ort.process(w)
        assert np.abs(a.derained - b.derained).max() <= 2e-3
        assert np.abs(a.rain - b.rain).max() <= 2e-3
    torch.manual_seed(5)
    other = create_model("derain_tiny").eval()
    save_checkpoint(other, tmp_path / "other")
    ort.swap_checkpoint(tmp_path / "other")
    swapped = DerainEngine(other, device="cpu")
    w = window(3)
    swapped.process(window(2))
    assert np.abs(ort.process(w).derained - swapped.process(w).derained).max() <= 2e-3
