"""``derain-ros eval`` without ground truth (issue #15, C4): NIQE is reported with what it
can and cannot tell, louder when a temporal median ranks best; every row's NIQE is over
the same frames with the input's computed once; unknown speed reads "n/a", not 0.0.

The bag (no ROS) holds rainy frames of a real photograph and a node output that is the
clean frame plus heavy noise, so the blurry temporal median wins by NIQE.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from skimage import data
from test_eval_bag import _image_msg

from derain_ros import cli
from derain_ros.bag import BagWriter
from derain_ros.conventions import IMAGE_TOPIC
from derain_ros.eval.evaluate import NIQE_NOTE, evaluate_bag, format_summary

H, W, N = 120, 208, 5
T0 = 1_700_000_000_000_000_000
OUT_TOPIC = "/derain_node/image"


def _write(path: Path) -> None:
    rng = np.random.default_rng(1)
    photo = data.astronaut()[100:100 + H, 150:150 + W + 4 * N]
    with BagWriter(path) as bag:
        for t in (IMAGE_TOPIC, OUT_TOPIC):
            bag.add_topic(t, "sensor_msgs/msg/Image")
        for k in range(N):
            t = T0 + k * 33_333_000
            clean = np.ascontiguousarray(photo[:, 4 * k:4 * k + W])
            rainy = clean.copy()
            for x in rng.integers(0, W, 12):
                rainy[:, x] = 230
            out = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
            # _image_msg writes the module's frame size: build the message by hand
            bag.write(IMAGE_TOPIC, t, _msg(t, rainy))
            bag.write(OUT_TOPIC, t + 5_000_000, _msg(t, out))


def _msg(t: int, rgb: np.ndarray):
    msg = _image_msg(t, np.zeros((48, 64, 3), np.uint8))
    msg.height, msg.width, msg.step = H, W, W * 3
    msg.data = np.ascontiguousarray(rgb).reshape(-1)
    return msg


@pytest.fixture
def bag(tmp_path) -> Path:
    path = tmp_path / "replayed"
    _write(path)
    return path


def test_niqe_without_ground_truth_says_what_it_means(bag, tmp_path):
    result = evaluate_bag(bag, report_dir=tmp_path / "report", progress=False)
    assert not result.has_ground_truth
    rows = {b["name"]: b for b in result.baselines}
    # the input's NIQE: computed once, the same frames as every other row
    assert rows["rainy"]["niqe"] == result.means["niqe_input"]
    assert rows["network"]["niqe"] == result.means["niqe_output"]
    assert all(math.isfinite(r["niqe"]) for r in rows.values())
    assert NIQE_NOTE in result.notes
    best = min((r for r in rows.values() if r["name"] != "rainy"), key=lambda r: r["niqe"])
    assert best["name"].startswith("median")  # the trap this note is about
    assert any("read this as a property of NIQE" in n for n in result.notes)
    summary = format_summary(result)
    assert "cannot tell rain removed" in summary and "NIQE by method" in summary
    md = (tmp_path / "report" / "report.md").read_text()
    assert "cannot tell rain removed" in md


def test_unknown_speed_reads_n_a(bag, tmp_path, capsys):
    result = evaluate_bag(bag, report_dir=tmp_path / "report", progress=False)
    assert result.fps is None  # no replay.json: no replay timing
    assert "fps" not in result.headline()
    md = (tmp_path / "report" / "report.md").read_text()
    lat_row = next(line for line in md.splitlines() if line.startswith("| 5.00"))
    assert lat_row.rstrip(" |").endswith("n/a") and "0.0 " not in lat_row
    assert "fps n/a" in format_summary(result)
    assert cli.main(["eval", str(bag), "--json"]) == 0
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "fps" not in head
