"""The derain-ros command: one entry point, one sub-command per tool.

Each sub-command lives next to the code it drives and exposes
``add_arguments(parser)`` and ``run(args) -> int``. This file only maps names to
those modules, importing a module when its command is used so that, for example,
``derain-ros events-info`` never imports torch or rclpy.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence

from derain_ros.errors import DerainError
from derain_ros.exits import (
    EPILOG,
    EXIT_FAILURE,
    EXIT_USAGE,
    interrupted,
    sigterm_as_interrupt,
    version_text,
)

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "events-info": ("derain_ros.events.info", "summarise the event topics of a bag"),
    "synth": ("derain_ros.sim.cli", "synthesise a rainy hybrid-rig bag with ground truth"),
    "run": ("derain_ros.node", "run the deraining node (without ros2 launch)"),
    "replay": ("derain_ros.eval.replay", "replay a bag through the running node over DDS"),
    "eval": ("derain_ros.eval.evaluate", "score a replayed bag and write a report"),
    "demo": ("derain_ros.demo", "synthesise, derain over DDS, and report: the end-to-end demo"),
    "doctor": ("derain_ros.doctor", "check the environment: interfaces, DDS settings, torch"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; sub-command arguments are added on demand."""
    parser = argparse.ArgumentParser(prog="derain-ros", description=__doc__.splitlines()[0],
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text("derain-ros"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``derain-ros``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage / error and exits
        return EXIT_USAGE
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"derain-ros {name}: not implemented in this version ({module_name} is missing)",
                  file=sys.stderr)
            return EXIT_USAGE
        raise
    parser = argparse.ArgumentParser(prog=f"derain-ros {name}", description=help_text,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.add_argument("--version", action="version", version=version_text("derain-ros"))
    # Everything from --ros-args on belongs to rclpy (remappings, -p name:=value), as
    # with `ros2 run`; argparse must not see it.
    ros_tail: list[str] = []
    if "--ros-args" in rest:
        cut = rest.index("--ros-args")
        rest, ros_tail = rest[:cut], rest[cut:]
    args = parser.parse_args(rest)
    args.ros_args = [*(getattr(args, "ros_args", None) or []), *ros_tail]
    # The node (`run`) leaves signals to rclpy; every other command stops on SIGTERM as
    # on Ctrl-C, through its finally blocks (the demo stops its node).
    guard = sigterm_as_interrupt() if name != "run" else contextlib.nullcontext()
    try:
        with guard:
            return int(module.run(args) or 0)
    except DerainError as err:
        print(f"derain-ros {name}: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        return interrupted(f"derain-ros {name}", err)


if __name__ == "__main__":
    sys.exit(main())
