"""``derain-ros demo``: refuses ROS without LOCALHOST, always stops its node, and runs
end to end (a short clip) over loopback DDS."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from conftest import ROOT, ros_env
from derain_ros import demo

DOMAIN_ID = 61


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    ns = parser.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_demo_refuses_without_localhost(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    assert demo.run(_args(out=tmp_path / "demo")) == 2
    assert "LOCALHOST" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_stop_node_ends_a_process_that_ignores_sigint():
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.5)
    start = time.monotonic()
    demo._stop_node(proc)
    assert proc.poll() is not None
    assert time.monotonic() - start < 20


@pytest.mark.ros
@pytest.mark.slow
def test_demo_end_to_end_short_clip(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "derain_ros.cli", "demo", "--seconds", "0.3",
                          "--out", str(out), "--device", "cpu"], env=ros_env(DOMAIN_ID),
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "PSNR" in res.stdout and "fps" in res.stdout and "latency p50" in res.stdout
    report = out / "report"
    for name in ("report.html", "report.md", "rainy_vs_derained.mp4", "per_frame.png"):
        assert (report / name).stat().st_size > 0
    assert (out / "derained_bag" / "replay.json").is_file()
