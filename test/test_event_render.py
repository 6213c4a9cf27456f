"""One event colour convention everywhere (issue #15, C3): ON blue, OFF red, on black.

The node's ``~/events_image`` (``engine.events_image``), the simulator's preview and
TensorBoard (``trainer.events_to_rgb``, from voxel grids) all draw through
:mod:`derain_ros.events.render`; the same events give the same colours in each.
"""

from __future__ import annotations

import numpy as np
import pytest

from derain_ros.events.render import render_events
from derain_ros.records import EventBatch

H, W = 6, 8
ON_PX, OFF_PX = (1, 2), (4, 5)  # (y, x)


def _events() -> EventBatch:
    # three ON events at ON_PX, three OFF at OFF_PX
    ys = np.array([ON_PX[0]] * 3 + [OFF_PX[0]] * 3, np.uint16)
    xs = np.array([ON_PX[1]] * 3 + [OFF_PX[1]] * 3, np.uint16)
    ps = np.array([1, 1, 1, 0, 0, 0], np.uint8)
    t = np.arange(6, dtype=np.int64) * 1000 + 1000
    return EventBatch(t, xs, ys, ps, W, H)


def _check(img: np.ndarray, full: float) -> None:
    """RGB H x W x 3: blue at the ON pixel, red at the OFF pixel, black elsewhere."""
    img = np.asarray(img, np.float32) / full
    on, off = img[ON_PX], img[OFF_PX]
    assert on[2] > 0.5 and on[0] == 0 and on[1] == 0, on
    assert off[0] > 0.5 and off[1] == 0 and off[2] == 0, off
    rest = img.copy()
    rest[ON_PX] = 0
    rest[OFF_PX] = 0
    assert not rest.any()  # black background


def test_shared_renderer():
    img = render_events(_events())
    assert img.dtype == np.float32 and img.shape == (H, W, 3)
    _check(img, 1.0)
    big = render_events(_events(), 2 * H, 2 * W)
    assert big.shape == (2 * H, 2 * W, 3)
    np.testing.assert_array_equal(big[::2, ::2], img)


def test_node_events_image_uses_the_convention():
    from derain_ros.engine import events_image

    _check(events_image(_events(), H, W), 1.0)


def test_simulator_preview_uses_the_convention():
    from derain_ros.sim.preview import event_image

    img = event_image(_events())
    assert img.dtype == np.uint8
    _check(img, 255.0)


def test_tensorboard_uses_the_convention():
    torch = pytest.importorskip("torch")
    from derain_ros.events.voxel import voxel_grid
    from derain_training.trainer import events_to_rgb

    grid = voxel_grid(_events(), 0, 10_000, 3)  # [bins, H, W]
    rgb = events_to_rgb(torch.as_tensor(np.asarray(grid))[None])  # [3, H, W]
    assert tuple(rgb.shape) == (3, H, W)
    _check(rgb.permute(1, 2, 0).numpy(), 1.0)
