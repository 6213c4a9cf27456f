"""Small rainy bags for the training tests, from the project's simulator (not a test module).

Every bag comes from :func:`derain_ros.sim.synthesize` (a panned still with heavy
physically modelled rain, ESIM events, ground truth), kept tiny (64x48 px, a few
frames, fixed seeds) so the tests stay fast. Bags the simulator cannot write directly
(without events, without frames, with an event sensor of another size) are made by
copying topics of simulated bags as raw bytes with ``BagReader``/``BagWriter``: nothing
is invented. :func:`training_bags` simulates the set once per test session.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Literal

import pytest

from derain_ros.bag import BagMessage, BagReader, BagWriter
from derain_ros.conventions import (
    EVENT_TOPIC,
    GT_CLEAN_TOPIC,
    GT_DROP_MASK_TOPIC,
    GT_RAIN_TOPIC,
    IMAGE_TOPIC,
)
from derain_ros.sim import SynthConfig, synthesize

#: Frame size of the test bags (px).
WIDTH, HEIGHT = 64, 48
#: Frames per bag in :func:`training_bags` (a clip takes 3, so a bag gives ``n - 2`` clips).
FRAMES = {"a": 8, "b": 5, "val": 4}
#: The frame topics of a simulated bag: the rainy frames and their ground truth.
FRAME_TOPICS = (IMAGE_TOPIC, GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC)
#: Offered QoS per topic in copies, as the simulator writes them.
_QOS: dict[str, Literal["sensor_data", "driver_events"]] = {IMAGE_TOPIC: "sensor_data",
                                                             EVENT_TOPIC: "driver_events"}


def write_rainy_bag(path: Path, *, frames: int, seed: int, width: int = WIDTH,
                    height: int = HEIGHT) -> Path:
    """Simulate a rainy bag (frames, events, ground truth) at ``path``; returns ``path``."""
    config = SynthConfig(source="skimage:astronaut", width=width, height=height, fit="cover",
                         n_frames=frames, rain="heavy", seed=seed, threads=1)
    synthesize(config, path, progress=False)
    return path


def copy_topics(path: Path, *sources: tuple[Path, Collection[str]]) -> Path:
    """Write a bag at ``path`` holding the given topics of each ``(bag, topics)`` source.

    Messages are copied as their recorded CDR bytes and merged in log-time order, so a
    bag can lose a topic or take it from another recording of the same clock.
    """
    with BagWriter(path) as out:
        streams: list[Iterator[BagMessage]] = []
        readers = [BagReader(src) for src, _ in sources]
        try:
            for reader, (_, topics) in zip(readers, sources, strict=True):
                reader.open()
                for topic in topics:
                    out.add_topic(topic, reader.topics[topic].msgtype,
                                  qos=_QOS.get(topic, "reliable"))
                streams.append(reader.messages(topics))
            for rec in heapq.merge(*streams, key=lambda m: m.log_time_ns):
                out.write(rec.topic, rec.log_time_ns, rec.raw)
        finally:
            for reader in readers:
                reader.close()
    return path


_SESSION: dict[Path, dict[str, Path]] = {}


def training_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The training tests' bags, simulated once per test session (cached in its tmp dir).

    ``a``, ``b``, ``val``: simulated bags of :data:`FRAMES` frames (seeds 1, 2, 3);
    ``no_events``: ``a``'s frames and ground truth only; ``no_frames``: ``a``'s events
    only; ``mismatch``: ``a``'s frames with the events of the same clip simulated at
    80x60 px (an event sensor that is not aligned with the camera).
    """
    key = tmp_path_factory.getbasetemp()
    if key not in _SESSION:
        d = tmp_path_factory.mktemp("sim_bags")
        bags = {name: write_rainy_bag(d / f"{name}.mcap", frames=FRAMES[name], seed=seed)
                for name, seed in (("a", 1), ("b", 2), ("val", 3))}
        big = write_rainy_bag(d / "a_80x60.mcap", frames=FRAMES["a"], seed=1, width=80,
                              height=60)
        bags["no_events"] = copy_topics(d / "no_events.mcap", (bags["a"], FRAME_TOPICS))
        bags["no_frames"] = copy_topics(d / "no_frames.mcap", (bags["a"], [EVENT_TOPIC]))
        bags["mismatch"] = copy_topics(d / "mismatch.mcap", (bags["a"], FRAME_TOPICS),
                                       (big, [EVENT_TOPIC]))
        _SESSION[key] = bags
    return dict(_SESSION[key])
