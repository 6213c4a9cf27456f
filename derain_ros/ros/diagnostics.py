"""``/diagnostics`` for the node without ``diagnostic_updater`` (not on PyPI).

Rates, latency percentiles and a status built from counters; the node publishes one
``DiagnosticArray`` per period. The statistics helpers are ROS-free; only
:func:`status_msg` touches messages.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["LEVELS", "LatencyWindow", "RateMeter", "array_msg", "status_msg"]

#: level name -> DiagnosticStatus level byte
LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN,
          "ERROR": DiagnosticStatus.ERROR, "STALE": DiagnosticStatus.STALE}


class RateMeter:
    """Events per second over a sliding window of ``window_s`` seconds (monotonic clock)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now_ns: int | None = None) -> None:
        """Count one occurrence."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            self._times.append(now)
            self.total += 1
            self._trim(now)

    def _trim(self, now: int) -> None:
        while self._times and now - self._times[0] > self.window_ns:
            self._times.popleft()

    def rate(self, now_ns: int | None = None) -> float:
        """Occurrences per second over the window (Hz)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = max(now - self._times[0], 1)
            return n * 1e9 / span


class LatencyWindow:
    """The last ``size`` latencies (ms) and their percentiles."""

    def __init__(self, size: int = 500) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        """Record one latency in milliseconds."""
        with self._lock:
            self._values.append(float(ms))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (ms), NaN when empty."""
        with self._lock:
            if not self._values:
                return float("nan")
            return float(np.percentile(np.fromiter(self._values, float), q))

    def __len__(self) -> int:
        return len(self._values)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def status_msg(name: str, hardware_id: str, level: str, message: str,
               values: Mapping[str, Any]) -> DiagnosticStatus:
    """A DiagnosticStatus with ``values`` as key/value strings."""
    status = DiagnosticStatus()
    status.level = LEVELS[level]
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    return status


def array_msg(stamp: Any, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    """A DiagnosticArray of ``statuses`` stamped ``stamp`` (a builtin_interfaces Time)."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg
