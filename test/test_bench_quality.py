"""bench/quality.py (issue #13): the quick mode end to end, as a subprocess.

Weights are randomly initialised checkpoints in a temporary folder (the shipped ones may
be retrained at any time; this checks the benchmark's plumbing, not their quality).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quality_quick_mode(tmp_path: Path) -> None:
    from derain_ros.model import create_model, save_checkpoint
    from derain_ros.sim.families import RAIN_FAMILIES

    first, second = list(RAIN_FAMILIES)[:2]
    weights, loo = tmp_path / "weights", tmp_path / "loo"
    torch.manual_seed(0)
    save_checkpoint(create_model("derain_tiny"), weights / "derain_tiny")
    save_checkpoint(create_model("derain_tiny_frames"), weights / "derain_tiny_frames")
    save_checkpoint(create_model("derain_tiny"), loo / f"loo_{first}")
    env = {**os.environ, "DERAIN_BENCH_QUICK": "1", "DERAIN_BENCH_WEIGHTS": str(weights),
           "DERAIN_BENCH_LOO": str(loo), "DERAIN_BENCH_DATA": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"input", "median", "tiny_frames", "tiny", "base_frames", "base",
                           "families", "leave_one_out", "dry", "finetune_gain_db"}
    for row in ("input", "median", "tiny", "tiny_frames"):
        assert set(result[row]) == {"psnr", "ssim"}
    assert result["base"] is None and result["base_frames"] is None
    assert set(result["families"]) == {first, second}
    assert set(result["families"][first]) == {"input", "tiny", "base"}
    assert result["families"][first]["tiny"] is not None
    assert result["leave_one_out"][second] is None
    assert set(result["leave_one_out"][first]) == {"input", "tiny"}
    assert result["leave_one_out"][first]["tiny"] is not None
    assert set(result["dry"]) == {"input", "tiny", "base"}
    assert result["dry"]["input"] == 100.0  # the cap: a dry input is its clean frame
    assert result["finetune_gain_db"] is None
    assert "| family | input dB |" in proc.stdout
    assert "| held-out family |" in proc.stdout
