"""Set a running node's parameters from a tool (``derain-train adapt --node``).

An rclpy context of its own (so it can run inside a process with other ROS code), one
``SetParameters`` call to ``/<node>/set_parameters``, and the node's answer. The node
swaps checkpoints between two frames (``derain_ros.node``: a bad file is refused and
the old weights stay), so setting ``checkpoint`` never drops a frame. Weights whose graph
the node must export first are swapped seconds after the parameter is set (the export
runs in a child process while the stream goes on): :func:`set_checkpoint` then follows
the node's /diagnostics until the swap has landed, or failed, and says which.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor

__all__ = ["set_checkpoint", "set_string_parameter"]


def set_string_parameter(node: str, name: str, value: str, *,
                         timeout_s: float = 30.0,
                         confirm: Callable[[Any, Any, float], tuple[bool, str]] | None = None,
                         ) -> tuple[bool, str]:
    """Set the string parameter ``name`` of the node ``node`` (``/ns/name`` or ``name``).

    Returns ``(successful, reason)``: the node's own answer, or why no answer came.
    ``confirm(helper_node, executor, deadline)``, called after a successful answer, may
    follow up (see :func:`set_checkpoint`) and gives the final result.
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
        if result.successful and confirm is not None:
            return confirm(helper, executor, deadline)
        return bool(result.successful), str(result.reason or ("set" if result.successful
                                                               else "refused"))
    finally:
        helper.destroy_client(client)
        executor.shutdown()
        helper.destroy_node()
        rclpy.shutdown(context=context)


def set_checkpoint(node: str, checkpoint: str, *, timeout_s: float = 120.0
                   ) -> tuple[bool, str]:
    """Point the node's ``checkpoint`` parameter at new weights and wait for the swap.

    Success once the node's /diagnostics show it running ``checkpoint`` with no swap
    pending; failure when it refused the parameter, or reports a failed swap of that file
    (its ``last_problem``) and still runs other weights; a timeout says so. ``timeout_s``
    covers the call and the export of the new weights' graph.
    """
    target = "/" + node.strip("/")
    name = Path(checkpoint).name

    def landed(helper: Any, executor: Any, deadline: float) -> tuple[bool, str]:
        from diagnostic_msgs.msg import DiagnosticArray

        seen: list[dict[str, str]] = []

        def on_diagnostics(msg: Any) -> None:
            for status in msg.status:
                if status.name.split(":")[0].strip() == target:
                    seen.append({kv.key: kv.value for kv in status.values})

        sub = helper.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        try:
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
                while seen:
                    d = seen.pop(0)
                    if d.get("checkpoint_swap_pending") == "True":
                        continue
                    if d.get("checkpoint") == checkpoint or not checkpoint:
                        running = d.get("checkpoint", "?")
                        return True, f"swapped: {target} runs {running}"
                    problem = d.get("last_problem", "")
                    if "checkpoint_swap_failed" in problem and name in problem:
                        return False, f"{target} could not load the weights: {problem}"
            return False, (f"{target} took the parameter but did not report the swap within "
                           f"{timeout_s:.0f} s (see its /diagnostics)")
        finally:
            helper.destroy_subscription(sub)

    return set_string_parameter(target, "checkpoint", checkpoint, timeout_s=timeout_s,
                                confirm=landed)
