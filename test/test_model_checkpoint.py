"""Checkpoints: bit-exact round trips, and a precise error for every kind of mismatch."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from derain_ros.errors import CheckpointError
from derain_ros.model import (
    CheckpointConfigMismatchError,
    CheckpointCorruptError,
    CheckpointKeyMismatchError,
    CheckpointNotFoundError,
    CheckpointShapeMismatchError,
    create_model,
    default_checkpoint_path,
    list_models,
    load_checkpoint,
    load_weights,
    read_checkpoint_info,
    registry,
    save_checkpoint,
)
from derain_ros.model.checkpoint import write_checkpoint

PROVENANCE = {"data": "synthetic heavy rain", "steps": 12, "psnr_db": 31.5}


def _model(name: str = "derain_tiny", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **overrides)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A saved derain_tiny checkpoint (stem path) and the network it came from."""
    model = _model()
    stem = tmp_path_factory.mktemp("ckpt") / "derain_tiny"
    save_checkpoint(model, stem, PROVENANCE)
    return stem, model


@pytest.mark.parametrize("name", list_models())
def test_round_trip_bit_exact(tmp_path, name):
    model = _model(name, seed=3)
    path = save_checkpoint(model, tmp_path / name, PROVENANCE)
    assert path == tmp_path / f"{name}.safetensors"
    assert (tmp_path / f"{name}.json").is_file()
    loaded = load_checkpoint(path, expected=name)
    assert loaded.config == model.config
    assert not loaded.training
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_json_describes_the_checkpoint(tiny_ckpt):
    stem, model = tiny_ckpt
    info = read_checkpoint_info(stem.with_suffix(".json"))
    assert info["model"] == "derain_tiny"
    assert info["event_bins"] == model.config.event_bins == 10
    assert info["in_chans"] == 3 and info["use_events"] is True
    assert info["input_contract"] == model.input_contract.to_dict()
    assert info["input_contract"]["arrangement"] == "causal"
    assert info["provenance"] == PROVENANCE
    assert info["num_parameters"] == model.num_parameters()
    assert info["config"]["widths"] == list(model.config.widths)


def test_any_path_form_loads(tiny_ckpt):
    stem, _ = tiny_ckpt
    for path in (stem, stem.with_suffix(".json"), stem.with_suffix(".safetensors"), str(stem)):
        assert load_checkpoint(path).config.name == "derain_tiny"


def test_load_weights_into_existing(tiny_ckpt):
    stem, model = tiny_ckpt
    other = _model(seed=1)
    info = load_weights(other, stem)
    assert info["provenance"] == PROVENANCE
    assert _same_weights(model, other)


def test_wrapper_prefixes_stripped(tmp_path):
    """DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes never reach the file."""
    model = _model()

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    path = save_checkpoint(Wrapper(model), tmp_path / "wrapped", {})
    assert load_checkpoint(path).config.name == "derain_tiny"
    prefixed = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    write_checkpoint(prefixed, model.config, tmp_path / "prefixed")
    loaded = load_checkpoint(tmp_path / "prefixed")
    assert _same_weights(model, loaded)


def test_other_size_named(tiny_ckpt):
    stem, _ = tiny_ckpt
    with pytest.raises(CheckpointConfigMismatchError, match="widths") as info:
        load_checkpoint(stem, expected="derain_base")
    assert "widths" in info.value.fields
    with pytest.raises(CheckpointConfigMismatchError, match="use_events"):
        load_weights(_model("derain_tiny_frames"), stem)
    with pytest.raises(CheckpointConfigMismatchError, match="in_chans"):
        load_weights(_model(in_chans=1), stem)


def test_renamed_key_named(tmp_path):
    model = _model()
    state = dict(model.state_dict())
    state["frame_head.0.weight_renamed"] = state.pop("frame_head.0.weight")
    write_checkpoint(state, model.config, tmp_path / "renamed")
    with pytest.raises(CheckpointKeyMismatchError, match=r"frame_head\.0\.weight") as info:
        load_checkpoint(tmp_path / "renamed")
    assert info.value.missing == ["frame_head.0.weight"]
    assert info.value.unexpected == ["frame_head.0.weight_renamed"]


def test_wrong_shape_named(tmp_path):
    model = _model()
    state = dict(model.state_dict())
    key = "rain_decoder.out.weight"
    state[key] = torch.zeros(5, *state[key].shape[1:])
    write_checkpoint(state, model.config, tmp_path / "shape")
    with pytest.raises(CheckpointShapeMismatchError, match=r"rain_decoder\.out\.weight: file \[5,"):
        load_checkpoint(tmp_path / "shape")


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_weights(tmp_path, how):
    path = save_checkpoint(_model(), tmp_path / "bad", {})
    blob = bytearray(path.read_bytes())
    if how == "flip":
        blob[len(blob) // 2] ^= 0xFF
        match = "SHA-256"
    else:
        blob = blob[: len(blob) // 2]
        match = "truncated"
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointCorruptError, match=match):
        load_checkpoint(path)


def test_damaged_without_recorded_hash(tmp_path):
    """A hand-written JSON without size/hash still gets a clear error from the parser."""
    path = save_checkpoint(_model(), tmp_path / "nohash", {})
    json_path = path.with_suffix(".json")
    info = json.loads(json_path.read_text())
    del info["weights_sha256"], info["weights_bytes"]
    json_path.write_text(json.dumps(info))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointCorruptError, match="safetensors"):
        load_checkpoint(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"nothing\.json"):
        load_checkpoint(tmp_path / "nothing")
    path = save_checkpoint(_model(), tmp_path / "half", {})
    path.unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"half\.safetensors"):
        load_checkpoint(tmp_path / "half")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="JSON"):
        load_checkpoint(tmp_path / "junk")
    (tmp_path / "alien.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointCorruptError, match="not a derain_ros checkpoint"):
        load_checkpoint(tmp_path / "alien")


def test_unknown_config_field_named(tmp_path):
    path = save_checkpoint(_model(), tmp_path / "future", {})
    json_path = path.with_suffix(".json")
    info = json.loads(json_path.read_text())
    info["config"]["attention_heads"] = 4
    json_path.write_text(json.dumps(info))
    with pytest.raises(CheckpointConfigMismatchError, match="attention_heads"):
        load_checkpoint(path)


def test_pretrained_default_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="derain_tiny"):
        create_model("derain_tiny", pretrained=True)
    assert default_checkpoint_path("derain_tiny") == tmp_path / "derain_tiny.safetensors"
    assert default_checkpoint_path("derain_tiny", in_chans=1).name == "derain_tiny_gray.safetensors"
    model = _model(seed=5)
    save_checkpoint(model, default_checkpoint_path("derain_tiny"), {})
    loaded = create_model("derain_tiny", pretrained=True)
    assert not loaded.training
    assert _same_weights(model, loaded)
    gray = _model(in_chans=1)
    save_checkpoint(gray, default_checkpoint_path("derain_tiny", in_chans=1), {})
    assert create_model("derain_tiny", pretrained=True, in_chans=1).config.in_chans == 1


def test_errors_share_the_root():
    for cls in (CheckpointConfigMismatchError, CheckpointCorruptError, CheckpointKeyMismatchError,
                CheckpointNotFoundError, CheckpointShapeMismatchError):
        assert issubclass(cls, CheckpointError)
