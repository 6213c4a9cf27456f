"""What a packed EventPacket and a per-event dv_ros2_msgs/EventArray cost for 100k events.

Measures, in this process (rclpy's C serialisation, the same code path a publisher
and a subscription run): building the message from numpy arrays, serialising it to
CDR, deserialising it, and getting numpy arrays back. No DDS participant is started.

Run: ``.venv/bin/python bench/interfaces.py``. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

N_EVENTS = 100_000
REPEATS = 5


def _best(fn, repeats: int = REPEATS) -> float:
    """Best wall time of ``repeats`` calls, in seconds (least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from builtin_interfaces.msg import Time
    from dv_ros2_msgs.msg import Event, EventArray
    from event_camera_msgs.msg import EventPacket
    from rclpy.serialization import deserialize_message, serialize_message

    rng = np.random.default_rng(0)
    x = rng.integers(0, 640, N_EVENTS).astype(np.uint16)
    y = rng.integers(0, 480, N_EVENTS).astype(np.uint16)
    t_ns = np.sort(rng.integers(0, 10_000_000, N_EVENTS)).astype(np.int64)
    p = rng.integers(0, 2, N_EVENTS).astype(np.uint8)
    payload = np.random.default_rng(1).integers(0, 256, N_EVENTS * 8, dtype=np.uint8).tobytes()

    def build_packet():
        return EventPacket(height=480, width=640, seq=1, time_base=0, encoding="libcaer",
                           events=payload)

    def build_array():
        return EventArray(height=480, width=640, events=[
            Event(x=int(a), y=int(b), ts=Time(sec=0, nanosec=int(c)), polarity=bool(d))
            for a, b, c, d in zip(x, y, t_ns, p, strict=True)
        ])

    def array_to_numpy(msg):
        ev = msg.events
        return (np.fromiter((e.x for e in ev), np.uint16, len(ev)),
                np.fromiter((e.y for e in ev), np.uint16, len(ev)),
                np.fromiter((e.ts.sec * 10**9 + e.ts.nanosec for e in ev), np.int64, len(ev)),
                np.fromiter((e.polarity for e in ev), np.uint8, len(ev)))

    packet, array = build_packet(), build_array()
    packet_cdr, array_cdr = serialize_message(packet), serialize_message(array)
    rows = {
        "event_packet": {
            "build_ms": _best(build_packet) * 1e3,
            "serialize_ms": _best(lambda: serialize_message(packet)) * 1e3,
            "deserialize_ms": _best(lambda: deserialize_message(packet_cdr, EventPacket)) * 1e3,
            "to_numpy_ms": _best(lambda: np.frombuffer(bytes(packet.events), np.uint8)) * 1e3,
            "cdr_bytes": len(packet_cdr),
        },
        "event_array": {
            "build_ms": _best(build_array, 2) * 1e3,
            "serialize_ms": _best(lambda: serialize_message(array), 2) * 1e3,
            "deserialize_ms": _best(lambda: deserialize_message(array_cdr, EventArray), 2) * 1e3,
            "to_numpy_ms": _best(lambda: array_to_numpy(array), 2) * 1e3,
            "cdr_bytes": len(array_cdr),
        },
    }
    for row in rows.values():
        row["total_ms"] = row["build_ms"] + row["serialize_ms"] + row["deserialize_ms"] + \
            row["to_numpy_ms"]
    ratio = rows["event_array"]["total_ms"] / rows["event_packet"]["total_ms"]

    print(f"Message cost for {N_EVENTS:,} events (best of several runs, one process)")
    print(f"{'message':<14}{'build ms':>10}{'serialize':>11}{'deserialize':>13}"
          f"{'to numpy':>10}{'total ms':>10}{'CDR bytes':>12}")
    for name, r in rows.items():
        print(f"{name:<14}{r['build_ms']:>10.2f}{r['serialize_ms']:>11.2f}"
              f"{r['deserialize_ms']:>13.2f}{r['to_numpy_ms']:>10.2f}{r['total_ms']:>10.2f}"
              f"{r['cdr_bytes']:>12,}")
    print(f"per-event EventArray / packed EventPacket: {ratio:,.0f}x the time")
    print(json.dumps({"n_events": N_EVENTS, **rows, "array_over_packet_ratio": ratio}))


if __name__ == "__main__":
    main()
