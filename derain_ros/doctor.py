"""``derain-ros doctor``: is this environment ready to run derain_ros?

Checks what users of event nodes most often get wrong (background.md §2-3): the
event interfaces and their type hash (a mismatched EventPacket definition means no
data from real drivers), the DDS discovery range and Fast DDS profile, and the
torch device. Prints one line per check; exit status 1 when an essential one fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

__all__ = ["EVENT_PACKET_HASH", "add_arguments", "run"]

#: Type hash of event_camera_msgs/msg/EventPacket as real drivers and bags carry it.
EVENT_PACKET_HASH = "RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa"


def _interface_hash(package: str, message: str) -> str | None:
    """The RIHS01 hash rosidl generated for ``package/msg/message``, from its JSON."""
    prefixes = [*os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep), sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / package / "msg" / f"{message}.json"
        if prefix and path.is_file():
            data = json.loads(path.read_text())
            for entry in data.get("type_hashes", []):
                if entry.get("type_name") == f"{package}/msg/{message}":
                    return entry.get("hash_string")
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the checks read the environment."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Run the checks; 0 when every essential one passes."""
    checks: list[tuple[str, bool, str, bool]] = []  # name, ok, detail, essential

    def check(name: str, ok: bool, detail: str, essential: bool = True) -> None:
        checks.append((name, ok, detail, essential))

    check("python", True, platform.python_version())
    for module in ("numpy", "cv2", "torch", "rosbags", "safetensors"):
        try:
            mod = importlib.import_module(module)
            check(module, True, getattr(mod, "__version__", "ok"))
        except ImportError as err:
            check(module, False, str(err))
    try:
        import torch

        cuda = torch.cuda.is_available()
        check("device", True, torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA)", False)
    except ImportError:
        pass

    rng = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    check("ROS_AUTOMATIC_DISCOVERY_RANGE", bool(rng),
          rng or "unset: DDS discovery multicasts to every network card", False)
    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    check("Fast DDS profile", not profile or Path(profile).is_file(),
          profile or "none (Fast DDS defaults)", False)
    for module in ("rclpy", "sensor_msgs.msg", "diagnostic_msgs.msg", "event_camera_msgs.msg",
                   "dv_ros2_msgs.msg"):
        try:
            importlib.import_module(module)
            check(module, True, "importable", module != "dv_ros2_msgs.msg")
        except ImportError as err:
            check(module, False, str(err).splitlines()[0], module != "dv_ros2_msgs.msg")
    found = _interface_hash("event_camera_msgs", "EventPacket")
    check("EventPacket type hash", found == EVENT_PACKET_HASH,
          found or "interface description not found under AMENT_PREFIX_PATH")

    failed = [c for c in checks if not c[1] and c[3]]
    if getattr(args, "json", False):
        print(json.dumps({name: {"ok": ok, "detail": detail} for name, ok, detail, _ in checks}))
    else:
        for name, ok, detail, essential in checks:
            mark = "ok  " if ok else ("FAIL" if essential else "warn")
            print(f"[{mark}] {name}: {detail}")
        print("environment ready" if not failed else f"{len(failed)} essential check(s) failed")
    return 1 if failed else 0
