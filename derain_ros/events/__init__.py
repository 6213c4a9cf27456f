"""Events: decoders and encoders of every EventPacket encoding, decode-until, voxel grids.

Public API (everything else is internal)::

    make_decoder(encoding, width, height) -> Decoder   # .decode(payload, time_base) -> Decoded
    make_encoder(encoding, width, height) -> Encoder   # .encode(events) -> (bytes, time_base)
    EventStream(width, height)               # .push_decoded / .pop_until / .pop_all
    dv_arrays_to_batch(...)                            # dv_ros2_msgs EventArray fields -> events
    event_array_msg_to_batch(msg)                      # an EventArray message -> events
    voxel_grid(events, t0_ns, t1_ns, bins), count_image(events)   # in derain_ros.events.voxel
    warm_up()                                          # compile every kernel before data arrives

Encodings: ``evt3`` (Prophesee EVT 3.0, with triggers), ``libcaer``, ``libcaer_cmp``
(decode only) and ``mono`` (deprecated). All times are int64 ns of sensor time.
The voxel module imports torch; import it explicitly (``derain_ros.events.voxel``) so that
decoding alone never pulls torch in.
"""

from __future__ import annotations

from derain_ros.events import evt3, libcaer, libcaer_cmp, mono  # noqa: F401 - registers codecs
from derain_ros.events.base import (
    DEFAULT_MAX_PACKET_BYTES,
    Decoded,
    Decoder,
    DecoderStats,
    Encoder,
    decoder_encodings,
    encoder_encodings,
    make_decoder,
    make_encoder,
)
from derain_ros.events.dv import (
    DvConversion,
    batch_to_dv_arrays,
    dv_arrays_to_batch,
    event_array_msg_to_batch,
)
from derain_ros.events.errors import (
    EncodingError,
    EventError,
    EventOutOfBoundsError,
    PacketTooLargeError,
    TimeBaseError,
    TimeOrderError,
    TruncatedPacketError,
    UnknownEncodingError,
)
from derain_ros.events.stream import EventStream, StreamCounters
from derain_ros.events.warm import warm_up
from derain_ros.records import EventBatch, TriggerBatch

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "Decoded",
    "Decoder",
    "DecoderStats",
    "DvConversion",
    "Encoder",
    "EncodingError",
    "EventBatch",
    "EventError",
    "EventOutOfBoundsError",
    "EventStream",
    "PacketTooLargeError",
    "StreamCounters",
    "TimeBaseError",
    "TimeOrderError",
    "TriggerBatch",
    "TruncatedPacketError",
    "UnknownEncodingError",
    "batch_to_dv_arrays",
    "decoder_encodings",
    "dv_arrays_to_batch",
    "encoder_encodings",
    "event_array_msg_to_batch",
    "make_decoder",
    "make_encoder",
    "warm_up",
]
