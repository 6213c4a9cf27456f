"""The torch-free input path (#16): float16 rounding in place, numpy voxel normalisation
and clips, bit for bit what the torch path gives; a CPU engine on onnxruntime never
imports torch, at fp32 nor at int8 (calibration and quantisation included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from derain_ros.events.voxel import (
    _normalize_meanstd,
    normalize_meanstd_numpy,
    voxel_grid,
    voxel_grid_numpy,
)
from derain_ros.model import InputBuilder, InputContract, build_clip, mirror_voxel
from derain_ros.model.half import round_to_half_
from derain_ros.records import EventBatch

MS = 1_000_000


def _torch_half(a: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).to(torch.float32).numpy()


def test_round_to_half_is_numpys_astype_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    every_pattern = rng.integers(0, 2 ** 32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.996, 65520.0, -65520.0,
                      65536.0, 2.0 ** -14, 2.0 ** -14 * 0.99999, 2.0 ** -24, 2.0 ** -25,
                      3 * 2.0 ** -26, 2.0 ** -25 * 1.0000001, -2.0 ** -25, 1e-40, -1e-45,
                      1.0, 0.5, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 2049.0, 2051.0],
                     np.float32)
    x = np.concatenate([every_pattern.view(np.float32), edges,
                        rng.standard_normal(100_000).astype(np.float32),
                        (rng.standard_normal(100_000) * 1e-6).astype(np.float32),  # subnormal
                        rng.random(100_000, np.float32)])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    got = round_to_half_(x.copy())
    nan = np.isnan(want)
    assert nan.sum() > 1000 and np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    # and torch's conversion (what the builder used before) agrees on every finite value
    assert np.array_equal(_torch_half(x)[~nan].view(np.uint32), got[~nan].view(np.uint32))
    # in place, any shape; refuses what it cannot round in place
    a = rng.random((3, 5, 7), np.float32)
    assert round_to_half_(a) is a
    with pytest.raises(ValueError):
        round_to_half_(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(ValueError):
        round_to_half_(np.zeros(4, np.float64))


def _events(seed: int, n: int, w: int, h: int, t0: int, t1: int) -> EventBatch:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0 + 1, t1 + 1, n))
    return EventBatch(t, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n),
                      w, h)


@pytest.mark.parametrize("seed,n", [(0, 0), (1, 1), (2, 300), (3, 40_000), (4, 400_000)])
def test_meanstd_numpy_equals_torch_bit_for_bit(seed: int, n: int) -> None:
    ev = _events(seed, n, 346, 260, 0, 33 * MS)
    grid = voxel_grid_numpy(ev, 0, 33 * MS, 10)
    want = _normalize_meanstd(torch.from_numpy(grid.copy())).numpy()
    got = normalize_meanstd_numpy(grid.copy())
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def _reference_builder(contract: InputContract, image: np.ndarray, events: EventBatch | None,
                       t0: int, t1: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The builder as it was before #16 (torch throughout): the contract's reference."""
    def rounded(a: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(a, dtype=np.float32)
        return _torch_half(out) if contract.precision == "float16" else out

    img = np.asarray(image, np.float32)
    img = img[:, :, None] if img.ndim == 2 else img
    want = contract.frame_channels
    if img.shape[2] != want:
        img = (np.repeat(img, want, axis=2) if img.shape[2] == 1
               else img.mean(axis=2, dtype=np.float32, keepdims=True))
    frame = rounded(img.transpose(2, 0, 1))
    if not contract.use_events:
        return frame, None
    if events is None or not len(events):
        return frame, np.zeros((contract.event_bins, h, w), np.float32)
    grid = voxel_grid(events, t0, t1, contract.event_bins,
                      normalize=contract.voxel_normalize)  # type: ignore[arg-type]
    if tuple(grid.shape[-2:]) != (h, w):
        grid = F.interpolate(grid[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return frame, rounded(grid.numpy())


@pytest.mark.parametrize("precision", ["float16", "float32"])
@pytest.mark.parametrize("normalize", ["none", "meanstd"])
@pytest.mark.parametrize("channels,in_ch", [(3, 3), (1, 3), (3, 1), (1, 1)])
def test_builder_numpy_equals_the_torch_reference(precision: str, normalize: str,
                                                  channels: int, in_ch: int) -> None:
    contract = InputContract(precision=precision, voxel_normalize=normalize,
                             frame_channels=channels)
    builder = InputBuilder(contract)
    rng = np.random.default_rng(channels * 10 + in_ch)
    h, w = 60, 80
    image = rng.random((h, w, in_ch), np.float32) if in_ch == 3 else rng.random((h, w),
                                                                                np.float32)
    for ev, (eh, ew) in ((_events(5, 20_000, w, h, 0, 33 * MS), (h, w)),
                         (_events(6, 20_000, 40, 30, 0, 33 * MS), (30, 40)),  # resized
                         (None, (h, w))):
        del eh, ew
        want_f, want_v = _reference_builder(contract, image, ev, 0, 33 * MS, h, w)
        got_f = builder.frame(image)
        got_v = builder.voxel(ev, 0, 33 * MS, h, w)
        assert got_f.dtype == np.float32 and got_f.flags.c_contiguous
        assert np.array_equal(got_f.view(np.uint32), want_f.view(np.uint32))
        assert got_v is not None and want_v is not None
        assert np.array_equal(got_v.view(np.uint32), want_v.view(np.uint32))
    assert image.flags.writeable and np.all(image >= 0)  # the caller's image is not touched


def test_builder_does_not_round_the_callers_image_in_place() -> None:
    builder = InputBuilder(InputContract(precision="float16", frame_channels=1))
    image = np.full((4, 5, 1), 0.1, np.float32)
    builder.frame(image)
    assert np.all(image == np.float32(0.1))


def test_clips_numpy_equal_torch() -> None:
    rng = np.random.default_rng(2)
    a, b, c = (rng.random((3, 6, 7), np.float32) for _ in range(3))
    v1, v2 = (np.where(rng.random((5, 6, 7)) < 0.5, 0.0, rng.standard_normal((5, 6, 7)))
              .astype(np.float32) for _ in range(2))
    t = torch.from_numpy
    for frames, voxels, arrangement in (((a, b), (v1,), "causal"),
                                        ((a, b, c), (v1, v2), "centre")):
        nf, nv = build_clip(frames, voxels, arrangement)
        tf, tv = build_clip([t(f) for f in frames], [t(v) for v in voxels], arrangement)
        assert isinstance(nf, np.ndarray) and isinstance(nv, np.ndarray)
        assert np.array_equal(nf.view(np.uint32), tf.numpy().view(np.uint32))
        assert np.array_equal(nv.view(np.uint32), tv.numpy().view(np.uint32))  # -0.0 too
    assert np.array_equal(mirror_voxel(v1).view(np.uint32),
                          mirror_voxel(t(v1)).numpy().view(np.uint32))
    # into preallocated buffers (the engine's path), dirty ones: the same bits
    for arrangement, k in (("causal", 2), ("centre", 3)):
        builder = InputBuilder(InputContract(arrangement=arrangement, event_bins=5))
        frames, voxels = [a, b, c][:k], [v1, v2, v1][:k]
        for target in range(k - (arrangement == "centre")):
            want_f, want_v = builder.clip_at(frames, voxels, target)
            out_f = np.full((3, 3, 6, 7), np.nan, np.float32)
            out_v = np.full((2, 5, 6, 7), np.nan, np.float32)
            got_f, got_v = builder.clip_into(frames, voxels, target, out_f, out_v)
            assert got_f is out_f and got_v is out_v
            assert np.array_equal(got_f.view(np.uint32), want_f.view(np.uint32))
            assert np.array_equal(got_v.view(np.uint32), want_v.view(np.uint32))
        none_f, none_v = builder.clip_into(frames, [None] * k, 0 if k == 2 else 1, out_f, None)
        assert none_v is None and none_f is out_f


_NO_TORCH = textwrap.dedent("""
    import json, sys
    import numpy as np
    from derain_ros.engine import DerainEngine
    from derain_ros.records import EventBatch, TriggerBatch
    from derain_ros.sync import FrameImage, FrameWindow

    ckpt, cache, other = sys.argv[1], sys.argv[2], sys.argv[3]
    engine = DerainEngine(ckpt, device="auto", backend="auto", cache_dir=cache,
                          want_events_image=True)
    engine.warm_up(32, 40)
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        t1 = (i + 1) * 33_000_000
        t = np.sort(rng.integers(t1 - 33_000_000 + 1, t1 + 1, 500))
        ev = EventBatch(t, rng.integers(0, 40, 500), rng.integers(0, 32, 500),
                        rng.integers(0, 2, 500), 40, 32)
        img = FrameImage(rng.integers(0, 255, (32, 40, 3)).astype(np.uint8), "rgb8")
        w = FrameWindow(i, t1, None if i == 0 else t1 - 33_000_000, img, ev,
                        TriggerBatch.empty(), t1, "cam")
        r = engine.process(w)
        out.append(float(r.derained.mean()))
    # a swap to weights whose graph is not cached yet: a child process exports it
    engine.swap_checkpoint(other)
    r = engine.process(w)
    out.append(float(r.derained.mean()))
    # dtype int8: calibrating, quantising (onnxruntime.quantization) and the guard, too
    int8 = DerainEngine(ckpt, device="cpu", backend="auto", dtype="int8", cache_dir=cache,
                        int8_calibration_frames=2)
    int8.process(w)
    int8.process(w)
    int8._runner.wait(120)
    int8.process(w)
    from derain_ros.runtime import export_count
    print(json.dumps({"torch": "torch" in sys.modules, "cv2": "cv2" in sys.modules,
                      "exports": export_count(),
                      "backend": engine.backend_name,
                      "swaps": engine.swaps, "int8": int8.int8_status(),
                      "int8_backend": int8.backend_name,
                      "device": engine.device_name, "means": out}))
""")


def test_cpu_engine_on_onnxruntime_never_imports_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from derain_ros.model import create_model, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(create_model("derain_tiny").eval(), tmp_path / "tiny", {"note": "test"})
    save_checkpoint(create_model("derain_tiny").eval(), tmp_path / "other", {"note": "test"})
    cache = tmp_path / "cache"  # empty: every graph is exported, by child processes
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tmp_path / "tiny"), str(cache),
                           str(tmp_path / "other")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"].startswith("onnxruntime/CPUExecutionProvider")
    assert result["device"] == "cpu"
    assert result["torch"] is False, "the onnxruntime CPU path (fp32 or int8) imported torch"
    # rgb8 frames need no colour conversion: OpenCV stays out of the process (17 MB)
    assert result["cv2"] is False, "an rgb8 stream imported OpenCV"
    assert result["swaps"] == 1
    assert result["exports"] == 2, "the start's graph and the swap's, each by a child process"
    assert len({g.parent for g in (cache / "onnx").glob("*/*.onnx")}) == 2  # both weights
    assert result["int8"]["int8_calibrations"] == 1, result["int8"]
    assert result["int8_backend"].endswith("/int8")
    assert all(0.0 <= m <= 1.0 for m in result["means"])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgb16", "mono8", "mono16"])
def test_publishing_quantisation_is_numpys(encoding: str) -> None:
    """The one-pass quantiser of the publish path gives numpy's expression's values."""
    from derain_ros.images import _spec, from_network

    rng = np.random.default_rng(3)
    chw = (rng.standard_normal((3, 26, 34)) * 0.6 + 0.5).astype(np.float32)
    chw[0, 0, :6] = [np.inf, -np.inf, 0.5 / 255, 1.5 / 255, 1.0, 0.0]
    ties = rng.integers(0, 511, (26, 34)).astype(np.float32) / np.float32(510)
    chw[1] = ties  # exact halves of the 8-bit step: round half to even
    img = chw.transpose(1, 2, 0)  # the engine's layout: a view of CHW
    spec = _spec(encoding)
    peak = float(np.iinfo(spec.dtype).max)
    ref = np.clip(np.rint(img * peak), 0, peak).astype(spec.dtype)
    got = from_network(img, encoding)
    if spec.channels == 1:
        ref = ref[:, :, 0]
    elif encoding.startswith("bgr"):
        ref = ref[:, :, ::-1]
    assert got.dtype == spec.dtype and np.array_equal(got, ref)
