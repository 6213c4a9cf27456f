"""bench/train_families.py (issue #13): what it installs, and what a model card says.

The training itself is the benchmark's long part (bench/, minutes to hours); these check
the bookkeeping around it on hand-made run folders: which jobs ``--install`` copies where,
and that a staged model's card adds up every stage it started from.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_families",
                                                  ROOT / "bench" / "train_families.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_families"] = module
    spec.loader.exec_module(module)
    return module


def _prov(**kw: object) -> dict:
    base = {"steps": 100, "seconds": 60.0, "device": "cpu", "lr": 1e-3, "crop": 96,
            "batch": 8, "clips": 10, "excluded_family": None, "init": None}
    return {**base, **kw}


def _run_folder(tmp_path: Path, jobs: dict[str, dict]) -> Path:
    out = tmp_path / "run"
    (out / "weights").mkdir(parents=True)
    (out / "data").mkdir()
    clips = [{"name": f"c{i}", "source": "skimage:camera", "family": fam, "intensity": None,
              "sensor_model": "random", "width": 240, "height": 180, "frames": 10,
              "seed": i, "color": True, "encoding": "libcaer"}
             for i, fam in enumerate(["particles", "veil", "none"])]
    (out / "data" / "manifest.json").write_text(json.dumps({"clips": clips, "failed": {}}))
    for job, prov in jobs.items():
        (out / "weights" / f"{job}.json").write_text(json.dumps(
            {"provenance": prov, "input_contract": {"event_bins": 5}}))
        (out / "weights" / f"{job}.safetensors").write_bytes(b"w")
    return out


def test_install_plan_chooses_jobs_and_destinations(tf: ModuleType, tmp_path: Path) -> None:
    out = _run_folder(tmp_path, {"tiny": _prov(), "tiny3": _prov(),
                                 "loo_veil": _prov(excluded_family="veil")})
    everything = tf.install_plan(out, None)
    assert everything["tiny"] == tf.WEIGHTS / "derain_tiny"
    assert everything["tiny3"] == tf.WEIGHTS / "derain_tiny3"
    assert everything["loo_veil"] == tf.LOO_WEIGHTS / "loo_veil"
    chosen = tf.install_plan(out, "tiny3=derain_tiny,loo")
    assert chosen == {"tiny3": tf.WEIGHTS / "derain_tiny", "loo_veil": tf.LOO_WEIGHTS / "loo_veil"}
    with pytest.raises(SystemExit, match=r"no trained job 'tiny9'.*tiny, tiny3"):
        tf.install_plan(out, "tiny9=derain_tiny")


def test_lineage_and_card_add_up_every_stage(tf: ModuleType, tmp_path: Path) -> None:
    out = _run_folder(tmp_path, {})
    first = out / "weights" / "tiny.json"
    first.write_text(json.dumps({"provenance": _prov(job="tiny", steps=1000, seconds=600.0)}))
    second = out / "weights" / "tiny2.json"
    second.write_text(json.dumps({"provenance": _prov(
        job="tiny2", steps=500, seconds=300.0, init="tiny.safetensors",
        lineage=tf.lineage(first.with_suffix(".safetensors")))}))
    chain = tf.lineage(second.with_suffix(".safetensors"))
    assert [stage["job"] for stage in chain] == ["tiny", "tiny2"]
    assert tf.lineage(None) == []
    info = {"provenance": _prov(job="tiny3", steps=200, seconds=120.0, init="tiny2.safetensors",
                                lineage=chain, command="bench/train_families.py --train-one tiny3"),
            "input_contract": {"event_bins": 5}}
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    card = tf.model_card("derain_tiny", info, manifest)
    assert "All stages: 1700 steps, 17.0 min" in card
    assert "stage 1: tiny.safetensors: 1000 steps" in card
    assert "`python bench/train_families.py --train-one tiny3`" in card
    assert "skimage:camera" in card
