"""Synthetic bags on disk: layout, decoding, the real recordings' format, reproducibility,
and failures (existing output, a disk that fills up mid-write).

Real bags are written to tmp_path and read back with the project's BagReader,
decoders and synchroniser. The format statistics are compared with the real driver
recordings in ../shared/data/event_bags (skipped when absent).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from derain_ros.bag import BagReader
from derain_ros.conventions import (
    EVENT_TOPIC,
    GT_CLEAN_TOPIC,
    GT_DROP_MASK_TOPIC,
    GT_RAIN_TOPIC,
    IMAGE_TOPIC,
)
from derain_ros.events import make_decoder
from derain_ros.images import from_network, image_to_array
from derain_ros.records import EventBatch
from derain_ros.sim import (
    OutputExistsError,
    SynthConfig,
    synthesize,
    synthesize_clip,
)
from derain_ros.sync import windows_from_bag

ROOT = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(source="skimage:astronaut", width=80, height=60, n_frames=6, rain="heavy",
                    lens_drops=2, shot_noise_hz=2.0, seed=11)


def _stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _packets(path: Path) -> list[tuple[int, int, object, EventBatch]]:
    """(log time, header stamp, message, decoded events) of every event packet."""
    out = []
    with BagReader(path) as bag:
        decoder = None
        for rec in bag.messages([EVENT_TOPIC]):
            msg = rec.msg
            if decoder is None:
                decoder = make_decoder(msg.encoding, int(msg.width), int(msg.height))
            out.append((rec.log_time_ns, _stamp(msg.header), msg,
                        decoder.decode(msg.events, int(msg.time_base)).events))
    return out


def _format_stats(packets) -> dict[str, float]:
    """What a driver's stream looks like: order, bounds, packet cadence."""
    events = [e for *_, e in packets if len(e)]
    t = np.concatenate([e.t for e in events])
    first = np.array([int(e.t[0]) for e in events])
    seqs = np.array([int(m.seq) for _, _, m, _ in packets])
    return {
        "backwards": int(np.count_nonzero(np.diff(t) < 0)),
        "out_of_bounds": sum(int(np.count_nonzero((e.x >= e.width) | (e.y >= e.height)))
                             for e in events),
        "max_span_ms": max(int(e.t[-1] - e.t[0]) for e in events) / 1e6,
        "median_gap_ms": float(np.median(np.diff(first))) / 1e6,
        "seq_steps": set(np.diff(seqs).tolist()),
    }


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("sim") / "small"
    summary = synthesize(SMALL, path, progress=False)
    return path, summary


def test_bag_layout_stamps_and_qos(small_bag):
    path, summary = small_bag
    assert summary.frames == 6 and summary.events > 1000 and summary.packets > 5
    assert 0 < summary.rain_coverage <= 1 and summary.event_rate_hz > 0
    with BagReader(path) as bag:
        topics = bag.topics
        assert topics[IMAGE_TOPIC].msgtype == "sensor_msgs/msg/Image"
        assert topics[EVENT_TOPIC].msgtype == "event_camera_msgs/msg/EventPacket"
        for topic in (IMAGE_TOPIC, GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC):
            assert topics[topic].count == 6
        assert topics[EVENT_TOPIC].count == summary.packets
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in bag.reader.connections}
        assert qos[EVENT_TOPIC].reliability.name == "BEST_EFFORT"
        assert qos[EVENT_TOPIC].depth == 1000
        assert qos[IMAGE_TOPIC].reliability.name == "BEST_EFFORT"
        log_times = []
        frames = {}
        for rec in bag.messages():
            log_times.append(rec.log_time_ns)
            assert rec.log_time_ns == _stamp(rec.msg.header)  # log time = stamp
            assert rec.msg.header.frame_id == "camera"
            if rec.topic != EVENT_TOPIC:
                frames.setdefault(rec.topic, []).append(rec.msg)
    assert log_times == sorted(log_times)
    clip = list(synthesize_clip(SMALL))
    for frame, img, clean, mask in zip(clip, frames[IMAGE_TOPIC], frames[GT_CLEAN_TOPIC],
                                       frames[GT_DROP_MASK_TOPIC], strict=True):
        assert _stamp(img.header) == _stamp(clean.header) == _stamp(mask.header) == frame.t_ns
        assert img.encoding == "rgb8" and mask.encoding == "mono8"
        arr = image_to_array(img.encoding, img.height, img.width, img.step, img.data)
        np.testing.assert_array_equal(arr, from_network(frame.rainy, "rgb8"))


