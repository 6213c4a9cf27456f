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
from typing import Any

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor

__all__ = ["set_checkpoint", "set_string_parameter"]


class _SwapFollower:
    """Follows a node's /diagnostics around a checkpoint swap (see :func:`set_checkpoint`).

    The failure count is read before the parameter call, and what arrived before it is
    dropped, so that a message published before the swap cannot pass for its outcome.
    """

    def __init__(self, target: str, checkpoint: str, timeout_s: float) -> None:
        self.target, self.checkpoint, self.timeout_s = target, checkpoint, timeout_s
        self.seen: list[dict[str, str]] = []
        self.failures_before: int | None = None

    def attach(self, helper: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diagnostics(msg: Any) -> None:
            for status in msg.status:
                if status.name.split(":")[0].strip() == self.target:
                    self.seen.append({kv.key: kv.value for kv in status.values})

        helper.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

    def baseline(self, executor: Any, until: float) -> None:
        """Wait (until ``until``) for one status of the node; keep its failure count."""
        while not self.seen and time.monotonic() < until:
            executor.spin_once(timeout_sec=0.1)
        if self.seen:
            self.failures_before = int(self.seen[-1].get("checkpoint_swap_failures", "0"))
        self.seen.clear()

    def outcome(self, executor: Any, deadline: float) -> tuple[bool, str]:
        """The swap's outcome, as the node's statuses after the call tell it."""
        target, checkpoint = self.target, self.checkpoint
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            while self.seen:
                d = self.seen.pop(0)
                if d.get("checkpoint_swap_pending") == "True":
                    continue
                if d.get("checkpoint") == checkpoint or not checkpoint:
                    return True, f"swapped: {target} runs {d.get('checkpoint', '?')}"
                failures = int(d.get("checkpoint_swap_failures", "0"))
                problem = d.get("last_problem", "")
                if (self.failures_before is not None and failures > self.failures_before
                        and "checkpoint_swap_failed" in problem):
                    return False, f"{target} could not load the weights: {problem}"
        return False, (f"{target} took the parameter but did not report the swap within "
                       f"{self.timeout_s:.0f} s (see its /diagnostics)")


def set_string_parameter(node: str, name: str, value: str, *, timeout_s: float = 30.0,
                         follow: _SwapFollower | None = None) -> tuple[bool, str]:
    """Set the string parameter ``name`` of the node ``node`` (``/ns/name`` or ``name``).

    Returns ``(successful, reason)``: the node's own answer, or why no answer came;
    ``follow`` (:func:`set_checkpoint`) turns a successful answer into the outcome it
    follows.
    """
    target = "/" + node.strip("/")
    context = rclpy.Context()
    rclpy.init(context=context)
    helper = rclpy.create_node(f"derain_param_client_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(helper)
    client: Any = helper.create_client(SetParameters, f"{target}/set_parameters")
    if follow is not None:
        follow.attach(helper)
    try:
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                return False, f"no node {target} answered within {timeout_s:.0f} s"
            executor.spin_once(timeout_sec=0.1)
        if follow is not None:
            follow.baseline(executor, min(deadline, time.monotonic() + 5.0))
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
        if result.successful and follow is not None:
            return follow.outcome(executor, deadline)
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
    pending; failure when it refused the parameter, or counts a new failed swap (its
    ``last_problem`` is the reason) and still runs other weights; a timeout says so.
    ``timeout_s`` covers the call and the export of the new weights' graph.
    """
    target = "/" + node.strip("/")
    return set_string_parameter(target, "checkpoint", checkpoint, timeout_s=timeout_s,
                                follow=_SwapFollower(target, checkpoint, timeout_s))
