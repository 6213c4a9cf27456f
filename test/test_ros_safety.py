"""DDS must stay on this machine: the guards that make sure of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT / "test")


def test_test_setup_refuses_rclpy_without_localhost_discovery():
    env = {k: v for k, v in os.environ.items() if k != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    result = _run_python("import conftest\nimport rclpy", env)
    assert result.returncode != 0
    assert "refusing to import rclpy" in result.stderr
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in result.stderr


def test_test_setup_allows_rclpy_with_localhost_discovery():
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    result = _run_python("import conftest\nimport rclpy\nprint('ok')", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_readme_commands_and_ci_set_localhost_discovery():
    makefile = (ROOT / "Makefile").read_text()
    assert "export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST" in makefile
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_fastdds_profile_keeps_traffic_on_loopback():
    profile = (ROOT / "config" / "fastdds_localhost.xml").read_text()
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in profile
    assert "<address>127.0.0.1</address>" in profile
    assert "<type>SHM</type>" in profile
