"""The bag layer: the real recordings (sqlite3, mcap, empty storage identifier), atomic
writing in both storages, QoS in the metadata, and clear errors for broken bags."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from derain_ros.bag import (
    BagCorruptError,
    BagExistsError,
    BagNotFoundError,
    BagReader,
    BagTypeError,
    BagWriter,
    typestore,
)
from derain_ros.errors import BagError

TOPIC = "/event_camera/events"
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"
REAL_HASH = "RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa"


def test_typestore_has_project_types_with_the_real_hash() -> None:
    store = typestore()
    for name in ("event_camera_msgs/msg/EventPacket", "dv_ros2_msgs/msg/Event",
                 "dv_ros2_msgs/msg/EventArray", "sensor_msgs/msg/Image"):
        assert name in store.fielddefs
    assert store.hash_rihs01(EVENT_PACKET) == REAL_HASH


@pytest.mark.parametrize(("name", "count", "encoding"), [
    ("davis346_libcaer_cmp", 100, "libcaer_cmp"),  # mcap, empty storage identifier
    ("dvxplorer_libcaer_640x480", 201, "libcaer"),
    ("prophesee_evt3_1280x720_trigger", 105, "evt3"),
])
def test_reads_real_bags(event_bags: Path, name: str, count: int, encoding: str) -> None:
    with BagReader(event_bags / name) as bag:
        assert bag.topics == {TOPIC: bag.topics[TOPIC]}
        assert bag.topics[TOPIC].msgtype == EVENT_PACKET and bag.topics[TOPIC].count == count
        msgs = list(bag.messages([TOPIC]))
    assert len(msgs) == count
    assert all(m.msg.encoding == encoding for m in msgs)
    assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs)


def _packet(i: int):
    store = typestore()
    Packet = store.types[EVENT_PACKET]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    return Packet(header=Header(stamp=Time(sec=i, nanosec=5), frame_id="cam"), height=4,
                  width=4, seq=i, time_base=1000 * i, encoding="mono", is_bigendian=False,
                  events=np.arange(8 * i, dtype=np.uint8))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_write_then_read(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "out"
    with BagWriter(path, storage=storage) as bag:
        bag.add_topic(TOPIC, EVENT_PACKET, qos="driver_events")
        bag.add_topic("/ack", EVENT_PACKET, qos="reliable")
        for i in range(5):
            bag.write(TOPIC, 10 + i, _packet(i))
        bag.write("/ack", 20, typestore().serialize_cdr(_packet(7), EVENT_PACKET))
        assert not path.exists()  # nothing visible until the bag is complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with BagReader(path) as bag:
        assert bag.topics[TOPIC].count == 5 and bag.topics["/ack"].count == 1
        conn = next(c for c in bag.reader.connections if c.topic == TOPIC)
        qos = conn.ext.offered_qos_profiles[0]
        assert qos.depth == 1000 and qos.reliability.name == "BEST_EFFORT"
        assert qos.durability.name == "VOLATILE" and qos.history.name == "KEEP_LAST"
        msgs = list(bag.messages([TOPIC]))
    assert [m.msg.seq for m in msgs] == list(range(5))
    assert bytes(msgs[3].msg.events) == bytes(range(24))


def test_writer_refuses_existing_and_cleans_up_on_error(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    path.mkdir()
    with pytest.raises(BagExistsError):
        BagWriter(path).__enter__()
    with pytest.raises(RuntimeError), BagWriter(tmp_path / "failed") as bag:
        bag.add_topic(TOPIC, EVENT_PACKET)
        bag.write(TOPIC, 1, _packet(1))
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    with BagWriter(path, overwrite=True) as bag:
        bag.add_topic(TOPIC, EVENT_PACKET)
        bag.write(TOPIC, 1, _packet(1))
    with BagReader(path) as bag:
        assert bag.message_count == 1


def test_writer_errors(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "b") as bag:
        with pytest.raises(BagTypeError):
            bag.add_topic("/x", "nope_msgs/msg/Nope")
        with pytest.raises(BagError):
            bag.write("/never_added", 1, b"")
        bag.add_topic(TOPIC, EVENT_PACKET)
        with pytest.raises(BagTypeError):
            bag.write(TOPIC, 1, object())


def test_missing_and_corrupt_bags(tmp_path: Path, event_bags: Path) -> None:
    with pytest.raises(BagNotFoundError):
        BagReader(tmp_path / "nothing").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagNotFoundError):
        BagReader(tmp_path / "empty").open()
    bad = tmp_path / "badyaml"
    bad.mkdir()
    (bad / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    with pytest.raises(BagCorruptError):
        BagReader(bad).open()
    for name in ("davis346_libcaer_cmp", "dvxplorer_libcaer_640x480"):
        src = event_bags / name
        dst = tmp_path / f"trunc_{name}"
        shutil.copytree(src, dst)
        for f in dst.iterdir():
            f.chmod(0o644)
            if f.suffix in (".mcap", ".db3"):
                data = f.read_bytes()
                f.write_bytes(data[: len(data) // 3])
        with pytest.raises(BagCorruptError), BagReader(dst) as bag:
            for m in bag.messages():
                _ = m.msg
