"""The training YAML: strict keys, types, the shipped file equals the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from derain_ros.errors import ConfigError
from derain_training.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_yaml_is_the_defaults() -> None:
    assert load_config(ROOT / "config" / "train.yaml") == TrainConfig()


def test_unknown_keys_are_named(tmp_path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("mode: supervised\nlossez: {}\ndata:\n  crop: 64\n  cropp: 32\n")
    with pytest.raises(ConfigError, match=r"lossez"):
        load_config(p)
    p.write_text("losses:\n  unsupervised:\n    nlcll: 1.0\n")
    with pytest.raises(ConfigError, match=r"losses\.unsupervised\.nlcll"):
        load_config(p)


def test_types_and_values_are_checked(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 2e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(p).optim.lr == pytest.approx(2e-4)
    p.write_text("run:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"run\.steps"):
        load_config(p)
    with pytest.raises(ConfigError, match="mode must be one of"):
        load_config(None, mode="semi")
    with pytest.raises(ConfigError, match="arrangement"):
        load_config(None, **{"data.arrangement": "sideways"})
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_overrides_apply_on_top_of_the_file(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("run:\n  steps: 50\n")
    cfg = load_config(p, **{"run.steps": 7, "mode": "online", "model.name": None})
    assert (cfg.run.steps, cfg.mode, cfg.model.name) == (7, "online", "derain_tiny")
