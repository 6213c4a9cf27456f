"""``derain-ros eval`` on real bags written here (no ROS): scores, JSON, report files,
and a clear refusal for the real event recordings (events, no frames).

The "replayed" bag is built directly with BagWriter: rainy frames, ground truth and a
``/derain_node/image`` output (the clean frame plus a little noise, so the output must
score better than the input) with log times 5 ms after the input's, as replay writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from derain_ros import cli
from derain_ros.bag import BagWriter, typestore
from derain_ros.conventions import GT_CLEAN_TOPIC, IMAGE_TOPIC
from derain_ros.eval.errors import EvalError, NoFramesError
from derain_ros.eval.evaluate import evaluate_bag
from derain_ros.eval.report import write_video

W, H, N = 64, 48, 8
T0 = 1_700_000_000_000_000_000
OUT_TOPIC = "/derain_node/image"


def _image_msg(t_ns: int, rgb: np.ndarray):
    types = typestore().types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9),
        frame_id="camera")
    return types["sensor_msgs/msg/Image"](header=header, height=H, width=W, encoding="rgb8",
                                          is_bigendian=0, step=W * 3,
                                          data=np.ascontiguousarray(rgb).reshape(-1))


def _write_bag(path: Path, *, with_output: bool = True, with_gt: bool = True) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    with BagWriter(path) as bag:
        topics = [IMAGE_TOPIC] + ([GT_CLEAN_TOPIC] if with_gt else []) + (
            [OUT_TOPIC] if with_output else [])
        for t in topics:
            bag.add_topic(t, "sensor_msgs/msg/Image")
        for k in range(N):
            t = T0 + k * 33_333_000
            clean = np.stack([(xx + 3 * k) % 64 * 4, yy * 5, np.full_like(xx, 90)], axis=2)
            clean = clean.astype(np.uint8)
            rainy = clean.copy()
            rainy[:, (7 * k) % W] = 255                     # a rain streak
            rainy[:, (7 * k + 20) % W] = 255
            out = np.clip(clean + rng.normal(0, 2, clean.shape), 0, 255).astype(np.uint8)
            bag.write(IMAGE_TOPIC, t, _image_msg(t, rainy))
            if with_gt:
                bag.write(GT_CLEAN_TOPIC, t, _image_msg(t, clean))
            if with_output:
                bag.write(OUT_TOPIC, t + 5_000_000, _image_msg(t, out))


def test_eval_scores_latency_and_report(tmp_path):
    bag = tmp_path / "replayed"
    _write_bag(bag)
    result = evaluate_bag(bag, report_dir=tmp_path / "report", progress=False)
    assert result.frames == N and result.has_ground_truth
    m = result.means
    assert m["psnr_output"] > m["psnr_input"] + 5
    assert m["ssim_output"] > m["ssim_input"]
    assert result.latency_ms["p50"] == pytest.approx(5.0, abs=1e-6)
    labels = [row["label"] for row in result.baselines]
    assert labels[0] == "rainy input" and labels[-1].startswith("network")
    assert any("median" in label for label in labels)
    head = result.headline()
    assert {"frames", "psnr_input", "psnr_output", "ssim_input", "ssim_output",
            "report"} <= set(head)
    report = tmp_path / "report"
    for name in ("report.md", "report.html", "per_frame.png", "latency.png",
                 "rainy_vs_derained.mp4"):
        assert (report / name).stat().st_size > 0, name
    assert len(list((report / "frames").glob("*.png"))) >= 2
    md = (report / "report.md").read_text()
    assert "temporal median" in md and "PSNR" in md and "frames/" in md


def test_eval_cli_json_without_ground_truth(tmp_path, capsys):
    bag = tmp_path / "replayed"
    _write_bag(bag, with_gt=False)
    assert cli.main(["eval", str(bag), "--json"]) == 0
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert head["frames"] == N and head["report"] is None
    assert "psnr_input" not in head and "ssim_output" not in head


def test_eval_without_node_output_says_replay_first(tmp_path):
    bag = tmp_path / "rainy"
    _write_bag(bag, with_output=False)
    with pytest.raises(EvalError, match="replay"):
        evaluate_bag(bag, progress=False)


def test_video_is_written(tmp_path):
    frames = [np.full((48, 64, 3), 40 * k, np.uint8) for k in range(4)]
    path = write_video(tmp_path / "v.mp4", frames, [frames[0], None, frames[2], frames[3]], 30)
    assert path.stat().st_size > 0


def test_real_event_recordings_have_no_frames(event_bags, capsys, tmp_path):
    for bag in sorted(p for p in event_bags.iterdir() if p.is_dir()):
        with pytest.raises(NoFramesError, match=r"events .* but no camera frames"):
            evaluate_bag(bag, progress=False)
        assert cli.main(["eval", str(bag), "--json"]) == 2
        assert cli.main(["replay", str(bag), "--out", str(tmp_path / "never"), "--json"]) == 2
        err = capsys.readouterr().err
        assert "no camera frames" in err and "Traceback" not in err
        assert not (tmp_path / "never").exists()
