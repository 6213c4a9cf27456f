"""Ctrl-C and SIGTERM stop every long command cleanly (issue #15, C5): no traceback,
exit 130 (SIGINT) / 143 (SIGTERM), incomplete outputs removed or marked, and the demo
never leaves its node process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_eval_bag import _write_bag

from conftest import ROOT, ros_env
from derain_ros import cli
from derain_ros.eval import report
from derain_ros.exits import EXIT_INTERRUPTED

DOMAIN_ID = 64


@pytest.fixture
def ctrl_c_in_this_process():
    """Ctrl-C raises KeyboardInterrupt here, and children start with SIGINT's default.

    Why: a shell starts background jobs (``cmd &``, nohup) with SIGINT ignored, children
    inherit that, and Python then never turns Ctrl-C into KeyboardInterrupt; a terminal's
    Ctrl-C reaches a foreground program with the default disposition, which is what
    these tests are about. (A handler resets to the default across exec.)
    """
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append((int(entry.name), cmdline))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_stops_its_node_on_a_signal(tmp_path, ctrl_c_in_this_process, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "derain_ros.cli", "demo", "--seconds", "0.3", "--out",
         str(tmp_path / "demo"), "--device", "cpu"], env=ros_env(DOMAIN_ID),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    node = None
    try:
        deadline = time.monotonic() + 180
        while node is None and time.monotonic() < deadline and proc.poll() is None:
            node = next((pid for pid, cmd in _children(proc.pid) if "derain_ros.node" in cmd),
                        None)
            time.sleep(0.2)
        assert node is not None, "the demo never started its node"
        time.sleep(1.0)  # the node is starting or replaying
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, (proc.returncode, out[-2000:], err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    assert "interrupted" in err
    for _ in range(50):
        if not _alive(node):
            break
        time.sleep(0.1)
    assert not _alive(node), "the node process outlived the demo"
    assert not (tmp_path / "demo" / "derained_bag").exists()  # incomplete: removed
    assert not list((tmp_path / "demo").glob(".*partial*"))


@pytest.mark.slow
def test_synth_ctrl_c_leaves_no_half_bag(tmp_path, ctrl_c_in_this_process):
    out = tmp_path / "rainy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "derain_ros.cli", "synth", str(out), "--duration", "20",
         "--sensor", "davis346"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    try:
        time.sleep(6.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_eval_interrupted_marks_the_report(tmp_path, monkeypatch, capsys):
    bag = tmp_path / "replayed"
    _write_bag(bag)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_plots", stop)
    folder = tmp_path / "report"
    assert cli.main(["eval", str(bag), "--report", str(folder)]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert (folder / report.INCOMPLETE).is_file()
    assert not (folder / "report.md").exists() and not (folder / "report.html").exists()
    monkeypatch.undo()
    assert cli.main(["eval", str(bag), "--report", str(folder)]) == 0
    assert not (folder / report.INCOMPLETE).exists() and (folder / "report.html").is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_derain_train_interrupted(monkeypatch, capsys, ctrl_c_in_this_process, sig):
    from derain_training import cli as train_cli

    def train(args):
        os.kill(os.getpid(), sig)  # as from the terminal or a job scheduler
        time.sleep(10)
        raise AssertionError("the signal did not interrupt training")

    monkeypatch.setattr(train_cli, "run_train", train)
    assert train_cli.main(["--bags", "x.mcap"]) == 128 + sig
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or sig == signal.SIGINT
