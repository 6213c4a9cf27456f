"""bench/gpu_check.py runs end to end (``--smoke``: a tiny size, 2 iterations, any device)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke(tmp_path):
    env = {"OUT": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written == last
    assert last["heavy_modules"] == []  # derain_ros.model pulls in no rosbags/rclpy/numba
    rows = {r["variant"]: r for r in last["rows"]}
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["fps"] > 0
    assert rows["fp32"]["max_abs_diff"] == 0.0
    assert rows["bf16_cl"]["status"] == "ok" and rows["bf16_cl"]["max_abs_diff"] < 0.1
    assert rows["compile_bf16_cl"]["status"].startswith("skipped")
    assert all(r["status"] == "ok" or r["status"].startswith("skipped") for r in last["rows"])
