"""The README's walkthrough ("From your own recording to a report", #15 C.7) against the
real recordings in ``../shared/data/event_bags/``: what the README shows each command
printing is what the command prints, and every command line it gives parses.

The walkthrough's own bag (frames and events) cannot be one of the shared recordings,
which hold events only; replay and eval of such a bag over DDS are covered by
``test_replay_dds.py`` and ``test_replay_events.py``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT
from derain_ros import cli, node

SECTION = "## From your own recording to a report"


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), re.S)


def _sessions() -> list[tuple[str, str]]:
    """``(command, what the README shows it printing)`` of each ``$ `` line in the
    ``text`` blocks, with the README's ``../shared`` paths."""
    out = []
    for block in _blocks("text"):
        parts = re.split(r"^\$ (.*)$", block, flags=re.M)
        out += list(zip(parts[1::2], parts[2::2], strict=True))
    return out


def _words(text: str) -> list[str]:
    return text.split()


def _run(command: str, event_bags: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    argv = shlex.split(command)
    assert argv[0] == "derain-ros", command
    argv = [a.replace("../shared/data/event_bags", str(event_bags)) for a in argv[1:]]
    argv = [str(tmp_path / a) if a.startswith("out/") else a for a in argv]
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_readme_shows_what_events_info_prints(event_bags: Path, tmp_path: Path,
                                                  capsys) -> None:
    shown = [(c, o) for c, o in _sessions() if c.startswith("derain-ros events-info")]
    assert len(shown) >= 2  # the DAVIS346 and the Prophesee recordings
    for command, expected in shown:
        code, printed = _run(command, event_bags, tmp_path, capsys)
        assert code == 0, printed
        lines = [ln for ln in expected.strip().splitlines() if ln.strip() != "..."]
        got = [_words(ln) for ln in printed.splitlines()]
        for line in lines:  # each shown line, in the command's own output
            assert _words(line) in got, (command, line, printed)


def test_the_readme_shows_what_replay_says_of_an_events_only_recording(
        event_bags: Path, tmp_path: Path, capsys) -> None:
    (command, expected), = [(c, o) for c, o in _sessions()
                            if c.startswith("derain-ros replay")]
    code, printed = _run(command, event_bags, tmp_path, capsys)
    status = re.search(r"^\$ echo \$\?\s*\n(\d+)", _section(), re.M)
    assert status is not None and code == int(status.group(1)) == 2
    message = " ".join(_words(expected.replace("../shared/data/event_bags", str(event_bags))))
    assert message in " ".join(_words(printed)), printed
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool", ["run", "replay", "eval"])
def test_every_command_line_of_the_walkthrough_parses(tool: str) -> None:
    """Each ``derain-ros run|replay|eval`` line of the walkthrough's ``sh`` blocks parses
    as that command parses it, and every ``-p name:=value`` is a valid node parameter."""
    lines = [" ".join(_words(block.replace("\\\n", " "))) for block in _blocks("sh")]
    commands = [ln for block in lines for ln in re.split(r"\s+(?=derain-ros )", block)
                if ln.startswith(f"derain-ros {tool} ")]
    assert commands, tool
    module = importlib.import_module(cli.COMMANDS[tool][0])
    for line in commands:
        argv = shlex.split(line.split(" #", 1)[0])[2:]
        parser = argparse.ArgumentParser(prog=f"derain-ros {tool}", exit_on_error=False)
        module.add_arguments(parser)
        args = parser.parse_args(argv)
        if tool != "run":
            continue
        values = {name: spec.default for name, spec in node.PARAMETERS.items()}
        for param in args.ros_args[args.ros_args.index("-p") if "-p" in args.ros_args else 0:]:
            if ":=" in param and param.split(":=")[0] in values:
                name, value = param.split(":=", 1)
                values[name] = _ros_value(value)
        assert values != {n: s.default for n, s in node.PARAMETERS.items()}, line
        node.NodeConfig.from_values(values)
        assert "image:=/dvs/image_raw" in node.ros_argv(args), line


def _ros_value(text: str) -> object:
    """A ``-p name:=value`` value as ROS reads it (enough for the README's)."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
