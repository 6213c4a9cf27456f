"""What every command promises (issue #15, C6): ``--version``; one exit-code convention
(README "Exit codes"); help texts without RST/Markdown markup; ``derain-train --help``
names its other commands; ``--device cuda`` without CUDA fails at once; a recording cut
off in the middle is refused with how to repair it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, ros_env
from derain_ros import cli
from derain_ros.bag import BagCorruptError, BagReader, BagWriter
from derain_ros.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from derain_training import cli as train_cli

MARKUP = re.compile(r"`|\*\*|:(ref|func|class|mod):|\\\\")


def _exit(capsys, fn, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        fn(argv)
    out = capsys.readouterr()
    return int(stop.value.code or 0), out.out + out.err


@pytest.mark.parametrize("name", ["", *cli.COMMANDS])
def test_version_and_clean_help(capsys, name):
    argv = [name] if name else []
    code, text = _exit(capsys, cli.main, [*argv, "--version"])
    assert code == 0 and re.fullmatch(r"derain-ros \d+\.\d+\.\d+\s*", text), text
    code, text = _exit(capsys, cli.main, [*argv, "--help"])
    assert code == 0 and "usage: derain-ros" in text
    assert not MARKUP.search(text), MARKUP.search(text)
    assert "130 interrupted" in text  # the exit codes, at the end of every help


def test_derain_train_version_and_help(capsys):
    for argv in (["--version"], ["export", "--version"]):
        code, text = _exit(capsys, train_cli.main, argv)
        assert code == 0 and re.fullmatch(r"derain-train \d+\.\d+\.\d+\s*", text), text
    code, text = _exit(capsys, train_cli.main, ["--help"])
    for command in ("export", "adapt"):
        assert code == 0 and re.search(rf"^\s+derain-train {command}\s", text, re.M), text
    assert not MARKUP.search(text)
    for command in ("export", "adapt"):
        code, text = _exit(capsys, train_cli.main, [command, "--help"])
        assert code == 0 and not MARKUP.search(text), text
        code, text = _exit(capsys, train_cli.main, [command, "--version"])
        assert code == 0 and re.fullmatch(r"derain-train \d+\.\d+\.\d+\s*", text), text


def test_exit_codes_are_documented():
    assert (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED) == (0, 1, 2, 130)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code, meaning in ((0, "ok"), (1, "fail"), (2, "usage"), (130, "interrupt")):
        assert re.search(rf"`{code}`[^\n]*{meaning}", section, re.I), (code, section)


@pytest.mark.parametrize("argv", [["no-such-command"], ["eval", "--no-such-option"]])
def test_usage_error_exit_code(argv):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == EXIT_USAGE


def _no_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def test_demo_device_cuda_without_cuda_fails_at_once(tmp_path, capsys):
    _no_cuda()
    start = time.monotonic()
    assert cli.main(["demo", "--device", "cuda", "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err
    assert time.monotonic() - start < 30
    assert not (tmp_path / "demo" / "rainy_bag").exists()  # nothing synthesised first


@pytest.mark.ros
def test_run_device_cuda_without_cuda_fails_at_once():
    _no_cuda()
    res = subprocess.run([sys.executable, "-m", "derain_ros.cli", "run", "--device", "cuda"],
                         env=ros_env(65), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 1
    assert "CUDA is not available" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def _small_bag(path: Path) -> Path:
    with BagWriter(path) as bag:
        bag.add_topic("/chatter", "std_msgs/msg/String")
        from derain_ros.bag import typestore

        msg_type = typestore().types["std_msgs/msg/String"]
        for k in range(2000):
            bag.write("/chatter", 1_000_000_000 + k * 1_000_000,
                      msg_type(data="x" * int(np.random.default_rng(k).integers(50, 500))))
    return path


def test_truncated_mcap_is_refused_with_the_repair(tmp_path, capsys):
    bag = _small_bag(tmp_path / "cut")
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.chmod(0o644)
    mcap.write_bytes(data[:len(data) // 2])  # the recording stopped half-way
    with pytest.raises(BagCorruptError, match="ros2 bag reindex"), BagReader(bag) as reader:
        list(reader.messages())
    assert cli.main(["events-info", str(bag)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "ros2 bag reindex" in err and "mcap recover" in err and "Traceback" not in err


def test_bag_without_metadata_is_refused_with_the_repair(tmp_path):
    bag = _small_bag(tmp_path / "nometa")
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagCorruptError, match=r"cut off.*ros2 bag reindex"):
        BagReader(bag).open()
