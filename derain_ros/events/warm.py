"""``warm_up()``: compile (or load from numba's cache) every event kernel on tiny inputs.

Why: numba compiles a kernel at its first call, which takes seconds without a cache; a
node calls this at start so its first message is not delayed. The voxel kernels are
warmed too when torch is importable (``voxel=True``).
"""

from __future__ import annotations

import time

import numpy as np

from derain_ros.events.base import decoder_encodings, encoder_encodings, make_decoder, make_encoder
from derain_ros.records import EventBatch

__all__ = ["warm_up"]

#: a payload long enough for every decoder's long-packet path (a multiple of 8 bytes)
_LONG_PAYLOAD_BYTES = 16 * 1024


def warm_up(*, voxel: bool = True) -> float:
    """Run every decoder, encoder (and voxel kernel) once; returns the seconds it took."""
    start = time.perf_counter()
    events = EventBatch(np.array([1000, 2000], np.int64), np.array([1, 2]), np.array([0, 1]),
                        np.array([0, 1]), 4, 4)
    for enc in encoder_encodings():
        encoder = make_encoder(enc, 4, 4)
        payload, time_base = encoder.encode(events)
        make_decoder(enc, 4, 4).decode(payload, time_base)
    for enc in decoder_encodings():
        make_decoder(enc, 4, 4).decode(b"\x00" * 16, 0)
        # long packets take other kernels in some formats (evt3's block decoder)
        make_decoder(enc, 4, 4).decode(b"\x00" * _LONG_PAYLOAD_BYTES, 0)
    if voxel:
        from derain_ros.events import voxel as _voxel  # imports torch: only when asked

        _voxel.warm_up()
    return time.perf_counter() - start
