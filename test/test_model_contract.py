"""The input contract: validated enums, carried by checkpoints, one migration for old ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from derain_ros.errors import CheckpointError, ConfigError
from derain_ros.model import (
    InputBuilder,
    InputContract,
    create_model,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from derain_ros.model.contract import migrate_checkpoint_info
from derain_ros.records import EventBatch


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("arrangement", "sideways", "causal, centre"),
    ("voxel_normalize", "minmax", "none, meanstd"),
    ("precision", "int8", "float16, float32"),
    ("polarity", "on_only", "signed"),
    ("frame_range", "0-255", "unit"),
    ("voxel", "timesurface", "bilinear"),
])
def test_an_unknown_enum_value_is_an_error_naming_the_allowed_ones(field, value, allowed):
    with pytest.raises(ConfigError, match=f"{field} '{value}'; allowed: {allowed}"):
        InputContract(**{field: value})
    with pytest.raises(ConfigError, match=allowed):
        InputContract.from_dict({**InputContract().to_dict(), field: value})


def test_from_dict_refuses_unknown_and_missing_fields():
    data = InputContract().to_dict()
    with pytest.raises(ConfigError, match="unknown \\['colour'\\]"):
        InputContract.from_dict({**data, "colour": "rgb"})
    data.pop("arrangement")
    with pytest.raises(ConfigError, match="missing \\['arrangement'\\]"):
        InputContract.from_dict(data)


def test_checkpoint_carries_the_contract_and_a_contradicting_one_is_refused(tmp_path):
    net = create_model("derain_tiny_frames", in_chans=1)
    net.input_contract = net.input_contract.replace(arrangement="centre",
                                                    voxel_normalize="meanstd")
    save_checkpoint(net, tmp_path / "n")
    loaded = load_checkpoint(tmp_path / "n")
    assert loaded.input_contract == net.input_contract
    assert not loaded.input_contract.use_events and loaded.input_contract.frame_channels == 1
    # A contract that contradicts its network (edited JSON) does not load.
    info = json.loads((tmp_path / "n.json").read_text())
    info["input_contract"]["use_events"] = True
    (tmp_path / "n.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="use_events=True vs network use_events=False"):
        load_checkpoint(tmp_path / "n")


def test_a_format_1_checkpoint_migrates_once_explicitly(tmp_path):
    net = create_model("derain_tiny")
    save_checkpoint(net, tmp_path / "old", {"arrangement": "centre"})
    info = json.loads((tmp_path / "old.json").read_text())
    # Rewrite it as the layout before contracts: prose field, no contract.
    info["format_version"] = 1
    info.pop("input_contract")
    info["config"]["voxel_normalization"] = "derain_ros.events.voxel; v/sqrt(1+|v|) inside"
    (tmp_path / "old.json").write_text(json.dumps(info))
    migrated = read_checkpoint_info(tmp_path / "old")
    assert migrated["input_contract_migrated"] is True
    assert "voxel_normalization" not in migrated["config"]
    contract = InputContract.from_dict(migrated["input_contract"])
    assert contract.arrangement == "centre" and contract.voxel_normalize == "none"
    assert contract.precision == "float16"
    assert load_checkpoint(tmp_path / "old").input_contract == contract
    # Migration is idempotent and leaves its input alone.
    assert migrate_checkpoint_info(migrated) == migrated
    assert "input_contract" not in info


def test_the_shipped_checkpoints_carry_a_contract():
    from derain_ros.model.registry import WEIGHTS_DIR

    jsons = sorted(WEIGHTS_DIR.glob("*.json"))
    assert jsons, "no shipped weights"
    for path in jsons:
        raw = json.loads(path.read_text())
        assert raw["format_version"] == 2 and "input_contract" in raw, path.name
        InputContract.from_dict(raw["input_contract"])


def test_builder_converts_channels_rounds_and_fills_missing_events():
    rng = np.random.default_rng(0)
    rgb = rng.random((6, 8, 3), dtype=np.float32)
    grey = InputBuilder(InputContract(frame_channels=1, event_bins=3))
    frame = grey.frame(rgb)
    assert frame.shape == (1, 6, 8) and frame.dtype == np.float32
    want = rgb.mean(axis=2, dtype=np.float32).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(frame[0], want)
    exact = InputBuilder(InputContract(precision="float32"))
    np.testing.assert_array_equal(exact.frame(rgb[..., :1])[0], rgb[..., 0])  # grey -> RGB
    assert exact.frame(rgb[..., :1]).shape == (3, 6, 8)
    assert np.all(grey.voxel(None, 0, 10, 6, 8) == 0) and grey.voxel(None, 0, 10, 6, 8).shape == (
        3, 6, 8)
    assert InputBuilder(InputContract(use_events=False)).voxel(None, 0, 1, 6, 8) is None
    # Events of a 4x3 sensor are resized to the 8x6 frame.
    ev = EventBatch(np.array([5, 6], np.int64), np.array([1, 2]), np.array([1, 1]),
                    np.array([1, 0]), 4, 3)
    assert grey.voxel(ev, 0, 10, 6, 8).shape == (3, 6, 8)


def test_clip_at_follows_the_arrangement():
    frames = [torch.full((1, 2, 2), float(i)) for i in range(3)]
    voxels = [torch.full((2, 2, 2), float(i)) for i in range(3)]
    causal = InputBuilder(InputContract(frame_channels=1, event_bins=2))
    f, v = causal.clip_at(frames, voxels, 2)
    assert [int(x[0, 0, 0]) for x in f] == [1, 2, 1] and int(v[0, 0, 0, 0]) == 2
    f, _ = causal.clip_at(frames, voxels, 0)  # no previous window: the target stands in
    assert [int(x[0, 0, 0]) for x in f] == [0, 0, 0]
    centre = InputBuilder(InputContract(frame_channels=1, event_bins=2, arrangement="centre"))
    f, v = centre.clip_at(frames, voxels, 1)
    assert [int(x[0, 0, 0]) for x in f] == [0, 1, 2]
    assert [int(x[0, 0, 0]) for x in v] == [1, 2]
    with pytest.raises(ConfigError, match="needs the window after"):
        centre.clip_at(frames, voxels, 2)
