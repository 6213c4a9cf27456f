"""``derain-ros events-info``: the reference figures through the CLI, and EventArray topics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from derain_ros.bag import BagWriter, typestore
from derain_ros.cli import main
from derain_ros.events import batch_to_dv_arrays, dv_arrays_to_batch
from derain_ros.records import EventBatch


def test_events_info_json_reference_figures(event_bags: Path, capsys) -> None:
    assert main(["events-info", str(event_bags / "dvxplorer_libcaer_640x480"), "--json"]) == 0
    (topic,) = json.loads(capsys.readouterr().out)["topics"]
    assert topic["messages"] == 201 and topic["encoding"] == "libcaer"
    assert (topic["width"], topic["height"]) == (640, 480)
    assert topic["sum_t_mod_2_64"] == 15762826572202229126
    assert (topic["sum_x"], topic["sum_y"], topic["sum_p"]) == (111651612, 82801007, 181908)
    assert topic["first_t_ns"] == 1702309120762236018


def test_events_info_text_and_dv_event_array(tmp_path: Path, capsys) -> None:
    store = typestore()
    Arr, Ev = store.types["dv_ros2_msgs/msg/EventArray"], store.types["dv_ros2_msgs/msg/Event"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    ev = EventBatch(np.array([1_500_000_000, 2_000_000_001]), np.array([1, 2]),
                    np.array([3, 4]), np.array([1, 0]), 8, 6)
    arrs = batch_to_dv_arrays(ev)
    msg = Arr(header=Header(stamp=Time(sec=1, nanosec=0), frame_id=""), height=6, width=8,
              events=[Ev(x=int(x), y=int(y), ts=Time(sec=int(s), nanosec=int(n)),
                         polarity=bool(p)) for x, y, s, n, p in zip(*arrs, strict=True)])
    with BagWriter(tmp_path / "dv") as bag:
        bag.add_topic("/events", "dv_ros2_msgs/msg/EventArray")
        bag.write("/events", 5, msg)
    assert main(["events-info", str(tmp_path / "dv")]) == 0
    text = capsys.readouterr().out
    assert "ON 1   OFF 1" in text and "8 x 6" in text
    back = dv_arrays_to_batch(*arrs, 8, 6)
    assert back.events.equals(ev) and back.dropped == 0
    dropped = dv_arrays_to_batch(*arrs, 2, 6)
    assert dropped.dropped == 1 and len(dropped.events) == 1
