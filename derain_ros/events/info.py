"""``derain-ros events-info BAG [--topic T] [--json]``: ``ros2 bag info`` for event topics.

Per event topic (``event_camera_msgs/msg/EventPacket`` or ``dv_ros2_msgs/msg/EventArray``):
message count, encoding, resolution, ON and OFF event counts, trigger counts (rising /
falling), first and last sensor time, event rate, decoder drops, and the sums of t
(modulo 2^64), x, y and p that the reference figures of the real recordings use.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from derain_ros.bag import BagReader
from derain_ros.errors import EventError
from derain_ros.events.base import Decoder, make_decoder
from derain_ros.events.dv import event_array_msg_to_batch
from derain_ros.records import EventBatch

__all__ = ["TopicSummary", "add_arguments", "run", "summarize"]

PACKET = "event_camera_msgs/msg/EventPacket"
ARRAY = "dv_ros2_msgs/msg/EventArray"
_M64 = 1 << 64


@dataclass
class TopicSummary:
    """What events-info reports for one topic (times in ns of sensor time)."""

    topic: str
    msgtype: str
    messages: int = 0
    encoding: str = ""
    width: int = 0
    height: int = 0
    events_on: int = 0
    events_off: int = 0
    triggers_rising: int = 0
    triggers_falling: int = 0
    first_t_ns: int | None = None
    last_t_ns: int | None = None
    rate_mev_per_s: float = 0.0
    sum_t_mod_2_64: int = 0
    sum_x: int = 0
    sum_y: int = 0
    sum_p: int = 0
    decoder: dict[str, int] = field(default_factory=dict)

    def add(self, ev: EventBatch) -> None:
        """Fold one decoded batch into the totals."""
        if not len(ev):
            return
        on = int(ev.p.sum(dtype=np.int64))
        self.events_on += on
        self.events_off += len(ev) - on
        self.sum_p += on
        self.sum_x += int(ev.x.sum(dtype=np.int64))
        self.sum_y += int(ev.y.sum(dtype=np.int64))
        self.sum_t_mod_2_64 = (self.sum_t_mod_2_64
                               + int(ev.t.view(np.uint64).sum(dtype=np.uint64))) % _M64
        self.first_t_ns = int(ev.t[0]) if self.first_t_ns is None else self.first_t_ns
        self.last_t_ns = int(ev.t[-1])


def summarize(bag_path: str | Path, topics: list[str] | None = None,
              progress: bool = False) -> list[TopicSummary]:
    """Decode every event topic of a bag (or ``topics``) and summarise it."""
    with BagReader(bag_path) as bag:
        known = {n: i for n, i in bag.topics.items() if i.msgtype in (PACKET, ARRAY)}
        if topics:
            missing = [t for t in topics if t not in bag.topics]
            if missing:
                raise EventError(f"topics {missing} are not in the bag")
            known = {n: bag.topics[n] for n in topics}
        out = {n: TopicSummary(n, i.msgtype) for n, i in known.items()}
        decoders: dict[str, Decoder] = {}
        total = sum(i.count for i in known.values())
        for m in tqdm(bag.messages(list(known)), total=total, disable=not progress,
                      unit="msg", desc="decoding"):
            s = out[m.topic]
            msg = m.msg
            s.messages += 1
            s.width, s.height = int(msg.width), int(msg.height)
            if m.msgtype == PACKET:
                dec = decoders.get(m.topic)
                if dec is None:
                    dec = decoders[m.topic] = make_decoder(msg.encoding, msg.width, msg.height)
                    s.encoding = msg.encoding
                ev, tr = dec.decode(msg.events, msg.time_base)
                rising = int(tr.edge.sum(dtype=np.int64))
                s.triggers_rising += rising
                s.triggers_falling += len(tr) - rising
            else:
                s.encoding = "dv_ros2_msgs"
                ev = event_array_msg_to_batch(msg)
            s.add(ev)
        for name, dec in decoders.items():
            out[name].decoder = dec.stats.as_dict()
    for s in out.values():
        n = s.events_on + s.events_off
        if s.first_t_ns is not None and s.last_t_ns is not None and s.last_t_ns > s.first_t_ns:
            s.rate_mev_per_s = n / ((s.last_t_ns - s.first_t_ns) * 1e-9) / 1e6
    return list(out.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``derain-ros events-info``."""
    parser.add_argument("bag", help="rosbag2 folder (or .mcap/.db3 file)")
    parser.add_argument("--topic", action="append", help="event topic (repeatable; "
                        "default: every EventPacket/EventArray topic)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Run ``derain-ros events-info``."""
    summaries = summarize(args.bag, args.topic, progress=not args.json)
    if args.json:
        print(json.dumps({"bag": str(args.bag), "topics": [asdict(s) for s in summaries]}))
        return 0
    if not summaries:
        print(f"{args.bag}: no event topics")
        return 0
    for s in summaries:
        def ts(t: int | None) -> str:
            return "-" if t is None else f"{t} ns ({t / 1e9:.6f} s)"

        print(f"{s.topic}  [{s.msgtype}]")
        print(f"  messages      {s.messages}")
        print(f"  encoding      {s.encoding}   resolution {s.width} x {s.height}")
        print(f"  events        ON {s.events_on}   OFF {s.events_off}")
        print(f"  triggers      rising {s.triggers_rising}   falling {s.triggers_falling}")
        print(f"  sensor time   first {ts(s.first_t_ns)}")
        print(f"                last  {ts(s.last_t_ns)}")
        print(f"  event rate    {s.rate_mev_per_s:.3f} Mev/s")
        print(f"  sums          t {s.sum_t_mod_2_64} (mod 2^64)   x {s.sum_x}   "
              f"y {s.sum_y}   p {s.sum_p}")
        if s.decoder:
            drops = {k: v for k, v in s.decoder.items()
                     if k in ("out_of_bounds", "invalid", "unknown_words", "backwards") and v}
            print(f"  decoder       {drops or 'no drops'}")
    return 0
