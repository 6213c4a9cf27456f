"""The offline synchroniser: :func:`windows_from_bag`, every frame of a bag with its events.

Training, evaluation and the quality bench read bags through this one function, so a
bag is cut into windows by exactly the code the node runs live. Differences from live,
and why: "now" is the bag's log time (the result does not depend on read speed); the
buffer cap is :data:`BAG_BUFFER_BYTES` (offline, nothing need be dropped for memory);
ground-truth images with a frame's stamp are attached to its window.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from derain_ros.conventions import (
    EVENT_TOPIC,
    GT_CLEAN_TOPIC,
    GT_DROP_MASK_TOPIC,
    GT_RAIN_TOPIC,
    IMAGE_TOPIC,
)
from derain_ros.errors import DerainError, SyncError
from derain_ros.sync.config import SyncConfig
from derain_ros.sync.messages import event_array_msg_to_batch, image_from_msg, stamp_to_ns
from derain_ros.sync.policy import SyncCounters
from derain_ros.sync.records import FrameImage, FrameWindow
from derain_ros.sync.synchronizer import FrameEventSynchronizer

__all__ = ["BAG_BUFFER_BYTES", "windows_from_bag"]

_log = logging.getLogger(__name__)

_DEFAULT_GT_TOPICS = (GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC)

#: Event buffer cap when reading a bag (bytes): bounded, but never reached in practice.
BAG_BUFFER_BYTES = 2_000_000_000


def windows_from_bag(path: str | Path, image_topic: str = IMAGE_TOPIC,
                     event_topic: str = EVENT_TOPIC, *,
                     extra_topics: Sequence[str] = _DEFAULT_GT_TOPICS,
                     config: SyncConfig | None = None,
                     counters_out: list[SyncCounters] | None = None) -> Iterator[FrameWindow]:
    """Every frame of a bag with the events since the previous frame, in bag order.

    Images on ``extra_topics`` (ground truth, by default) with the same ``header.stamp``
    as a frame are attached as ``window.extras[topic]``; topics absent from the bag are
    ignored. Timeouts run on the bag's log time, so the result does not depend on read
    speed. A bag is read offline, so by default nothing is dropped for memory: the event
    buffer cap is :data:`BAG_BUFFER_BYTES` (one frame interval of events is all it holds).
    Raises :class:`SyncError` for a bag without the image topic (e.g. a recording
    with events only). When ``counters_out`` is a list, the synchroniser's counters
    are appended to it at the end.
    """
    from derain_ros.bag import BagReader

    with BagReader(path) as bag:
        topics = _bag_topics(bag)
        if image_topic not in topics:
            events_note = (f"this bag has events ({event_topic}) but no frames"
                           if event_topic in topics else "this bag has no frames")
            raise SyncError(f"{path}: {events_note}: no {image_topic!r} topic "
                            f"(topics: {', '.join(sorted(topics)) or 'none'})")
        extras = _ExtraImages([t for t in extra_topics if t in topics])
        now = [0]
        sync = FrameEventSynchronizer(config or SyncConfig(max_buffer_bytes=BAG_BUFFER_BYTES),
                                      clock=lambda: now[0])
        wanted = [image_topic, *extras.topics] + ([event_topic] if event_topic in topics else [])
        for rec in bag.messages(wanted):
            topic, msg = rec.topic, rec.msg
            now[0] = int(rec.log_time_ns)
            if topic == event_topic:
                extras.waiting.extend(_feed_event_msg(sync, msg))
            elif topic == image_topic:
                extras.waiting.extend(sync.add_frame(
                    image_from_msg(msg), None, stamp_to_ns(msg.header.stamp),
                    msg.header.frame_id))
            else:
                extras.add(topic, msg)
            yield from extras.ready(done=False)
        extras.waiting.extend(sync.flush())
        yield from extras.ready(done=True)
        if counters_out is not None:
            counters_out.append(sync.counters)


class _ExtraImages:
    """Holds windows back until the ground truth with their stamps has been read.

    Ground truth may be written to a bag a little before or after its frame; a window
    waits until every extra topic has an image with its stamp or has moved past it.
    """

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        self.waiting: collections.deque[FrameWindow] = collections.deque()
        self._images: dict[str, dict[int, FrameImage]] = {t: {} for t in topics}
        self._latest: dict[str, int] = {}

    def add(self, topic: str, msg: Any) -> None:
        """An image of an extra topic."""
        stamp = stamp_to_ns(msg.header.stamp)
        self._images[topic][stamp] = image_from_msg(msg)
        self._latest[topic] = max(self._latest.get(topic, stamp), stamp)

    def ready(self, done: bool) -> Iterator[FrameWindow]:
        """The waiting windows whose extras are in (all of them when ``done``)."""
        images = self._images
        while self.waiting:
            w = self.waiting[0]
            if not done and any(w.stamp_ns not in images[t]
                                and self._latest.get(t, -1) < w.stamp_ns for t in self.topics):
                return
            self.waiting.popleft()
            attached = {t: images[t].pop(w.stamp_ns) for t in self.topics
                        if w.stamp_ns in images[t]}
            for t in self.topics:  # forget ground truth older than this frame
                for s in [s for s in images[t] if s < w.stamp_ns]:
                    del images[t][s]
            yield dataclasses.replace(w, extras=attached) if attached else w


def _feed_event_msg(sync: FrameEventSynchronizer, msg: Any) -> list[FrameWindow]:
    """An EventPacket or dv_ros2_msgs EventArray (any flavour) into ``sync``."""
    stamp = stamp_to_ns(msg.header.stamp)
    if hasattr(msg, "encoding"):
        return sync.add_events(msg.events, int(msg.time_base), msg.encoding, int(msg.width),
                               int(msg.height), stamp, int(msg.seq))
    try:
        batch = event_array_msg_to_batch(msg)
    except DerainError as err:
        sync.counters.packets_malformed += 1
        _log.warning("dropped a malformed EventArray: %s", err)
        return []
    return sync.add_decoded(batch, stamp)


def _bag_topics(bag: Any) -> Iterable[str]:
    topics = bag.topics
    return set(topics) if not isinstance(topics, Mapping) else set(topics.keys())