def test_decoded_events_are_the_simulated_ones(small_bag):
    path, _ = small_bag
    packets = _packets(path)
    clip = list(synthesize_clip(SMALL))
    decoded = EventBatch.concatenate([e for *_, e in packets])
    simulated = EventBatch.concatenate([f.events for f in clip])
    assert decoded.equals(simulated)
    for log_time, stamp, msg, events in packets:
        assert stamp == log_time == int(events.t[0])  # stamp: the first event
        assert msg.encoding == "libcaer" and (msg.width, msg.height) == (80, 60)
        assert int(events.t[-1]) - int(events.t[0]) < SMALL.packet_ms * 1e6
    # The synchroniser cuts the bag back into the same per-frame windows.
    windows = list(windows_from_bag(path))
    assert len(windows) == len(clip)
    for window, frame in zip(windows[1:], clip[1:], strict=True):
        assert window.t_ns == frame.t_ns
        assert window.events.equals(frame.events)
        assert set(window.extras) == {GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC}


def test_event_stream_has_the_real_recordings_format(small_bag, event_bags, tmp_path):
    synthetic = {"libcaer": _format_stats(_packets(small_bag[0]))}
    evt3 = tmp_path / "evt3"
    synthesize(SMALL.replace(encoding="evt3", packet_ms=5.0), evt3, progress=False)
    synthetic["evt3"] = _format_stats(_packets(evt3))
    real = {d.name: _format_stats(_packets(d)) for d in sorted(event_bags.iterdir())
            if d.is_dir()}
    assert len(real) == 3
    period = {"libcaer": 10.0, "evt3": 5.0}
    for name, stats in [*synthetic.items(), *real.items()]:
        assert stats["backwards"] == 0, name
        assert stats["out_of_bounds"] == 0, name
        assert stats["seq_steps"] == {1}, name
    for name, stats in real.items():  # drivers close packets every ~10-12 ms
        assert 9.0 <= stats["median_gap_ms"] <= 13.0, name
        assert stats["max_span_ms"] <= 13.0, name
    for enc, stats in synthetic.items():  # ours: every packet_ms
        assert stats["max_span_ms"] < period[enc]
        assert period[enc] * 0.9 <= stats["median_gap_ms"] <= period[enc] * 1.1


def test_same_seed_gives_byte_identical_bags(tmp_path):
    config = SMALL.replace(n_frames=3)
    runs = {"a": config, "b": config.replace(threads=1), "c": config.replace(seed=12)}
    for folder, cfg in runs.items():  # same bag name: the name is inside the files
        synthesize(cfg, tmp_path / folder / "clip", progress=False)
    a, b, c = (tmp_path / f / "clip" for f in runs)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir()) == ["clip.mcap", "metadata.yaml"]
    for name in files:  # thread count changes the speed only
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "clip.mcap").read_bytes() != (c / "clip.mcap").read_bytes()


def test_sqlite3_storage_and_mono_rig(tmp_path):
    path = tmp_path / "mono"
    synthesize(SMALL.replace(color=False, n_frames=3), path, storage="sqlite3", progress=False)
    assert any(p.suffix == ".db3" for p in path.iterdir())
    with BagReader(path) as bag:
        images = [rec.msg for rec in bag.messages([IMAGE_TOPIC])]
    assert [m.encoding for m in images] == ["mono8"] * 3


def test_existing_output_is_refused_unless_overwrite(small_bag, tmp_path):
    path = tmp_path / "exists"
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="exists"):
        synthesize(SMALL, path, progress=False)
    assert (path / "keep.txt").read_text() == "mine"
    summary = synthesize(SMALL.replace(n_frames=2), path, overwrite=True, progress=False)
    assert summary.frames == 2 and not (path / "keep.txt").exists()
    with BagReader(path) as bag:
        assert bag.topics[IMAGE_TOPIC].count == 2


@pytest.mark.slow
def test_full_disk_mid_write_leaves_no_bag(tmp_path):
    """A real write failure: the child process may write at most 300 kB per file
    (RLIMIT_FSIZE, as a full disk would stop it), while the bag needs megabytes."""
    out = tmp_path / "full"
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from derain_ros.sim import SynthConfig, SynthWriteError, synthesize, synthesize_clip
        config = SynthConfig(source="skimage:astronaut", width=80, height=60, n_frames=30,
                             rain="storm", seed=1)
        list(synthesize_clip(config.replace(n_frames=2)))  # kernels compiled/loaded first
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a failing write, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        try:
            synthesize(config, {str(out)!r}, progress=False)
        except SynthWriteError as err:
            print("SynthWriteError:", err)
            sys.exit(3)
        sys.exit(0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "File too large" in proc.stdout or "Errno 27" in proc.stdout
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind either


def test_cli_writes_bag_summary_and_preview(tmp_path, capsys):
    import json

    from derain_ros.cli import main

    out, png = tmp_path / "cli_bag", tmp_path / "preview.png"
    args = ["synth", str(out), "--source", "skimage:coffee", "--width", "48", "--height",
            "36", "--frames", "4", "--rain", "storm", "--encoding", "evt3", "--no-progress",
            "--json", "--preview", str(png), "--seed", "5"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 4 and summary["events"] > 0 and summary["packets"] > 0
    assert png.stat().st_size > 1000
    with BagReader(out) as bag:
        assert bag.topics[EVENT_TOPIC].count == summary["packets"]
    assert main(args) == 1  # exists: refused, with a message
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
