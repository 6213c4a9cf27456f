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

__all__ = ["LEVELS", "FrameCost", "LatencyWindow", "RateMeter", "array_msg", "memory_mb",
           "status_msg"]

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


class FrameCost:
    """The node's own cost per frame, outside inference: CPU and wall time by stage.

    Stages: ``receive`` (the executor thread's callbacks: event decoding, synchronising,
    frame conversion; everything since the previous frame's callback is charged to the
    frame), ``prepare`` (the engine's frame and voxel grid), ``publish`` (the rest of the
    worker's time for the frame: clip assembly, output checks, image conversion,
    publishing). CPU is each thread's own (``time.thread_time_ns``), so another process
    on the core does not inflate it; wall time does include being descheduled.
    ``overhead = receive + prepare + publish`` per published frame; inference (``infer``,
    the back-end call) is reported beside it.
    """

    STAGES = ("receive", "prepare", "publish")

    def __init__(self, size: int = 500) -> None:
        self._lock = threading.Lock()
        self._cpu_ns = 0
        self._wall_ns = 0
        self._received: collections.OrderedDict[int, tuple[int, int]] = (
            collections.OrderedDict())
        self.windows = {f"{stage}_{kind}": LatencyWindow(size) for stage in
                        (*self.STAGES, "overhead", "infer") for kind in ("cpu", "wall")}

    def charge(self, cpu0_ns: int, wall0_ns: int) -> None:
        """Charge the executor thread's time since ``(thread_time_ns, perf_counter_ns)``."""
        cpu, wall = time.thread_time_ns() - cpu0_ns, time.perf_counter_ns() - wall0_ns
        with self._lock:
            self._cpu_ns += cpu
            self._wall_ns += wall

    def frame_received(self, stamp_ns: int) -> None:
        """Everything charged so far belongs to the frame stamped ``stamp_ns``."""
        with self._lock:
            self._received[stamp_ns] = (self._cpu_ns, self._wall_ns)
            self._cpu_ns = self._wall_ns = 0
            while len(self._received) > 256:
                self._received.popitem(last=False)

    def frame_done(self, stamp_ns: int, worker_cpu_ns: int, worker_wall_ns: int,
                   timings_ms: Mapping[str, float]) -> None:
        """One published frame: the worker's time for it and the engine's timings."""
        with self._lock:
            rx_cpu, rx_wall = self._received.pop(stamp_ns, (0, 0))
        ms = {"receive_cpu": rx_cpu / 1e6, "receive_wall": rx_wall / 1e6}
        for kind, suffix in (("cpu", "_cpu"), ("wall", "")):
            total = (worker_cpu_ns if kind == "cpu" else worker_wall_ns) / 1e6
            prep = float(timings_ms.get("prepare" + suffix, 0.0))
            infer = float(timings_ms.get("infer" + suffix, 0.0))
            ms[f"prepare_{kind}"] = prep
            ms[f"infer_{kind}"] = infer
            ms[f"publish_{kind}"] = max(0.0, total - prep - infer)
            ms[f"overhead_{kind}"] = (ms[f"receive_{kind}"] + prep + ms[f"publish_{kind}"])
        for key, value in ms.items():
            self.windows[key].add(value)

    def values(self) -> dict[str, float]:
        """``<stage>_<cpu|wall>_ms_p50`` for every stage, and p99 of the overhead."""
        out = {f"{key}_ms_p50": w.percentile(50) for key, w in self.windows.items()}
        out["overhead_cpu_ms_p99"] = self.windows["overhead_cpu"].percentile(99)
        out["overhead_wall_ms_p99"] = self.windows["overhead_wall"].percentile(99)
        return out


def memory_mb() -> dict[str, float]:
    """This process's resident memory now and its high-water mark (MB), from /proc."""
    out = {"rss_mb": float("nan"), "rss_peak_mb": float("nan")}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mb" if line.startswith("VmRSS") else "rss_peak_mb"
                    out[key] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return out


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
