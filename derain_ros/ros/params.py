"""Set a running node's parameters from a tool (``derain-train adapt --node``).

An rclpy context of its own (so it can run inside a process with other ROS code), one
``SetParameters`` call to ``/<node>/set_parameters``, and the node's answer. The node
swaps checkpoints between two frames (``derain_ros.node``: a bad file is refused and
the old weights stay), so setting ``checkpoint`` never drops a frame.
"""

from __future__ import annotations

import os
import time
from typing import Any

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor

__all__ = ["set_checkpoint", "set_string_parameter"]


def set_string_parameter(node: str, name: str, value: str, *,
                         timeout_s: float = 30.0) -> tuple[bool, str]:
    """Set the string parameter ``name`` of the node ``node`` (``/ns/name`` or ``name``).

    Returns ``(successful, reason)``: the node's own answer, or why no answer came.
    """
    target = "/" + node.strip("/")
    context = rclpy.Context()
    rclpy.init(context=context)
    helper = rclpy.create_node(f"derain_param_client_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(helper)
    client: Any = helper.create_client(SetParameters, f"{target}/set_parameters")
    try:
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                return False, f"no node {target} answered within {timeout_s:.0f} s"
            executor.spin_once(timeout_sec=0.1)
        value_msg = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter(name=name, value=value_msg)]))
        while not future.done():
            if time.monotonic() > deadline:
                return False, f"{target} did not answer the parameter call in time"
            executor.spin_once(timeout_sec=0.1)
        answer = future.result()
        if answer is None:
            return False, f"{target} answered the parameter call with nothing"
        result = answer.results[0]
        return bool(result.successful), str(result.reason or ("set" if result.successful
                                                               else "refused"))
    finally:
        helper.destroy_client(client)
        executor.shutdown()
        helper.destroy_node()
        rclpy.shutdown(context=context)


def set_checkpoint(node: str, checkpoint: str, *, timeout_s: float = 30.0) -> tuple[bool, str]:
    """Point the node's ``checkpoint`` parameter at new weights (hot swap)."""
    return set_string_parameter(node, "checkpoint", checkpoint, timeout_s=timeout_s)
