"""Per-thread scratch buffers that grow and are kept, for the kernels' working memory.

Why keep them: allocating tens of MB afresh per call made glibc hand the pages back and
fault them in again, which on this VM cost about a third of decoding a 2M-event payload.
Per thread, so the node's worker and a replay thread never share one.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["thread_buffer"]

_local = threading.local()


def thread_buffer(name: str, rows: int, dtype: type, *, width: int | None = None,
                  zeroed: bool = False) -> np.ndarray:
    """This thread's buffer ``name``: at least ``rows`` items of ``dtype`` (``rows`` x
    ``width`` with a width), possibly more rows: slice what you need. ``zeroed`` buffers
    are zeros when first made; a caller that needs that must leave it zeroed after use."""
    buf = getattr(_local, name, None)
    if buf is None or buf.shape[0] < rows:
        shape = (rows,) if width is None else (rows, width)
        buf = np.zeros(shape, dtype) if zeroed else np.empty(shape, dtype)
        setattr(_local, name, buf)
    return buf
