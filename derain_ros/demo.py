"""``derain-ros demo``: the README's main command.

Until the node and the replay evaluation exist, it runs what exists: the
environment checks and, where the real recordings are present, an event summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from derain_ros import doctor

__all__ = ["add_arguments", "run"]

_EVENT_BAGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "event_bags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options yet."""


def run(args: argparse.Namespace) -> int:
    """Run the checks, then summarise the real recordings if they are here."""
    status = doctor.run(argparse.Namespace(json=False))
    if status:
        return status
    try:
        from derain_ros.events import info
    except ImportError:
        return 0
    for bag in sorted(p for p in _EVENT_BAGS.glob("*") if p.is_dir()):
        print(f"\n== {bag.name}")
        info_args = argparse.Namespace(bag=str(bag), topic=None, json=False)
        status = info.run(info_args) or status
    return status
