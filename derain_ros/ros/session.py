"""An rclpy session of its own (context, node, executor) for tools that talk to a node.

Bag replay (:mod:`derain_ros.eval.replay`) plays a bag into the running node over real
DDS and records what comes out, as a driver and a recorder would. The rclpy part of that
lives here, at the ROS edge, so the replay logic itself stays importable without ROS.
A session has its own :class:`rclpy.Context`, so it can start and stop inside a process
that runs other ROS code (the tests, the demo) without touching the global context.
Publishers and subscriptions carry raw CDR bytes: messages go out as stored in the bag.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rcl_interfaces.srv import GetParameters
from rclpy.client import Client
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import NodeNameNonExistentError
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from derain_ros.errors import ConfigError
from derain_ros.eval.errors import ReplayError
from derain_ros.ros.interfaces import message_class
from derain_ros.sync import stamp_to_ns

__all__ = ["RosSession", "msg_class"]

# ParameterValue.type of each field GetParameters may answer with
_PARAMETER_FIELDS = {"bool_value": 1, "integer_value": 2, "double_value": 3, "string_value": 4}


def msg_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name`` (a missing package names its fix)."""
    pkg, _, name = msgtype.split("/")
    try:
        return message_class(pkg, name, needed_for=f"a bag topic of type {msgtype}")
    except ConfigError as err:
        raise ReplayError(str(err)) from err


class RosSession:
    """One rclpy context with a helper node, talking to the node ``node_name``.

    ``abort`` is called while waiting; a returned message stops the wait with
    :class:`ReplayError` (e.g. "the node process exited").
    """

    def __init__(self, node_name: str, abort: Callable[[], str | None] | None = None) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"derain_replay_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.target = node_name.strip("/")
        self.abort = abort

    def spin(self, seconds: float = 0.0) -> None:
        """Handle callbacks for ``seconds`` (at least one round)."""
        end = time.monotonic() + seconds
        while True:
            self.executor.spin_once(timeout_sec=max(0.0, min(0.005, end - time.monotonic())))
            if time.monotonic() >= end:
                return

    def wait_until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Handle callbacks until ``cond()``; False when ``timeout_s`` passed first."""
        end = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() >= end:
                return False
            if self.abort is not None and (why := self.abort()):
                raise ReplayError(why)
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def publisher(self, msgtype: str, topic: str, depth: int) -> Any:
        """A reliable, volatile publisher of ``msgtype`` (publish raw CDR bytes to it)."""
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        return self.node.create_publisher(msg_class(msgtype), topic, qos)

    def subscription(self, msgtype: str, topic: str, callback: Callable[[bytes], None],
                     reliable: bool) -> Any:
        """A subscription handing ``callback`` the raw CDR bytes of each message."""
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=(ReliabilityPolicy.RELIABLE if reliable
                                      else ReliabilityPolicy.BEST_EFFORT),
                         durability=DurabilityPolicy.VOLATILE)
        return self.node.create_subscription(msg_class(msgtype), topic, callback, qos,
                                             raw=True)

    def publishers_reliable(self, topic: str) -> bool | None:
        """Whether every publisher of ``topic`` is reliable (None: no publisher yet)."""
        infos = self.node.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        return all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)

    def parameters(self, names: Sequence[str], timeout_s: float = 3.0) -> dict[str, Any]:
        """The target node's parameters (empty when its parameter service does not answer)."""
        # (GetParameters is untyped, so rclpy's type variables cannot be inferred)
        client: Client[Any, Any] = self.node.create_client(
            GetParameters, f"/{self.target}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return {}
            future = client.call_async(GetParameters.Request(names=list(names)))
            if not self.wait_until(future.done, timeout_s):
                return {}
            result = future.result()
            if result is None:
                return {}
            out = {}
            for name, value in zip(names, result.values, strict=False):
                for attr, kind in _PARAMETER_FIELDS.items():
                    if value.type == kind:
                        out[name] = getattr(value, attr)
            return out
        finally:
            self.node.destroy_client(client)

    def subscribed_topics(self) -> dict[str, list[str]]:
        """Topics the target node subscribes to (topic -> message types); empty while the
        graph has not seen it."""
        namespace, _, name = ("/" + self.target).rpartition("/")
        try:
            pairs = self.node.get_subscriber_names_and_types_by_node(name, namespace or "/")
        except NodeNameNonExistentError:  # discovery has not seen the node yet
            return {}
        return {topic: list(types) for topic, types in pairs}

    def diagnostic_values(self, raw: bytes) -> dict[str, str] | None:
        """The key/values of the target node's status in a raw ``DiagnosticArray``
        (None when the message holds no status of that node)."""
        msg = deserialize_message(raw, msg_class("diagnostic_msgs/msg/DiagnosticArray"))
        for status in msg.status:
            if status.name.split(":")[0].strip("/ ") == self.target:
                return {kv.key: kv.value for kv in status.values}
        return None

    @staticmethod
    def header_stamp_ns(raw: bytes, msgtype: str) -> int:
        """``header.stamp`` (ns) of a raw CDR message of ``msgtype``."""
        return stamp_to_ns(deserialize_message(raw, msg_class(msgtype)).header.stamp)

    def close(self) -> None:
        """Stop the executor and node, and shut the context down."""
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)
