"""Test set-up shared by every suite.

ROS safety: DDS must never leave this machine. This file refuses to let rclpy be
imported (in this process) unless ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is set,
points Fast DDS at the loopback profile in ``config/``, and gives subprocesses the
same environment through :func:`ros_env`. Each ROS test module picks its own
``ROS_DOMAIN_ID`` (see :func:`ros_env`) so modules can run side by side.
"""

from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EVENT_BAGS = SHARED / "data" / "event_bags"
FASTDDS_PROFILE = ROOT / "config" / "fastdds_localhost.xml"
REQUIRED_RANGE = "LOCALHOST"


class _RclpyGuard(importlib.abc.MetaPathFinder):
    """Refuses ``import rclpy`` while DDS discovery is not limited to localhost."""

    def find_spec(self, fullname, path=None, target=None):
        range_ok = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == REQUIRED_RANGE
        if fullname == "rclpy" and not range_ok:
            raise ImportError(
                "refusing to import rclpy: set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST "
                "(run the tests with `make test`); without it DDS multicasts off this machine"
            )


sys.meta_path.insert(0, _RclpyGuard())
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))


#: Added to every suite's domain id: two checkouts testing side by side on one machine
#: (``DERAIN_TEST_DOMAIN_OFFSET=100`` in one of them) never see each other's traffic.
DOMAIN_OFFSET = int(os.environ.get("DERAIN_TEST_DOMAIN_OFFSET", "0"))


#: DDS domain ids run 0-232 (Fast DDS derives ports from them).
MAX_DOMAIN_ID = 232


def stop_node(proc: subprocess.Popen) -> None:
    """Stop a node process as a user would (SIGTERM), killing it if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def domain(domain_id: int) -> int:
    """The DDS domain a suite's ``domain_id`` maps to here (see :data:`DOMAIN_OFFSET`),
    wrapped into the valid range 0-232."""
    return (domain_id + DOMAIN_OFFSET) % (MAX_DOMAIN_ID + 1)


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment for a ROS subprocess: loopback-only DDS on ``domain(domain_id)``.

    Domain ids by suite, so suites never see each other's traffic: foundation 10-19,
    node 40-59, replay/eval/demo 60-79, training 80-89.
    """
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != REQUIRED_RANGE:
        pytest.fail("ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST is required for ROS tests")
    env = dict(os.environ)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE=REQUIRED_RANGE,
        ROS_DOMAIN_ID=str(domain(domain_id)),
        FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def event_bags() -> Path:
    """The real recordings in ../shared; skips (saying why) where they are absent."""
    if not EVENT_BAGS.is_dir():
        pytest.skip(f"real event recordings not found at {EVENT_BAGS} (only in the project's CI)")
    return EVENT_BAGS
