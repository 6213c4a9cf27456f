"""Profile of the node's per-frame path outside ROS transport: what bench/node.py's
overhead figure is made of.

The node's own code, frame by frame, as its callbacks and worker run it: ``EventPacket``
messages (libcaer, 300 k events/s in 10 ms packets) and ``rgb8`` ``Image`` messages
(30 fps) -> ``frame_from_msg`` / ``add_events`` / ``add_frame`` (synchroniser) ->
``DerainEngine.process`` (builder, back-end) -> ``network_image_msg`` (the published
image). Runs under cProfile in this process and prints the functions with the most own
time, inference (the back-end call) included so that its share is visible.

Run: ``.venv/bin/python bench/node_profile.py [WIDTH HEIGHT [FRAMES]]`` (defaults 346 260
60). Last line: one JSON object with per-frame CPU ms of the non-inference stages.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
import time

import numpy as np


def main() -> int:
    width = int(sys.argv[1]) if len(sys.argv) > 2 else 346
    height = int(sys.argv[2]) if len(sys.argv) > 2 else 260
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    from event_camera_msgs.msg import EventPacket
    from sensor_msgs.msg import Image

    from derain_ros.engine import DerainEngine
    from derain_ros.events import make_encoder
    from derain_ros.records import EventBatch
    from derain_ros.ros import frame_from_msg, header_from, image_msg, network_image_msg
    from derain_ros.sync import FrameEventSynchronizer, SyncConfig, stamp_to_ns

    rng = np.random.default_rng(0)
    enc = make_encoder("libcaer", width, height)
    packet_ns, per = 10_000_000, 3000
    t_start = 1_700_000_000_000_000_000
    frame_ns = 33_333_333
    n_packets = int(frames * frame_ns / packet_ns) + 2
    packets: list[EventPacket] = []
    for i in range(n_packets):
        t0 = t_start + i * packet_ns
        t = np.sort(rng.integers(t0 // 1000, (t0 + packet_ns) // 1000, per)) * 1000
        batch = EventBatch(t, rng.integers(0, width, per), rng.integers(0, height, per),
                           rng.integers(0, 2, per), width, height)
        payload, tb = enc.encode(batch)
        msg = EventPacket(header=header_from(int(t[0]), "davis"), height=height, width=width,
                          seq=i, time_base=tb, encoding="libcaer")
        msg.events = payload
        packets.append(msg)
    images: list[Image] = [
        image_msg(rng.integers(0, 255, (height, width, 3)).astype(np.uint8), "rgb8",
                  header_from(t_start + (k + 1) * frame_ns, "cam")) for k in range(frames)]
    engine = DerainEngine("derain_tiny", device="cpu", backend="auto", threads=1,
                          allow_random_weights=True)
    engine.warm_up(height, width)
    sync = FrameEventSynchronizer(SyncConfig())
    stage = {"receive": 0.0, "process": 0.0, "infer": 0.0, "publish": 0.0}

    def run() -> int:
        done = 0
        p = 0
        for img in images:
            t_img = stamp_to_ns(img.header.stamp)
            windows = []
            c0 = time.thread_time()
            while p < len(packets) and stamp_to_ns(packets[p].header.stamp) < t_img + packet_ns:
                m = packets[p]
                windows += sync.add_events(memoryview(m.events), m.time_base, m.encoding,
                                           m.width, m.height, stamp_to_ns(m.header.stamp),
                                           m.seq)
                p += 1
            frame = frame_from_msg(img, use_cv_bridge=True)
            windows += sync.add_frame(frame, None, t_img, img.header.frame_id)
            c1 = time.thread_time()
            stage["receive"] += c1 - c0
            for w in windows:
                c1 = time.thread_time()
                result = engine.process(w)
                c2 = time.thread_time()
                stage["process"] += c2 - c1
                if result is None:
                    continue
                # (older engines report only wall time for the back-end call)
                stage["infer"] += result.timings_ms.get("infer_cpu",
                                                        result.timings_ms["infer"]) / 1e3
                network_image_msg(result.derained, w.image.encoding,
                                  header_from(w.stamp_ns, w.frame_id))
                stage["publish"] += time.thread_time() - c2
                done += 1
        return done

    prof = cProfile.Profile()
    prof.enable()
    done = run()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(18)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    print(f"derain_tiny {width}x{height}, {done} frames, back-end {engine.backend_name}; "
          "cProfile, own time (tottime) in s over all frames:")
    for ln in lines[start:]:
        print(ln)
    per = {k: round(v / max(done, 1) * 1e3, 3) for k, v in stage.items()}
    per["overhead"] = round(per["receive"] + per["process"] - per["infer"] + per["publish"], 3)
    print(json.dumps({"size": f"{width}x{height}", "frames": done,
                      **{f"{k}_cpu_ms": v for k, v in per.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
