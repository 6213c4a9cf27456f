"""Tiny rainy bags for the training tests (not a test module).

Written with the project's own ``BagWriter`` and event encoders: frames on the rig's
image topic, libcaer event packets, and the clean / rain-layer ground truth of every
frame. The content is a drifting smooth texture with bright vertical streaks; events
fire on the streaks' pixels, so they carry rain information the network can use.

Kept deliberately tiny (48x40 px, a handful of frames) so that the tests stay fast;
``derain_ros.sim`` makes realistic bags for the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from derain_ros.conventions import EVENT_TOPIC, GT_CLEAN_TOPIC, GT_RAIN_TOPIC, IMAGE_TOPIC
from derain_ros.records import EventBatch

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
FRAME_NS = 33 * MS


def _background(h: int, w: int, i: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0, 6)
        base[..., c] = 0.45 + 0.25 * np.sin(fx * (xx + 1.5 * i) + ph) * np.cos(fy * yy)
    return base


def _rain(h: int, w: int, rng: np.random.Generator, streaks: int) -> np.ndarray:
    rain = np.zeros((h, w), np.float32)
    for _ in range(streaks):
        x, y, length = rng.integers(0, w), rng.integers(0, h), rng.integers(4, 12)
        rain[y:y + length, x] = rng.uniform(0.2, 0.4)
    return rain


def write_rainy_bag(path: Path, *, frames: int = 6, height: int = 40, width: int = 48,
                    seed: int = 0, with_events: bool = True, with_frames: bool = True,
                    with_truth: bool = True, event_size: tuple[int, int] | None = None,
                    streaks: int = 25) -> Path:
    """Write a small rainy bag; returns ``path``.

    ``event_size`` (width, height) gives the event sensor another resolution than the
    frames (to test the mismatch error).
    """
    from derain_ros.bag import BagWriter, typestore
    from derain_ros.events import make_encoder

    store = typestore()
    Time = store.types["builtin_interfaces/msg/Time"]
    Header = store.types["std_msgs/msg/Header"]
    Image = store.types["sensor_msgs/msg/Image"]
    Packet = store.types["event_camera_msgs/msg/EventPacket"]
    ew, eh = event_size or (width, height)
    enc = make_encoder("libcaer", ew, eh)
    rng = np.random.default_rng(seed)

    def header(t: int) -> object:
        return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")

    def image(t: int, arr: np.ndarray) -> object:
        data = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
        return Image(header=header(t), height=height, width=width, encoding="rgb8",
                     is_bigendian=0, step=width * 3, data=data.reshape(-1))

    with BagWriter(path) as bag:
        if with_events:
            bag.add_topic(EVENT_TOPIC, "event_camera_msgs/msg/EventPacket")
        if with_frames:
            bag.add_topic(IMAGE_TOPIC, "sensor_msgs/msg/Image")
            if with_truth:
                bag.add_topic(GT_CLEAN_TOPIC, "sensor_msgs/msg/Image")
                bag.add_topic(GT_RAIN_TOPIC, "sensor_msgs/msg/Image")
        seq = 0
        for i in range(frames):
            t = T0 + (i + 1) * FRAME_NS
            rain = _rain(height, width, rng, streaks)
            if with_events:
                ys, xs = np.nonzero(rain[:eh, :ew])
                n = len(ys)
                ts = np.sort(rng.integers(t - FRAME_NS + 1000, t - 1000, n) // 1000 * 1000)
                batch = EventBatch(ts, xs, ys, rng.integers(0, 2, n), ew, eh)
                payload, tb = enc.encode(batch)
                msg = Packet(header=header(int(ts[0]) if n else t - FRAME_NS), height=eh,
                             width=ew, seq=seq, time_base=tb, encoding="libcaer",
                             is_bigendian=False, events=np.frombuffer(payload, np.uint8))
                bag.write(EVENT_TOPIC, t - MS, msg)
                seq += 1
            if with_frames:
                clean = _background(height, width, i, seed)
                rainy = np.clip(clean + rain[..., None], 0, 1)
                bag.write(IMAGE_TOPIC, t + MS, image(t, rainy))
                if with_truth:
                    bag.write(GT_CLEAN_TOPIC, t + MS, image(t, clean))
                    bag.write(GT_RAIN_TOPIC, t + MS, image(t, rainy - clean))
        if with_events:  # a last packet past the final frame closes its window
            t = T0 + (frames + 1) * FRAME_NS
            batch = EventBatch([t], [0], [0], [1], ew, eh)
            payload, tb = enc.encode(batch)
            msg = Packet(header=header(t), height=eh, width=ew, seq=seq, time_base=tb,
                         encoding="libcaer", is_bigendian=False,
                         events=np.frombuffer(payload, np.uint8))
            bag.write(EVENT_TOPIC, t + MS, msg)
    return path
