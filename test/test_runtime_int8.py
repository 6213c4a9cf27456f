"""dtype int8 (#16): the engine calibrates a quantised graph on its own first frames,
checks it against fp32, swaps it in between frames, caches it; refusals are counted.

Real parts: the shipped ``derain_tiny`` weights, onnxruntime, onnxruntime.quantization,
and a rainy clip synthesised in-process (``derain_ros.sim``) at 128 x 96, cut into the
windows the synchroniser would give the engine.

Tolerance (stated in ``derain_ros.runtime.int8``): the int8 background is within 40 dB
PSNR of the fp32 background on frames it was not calibrated on (measured ~57 dB).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from derain_ros.engine import DerainEngine
from derain_ros.errors import ConfigError
from derain_ros.model import default_checkpoint_path
from derain_ros.records import TriggerBatch
from derain_ros.runtime import (
    CacheKey,
    Int8Runner,
    QuantSettings,
    fastest_dtype,
    make_runner,
    quantisation_count,
    spec_from_checkpoint,
)
from derain_ros.runtime.errors import BackendUnavailableError
from derain_ros.runtime.int8 import DEFAULT_MIN_PSNR_DB, int8_path, psnr_db
from derain_ros.sync import FrameImage, FrameWindow

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

W, H = 128, 96
CALIBRATION = 8  # 6 calibrate, 2 held back for the guard: small and quick
SHIPPED = default_checkpoint_path("derain_tiny")


@pytest.fixture(scope="module")
def windows() -> list[FrameWindow]:
    """A 32-frame rainy clip (heavy particles on a panned photograph) as engine windows."""
    from derain_ros.images import from_network
    from derain_ros.sim import SynthConfig, synthesize_clip

    if not SHIPPED.is_file():
        pytest.skip(f"the shipped weights are not at {SHIPPED}")
    clip = synthesize_clip(SynthConfig(source="skimage:astronaut@pan", width=W, height=H,
                                       n_frames=32, rain="heavy", seed=3, threads=1))
    return [FrameWindow(f.index, f.t_ns, f.t_prev_ns,
                        FrameImage(from_network(f.rainy, "rgb8"), "rgb8"), f.events,
                        TriggerBatch.empty(), f.t_ns, "cam") for f in clip]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8_cache")


def _engine(cache: Path, **kw) -> DerainEngine:
    return DerainEngine("derain_tiny", device="cpu", backend="onnxruntime", cache_dir=cache,
                        threads=1, **kw)


def test_int8_calibrates_on_its_frames_swaps_in_and_is_reused_from_the_cache(
        windows, cache, caplog) -> None:
    caplog.set_level(logging.INFO, logger="derain_ros.runtime.int8")
    fp32 = _engine(cache)
    int8 = _engine(cache, dtype="int8", int8_calibration_frames=CALIBRATION)
    runner = int8._runner
    assert isinstance(runner, Int8Runner) and int8.dtype_name == "int8"
    assert int8.backend_name.endswith("/fp32")  # fp32 until calibrated
    before = quantisation_count()
    int8.warm_up(H, W)  # random data: not calibration
    assert "0/8 frames" in int8.int8_status()["int8_state"]
    for w in windows[:CALIBRATION]:
        a, b = fp32.process(w), int8.process(w)
        assert np.array_equal(a.derained, b.derained)  # still the fp32 graph
    assert runner.wait(180), "quantisation did not finish"
    status = int8.int8_status()
    assert status["int8_calibrations"] == 1 and status["int8_failures"] == 0, status
    assert status["int8_guard_psnr_db"] >= DEFAULT_MIN_PSNR_DB
    assert quantisation_count() == before + 1
    # Swapped in at the next frame; agrees with fp32 on frames it was not calibrated on.
    worst = np.inf
    for w in windows[CALIBRATION:CALIBRATION + 12]:
        a, b = fp32.process(w), int8.process(w)
        assert int8.backend_name.endswith("/int8")
        assert np.isfinite(b.derained).all()
        worst = min(worst, psnr_db(b.derained, a.derained))
    assert DEFAULT_MIN_PSNR_DB <= worst < 100.0, worst  # close, but really int8
    assert "int8 at 128x96 (calibrated" in int8.int8_status()["int8_state"]
    # Cached beside the fp32 graph, keyed by its key, the settings and the guard.
    spec, sha = spec_from_checkpoint(SHIPPED)
    path = int8_path(cache, CacheKey(spec, sha, H, W), QuantSettings())
    meta = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file() and path.parent == runner.onnx_paths[(H, W)].parent
    assert meta["calibration_clips"] == 6 and meta["guard_clips"] == 2
    assert meta["int8"] == QuantSettings().as_dict() and meta["guard_psnr_db"] >= 40
    # A second engine (the next start) runs it from the first frame, no recalibration.
    again = _engine(cache, dtype="int8", int8_calibration_frames=CALIBRATION)
    again.warm_up(H, W)
    assert again.backend_name.endswith("/int8")
    assert again.int8_status()["int8_from_cache"] == 1
    again.process(windows[CALIBRATION + 11])  # same history as `int8` had
    got = again.process(windows[CALIBRATION + 12])
    want = int8.process(windows[CALIBRATION + 12])
    assert np.allclose(got.derained, want.derained, atol=1e-6)  # the same graph
    again._runner.wait(5)
    assert quantisation_count() == before + 1
    assert any("from the cache" in r.getMessage() for r in caplog.records)


def test_a_failed_guard_keeps_fp32_counts_and_logs_once(windows, cache, caplog) -> None:
    """An impossible threshold (internal argument): refused, stays fp32, not retried.

    The cache of the previous test holds an int8 graph that passed 40 dB: under this
    threshold it is not used either."""
    caplog.set_level(logging.INFO, logger="derain_ros.runtime.int8")
    fp32 = _engine(cache)
    int8 = _engine(cache, dtype="int8", int8_calibration_frames=4, int8_min_psnr_db=1000.0)
    for w in windows[:4]:
        fp32.process(w), int8.process(w)
    assert int8._runner.wait(180)
    for w in windows[4:10]:
        a, b = fp32.process(w), int8.process(w)
        assert np.array_equal(a.derained, b.derained)
    assert int8.backend_name.endswith("/fp32")
    status = int8.int8_status()
    assert status["int8_failures"] == 1 and status["int8_calibrations"] == 0, status
    assert status["int8_state"].startswith("fp32: int8 refused at 128x96: Int8GuardError")
    assert "guard: >= 1000 dB" in status["int8_state"]
    refusals = [r for r in caplog.records if "int8 refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING


def test_calibrated_on_a_dry_start_it_still_agrees_in_heavy_rain(windows, tmp_path) -> None:
    """The node calibrates on whatever comes first: a dry start (~40x fewer events than
    heavy rain) must not leave the event path's ranges too narrow for rain later (37 dB
    without the event headroom of QuantSettings; measured 53 dB with it)."""
    from derain_ros.images import from_network
    from derain_ros.sim import SynthConfig, synthesize_clip

    dry = [FrameWindow(f.index, f.t_ns, f.t_prev_ns,
                       FrameImage(from_network(f.rainy, "rgb8"), "rgb8"), f.events,
                       TriggerBatch.empty(), f.t_ns, "cam")
           for f in synthesize_clip(SynthConfig(source="skimage:camera@pan", width=W,
                                                height=H, n_frames=24, rain=None, seed=5,
                                                threads=1))]
    def rate(ws: list[FrameWindow]) -> float:
        return float(np.mean([len(w.events) for w in ws]))

    assert rate(dry) * 8 < rate(windows[:10])  # events per frame: far fewer when dry
    fp32 = _engine(tmp_path)
    int8 = _engine(tmp_path, dtype="int8")  # the default 24 frames
    for w in dry:
        int8.process(w)
    assert int8._runner.wait(180) and int8.int8_status()["int8_calibrations"] == 1
    worst = min(psnr_db(int8.process(w).derained, fp32.process(w).derained)
                for w in windows[:10])
    assert int8.backend_name.endswith("/int8")
    assert worst >= 45.0, worst


def test_int8_is_refused_off_the_onnxruntime_cpu_backend() -> None:
    with pytest.raises(ConfigError, match="dtype int8 runs only on onnxruntime's CPU"):
        DerainEngine("derain_tiny", device="cpu", backend="torch", dtype="int8")
    with pytest.raises(ConfigError, match="backend tensorrt on device cuda cannot run it"):
        DerainEngine("derain_tiny", device="cuda", backend="tensorrt", dtype="int8")
    with pytest.raises(ConfigError, match="int8 calibration needs at least 2 frames"):
        DerainEngine("derain_tiny", device="cpu", backend="onnxruntime", dtype="int8",
                     int8_calibration_frames=1)


def test_fastest_is_int8_only_where_int8_runs(monkeypatch, tmp_path) -> None:
    """The deployed params file asks for dtype fastest: int8 on the onnxruntime CPU
    back-end, auto anywhere int8 would be refused or cannot be built."""
    assert fastest_dtype("auto", "cpu")[0] == "int8"
    assert fastest_dtype("onnxruntime", "cpu")[0] == "int8"
    assert fastest_dtype("torch", "cpu")[0] == "auto"
    assert fastest_dtype("auto", "cuda:0")[0] == "auto"
    engine = DerainEngine("derain_tiny", device="cpu", backend="auto", dtype="fastest",
                          cache_dir=tmp_path)
    assert engine.runtime_dtype == "int8" and "int8" in engine.dtype_reason
    engine = DerainEngine("derain_tiny", device="cpu", backend="torch", dtype="fastest")
    assert engine.runtime_dtype is None and engine.dtype_name == "float32"
    monkeypatch.setitem(sys.modules, "onnx", None)  # find_spec: not installed
    dtype, reason = fastest_dtype("auto", "cpu")
    assert dtype == "auto" and "not installed" in reason


def test_a_missing_onnx_package_is_named(monkeypatch, tmp_path) -> None:
    spec, sha = spec_from_checkpoint(SHIPPED)
    monkeypatch.setitem(sys.modules, "onnx", None)  # find_spec: not installed
    with pytest.raises(BackendUnavailableError, match="needs the onnx package"):
        make_runner("auto", None, "cpu", "int8", cache_dir=tmp_path, checkpoint_sha=sha,
                    spec=spec)
