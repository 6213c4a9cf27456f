"""ClipDataset: shapes, the shared sync/voxel path, the disk cache, bad bags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_bags import FRAMES, HEIGHT, training_bags

from derain_ros.conventions import GT_CLEAN_TOPIC
from derain_ros.errors import BagError, ConfigError
from derain_ros.events.voxel import voxel_grid
from derain_ros.model import InputContract
from derain_ros.sync import windows_from_bag
from derain_training import data as data_mod
from derain_training.config import DataConfig
from derain_training.data import ClipDataset

#: Input contracts of the networks these tests feed.
EVENTS_10 = InputContract(event_bins=10)
EVENTS_5 = InputContract(event_bins=5)
EVENTS_4 = InputContract(event_bins=4)
FRAMES_ONLY_4 = InputContract(event_bins=4, use_events=False)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    return training_bags(tmp_path_factory)  # simulated once per session


def _cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), crop=kw.pop("crop", 32), **kw)


# Clip 1 of bag a covers frames 1, 2, 3 and windows 2, 3. Per arrangement, the window
# indices of the 3 network frames, of the 2 voxel grids (a negative index: the grid of
# that window mirrored in time) and of the target, as the node's engine builds them.
ARRANGED = {
    "centre": ((1, 2, 3), (2, 3), 2),
    "causal": ((2, 3, 2), (3, -3), 3),
}


@pytest.mark.parametrize("arrangement", sorted(ARRANGED))
def test_samples_have_the_right_shapes_and_come_from_sync_and_voxel(bags, tmp_path,
                                                                    arrangement) -> None:
    contract = InputContract(event_bins=10, arrangement=arrangement)
    ds = ClipDataset([bags["a"], bags["b"]], _cfg(tmp_path), contract=contract,
                     require_truth=True, progress=False)
    assert len(ds) == (FRAMES["a"] - 2) + (FRAMES["b"] - 2)
    s = ds[0]
    assert s["frames"].shape == (3, 3, 32, 32) and s["frames"].dtype == torch.float32
    assert s["events"].shape == (2, 10, 32, 32)
    assert s["clean"].shape == s["rain"].shape == (3, 32, 32)
    # Full clip 1 of bag a equals the node's path: windows_from_bag + voxel_grid.
    frame_ids, voxel_ids, target = ARRANGED[arrangement]
    windows = list(windows_from_bag(bags["a"]))
    clip = ds.full_clip(1)
    for j, k in enumerate(frame_ids):
        img = windows[k].image.to_network().transpose(2, 0, 1)
        np.testing.assert_allclose(clip["frames"][0, j].numpy(), img, atol=1e-3)
    for j, k in enumerate(voxel_ids):
        w = windows[abs(k)]
        want = voxel_grid(w.events, w.t0_ns, w.t_ns, 10).numpy()
        if k < 0:
            want = -want[::-1]
        np.testing.assert_allclose(clip["events"][0, j].numpy(), want, atol=2e-3, rtol=1e-3)
    clean = windows[target].extras[GT_CLEAN_TOPIC].to_network().transpose(2, 0, 1)
    np.testing.assert_allclose(clip["clean"][0].numpy(), clean, atol=1e-3)
    assert clip["events"].abs().sum() > 0


def test_second_pass_hits_the_cache_without_decoding(bags, tmp_path, monkeypatch) -> None:
    cfg = _cfg(tmp_path)
    first = ClipDataset([bags["a"]], cfg, contract=EVENTS_10, progress=False)
    assert first.decoded == 1

    def no_decode(*args, **kwargs):
        raise AssertionError("the bag was decoded again")

    monkeypatch.setattr(data_mod._sync, "windows_from_bag", no_decode)
    second = ClipDataset([bags["a"]], cfg, contract=EVENTS_10, progress=False)
    assert second.decoded == 0 and all(b.from_cache for b in second.bags)
    for key in ("frames", "events"):
        assert torch.equal(first[2][key], second[2][key])
    # Another input contract is another cache entry (so it decodes, never reuses).
    with pytest.raises(AssertionError, match="decoded again"):
        ClipDataset([bags["a"]], cfg, contract=EVENTS_5, progress=False)
    with pytest.raises(AssertionError, match="decoded again"):
        ClipDataset([bags["a"]], cfg, contract=EVENTS_10.replace(voxel_normalize="meanstd"),
                    progress=False)


def test_augmentation_is_seeded_by_epoch_and_index(bags, tmp_path) -> None:
    ds = ClipDataset([bags["a"]], _cfg(tmp_path, hflip=True, vflip=True), contract=EVENTS_4,
                     progress=False)
    a = ds[1]["frames"]
    assert torch.equal(a, ds[1]["frames"])
    ds.set_epoch(1)
    others = [ds[1]["frames"]]
    ds.set_epoch(2)
    others.append(ds[1]["frames"])
    assert any(not torch.equal(a, o) for o in others)


def test_bag_without_events_is_refused_by_event_models(bags, tmp_path) -> None:
    with pytest.raises(BagError, match=r"no events.*_frames"):
        ClipDataset([bags["no_events"]], _cfg(tmp_path), contract=EVENTS_4,
                    progress=False)
    ds = ClipDataset([bags["no_events"]], _cfg(tmp_path), contract=FRAMES_ONLY_4,
                     progress=False)
    assert "events" not in ds[0]


def test_bag_without_frames_and_too_small_frames_are_clear_errors(bags, tmp_path) -> None:
    with pytest.raises(BagError, match="no frames"):
        ClipDataset([bags["no_frames"]], _cfg(tmp_path), contract=EVENTS_4,
                    progress=False)
    # Events of another sensor size are resized to the frame, exactly as the node does.
    ds = ClipDataset([bags["mismatch"]], _cfg(tmp_path), contract=EVENTS_4, progress=False)
    assert ds[0]["events"].shape[-2:] == (32, 32)
    assert ds.full_clip(0)["events"].abs().sum() > 0
    with pytest.raises(BagError, match=f"smaller than the {HEIGHT + 1} px crop"):
        ClipDataset([bags["a"]], _cfg(tmp_path, crop=HEIGHT + 1), contract=EVENTS_4,
                    progress=False)
    with pytest.raises(BagError, match="not found"):
        ClipDataset([tmp_path / "missing.mcap"], _cfg(tmp_path), contract=EVENTS_4,
                    progress=False)


def test_unpaired_clean_frames_come_from_other_bags(bags, tmp_path) -> None:
    ds = ClipDataset([bags["a"]], _cfg(tmp_path), contract=EVENTS_4,
                     clean_bags=[bags["b"]], progress=False)
    assert ds[0]["unpaired"].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="other recordings"):
        ClipDataset([bags["a"]], _cfg(tmp_path), contract=EVENTS_4,
                    clean_bags=[bags["a"]], progress=False)
