"""Reading and writing rosbag2 bags with ``rosbags`` (no ROS installation needed).

Why a layer over rosbags: every user (training, evaluation, the simulator, the
``events-info`` tool) needs the same three things: the project's interface types
(``event_camera_msgs``, ``dv_ros2_msgs``) registered from the ``.msg`` files of the
repository's ``msg/`` folder (one source of truth), bags that real rigs write (including a
``metadata.yaml`` with an empty storage identifier), and bags written atomically so that a
half-written bag never looks complete. Errors become :class:`derain_ros.errors.BagError`
subclasses.

Times: ``log_time_ns`` is the bag's receive/log time in ns since the epoch (not sensor
time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from ruamel.yaml import YAML

from derain_ros.conventions import EVENT_QOS_DEPTH
from derain_ros.errors import BagError

__all__ = [
    "INTERFACE_TYPES",
    "QOS_PROFILES",
    "TRUNCATED_HINT",
    "BagCorruptError",
    "BagExistsError",
    "BagMessage",
    "BagNotFoundError",
    "BagReader",
    "BagTypeError",
    "BagWriter",
    "TopicInfo",
    "find_msg_dir",
    "typestore",
]


class BagNotFoundError(BagError):
    """The bag path does not exist or holds no rosbag2 bag."""


class BagCorruptError(BagError):
    """The bag exists but cannot be read: bad metadata, truncated or corrupt storage."""


class BagExistsError(BagError):
    """A bag would be written over an existing path (pass ``overwrite=True``)."""


class BagTypeError(BagError):
    """A message type is unknown, or a message does not (de)serialise as its type."""


#: interface types of this project: type name -> .msg file relative to the msg/ folder
INTERFACE_TYPES: dict[str, str] = {
    "event_camera_msgs/msg/EventPacket": "event_camera_msgs/msg/EventPacket.msg",
    "dv_ros2_msgs/msg/Event": "dv_ros2_msgs/msg/Event.msg",
    "dv_ros2_msgs/msg/EventArray": "dv_ros2_msgs/msg/EventArray.msg",
}

_NEVER = QosTime(sec=9223372036, nsec=854775807)  # rosbag2's "infinite" duration


def _qos(reliability: QosReliability, depth: int) -> Qos:
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=reliability,
               durability=QosDurability.VOLATILE, deadline=_NEVER, lifespan=_NEVER,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_NEVER,
               avoid_ros_namespace_conventions=False)


#: offered QoS written to a bag's metadata per topic kind: ``sensor_data`` is ROS's
#: sensor-data profile (best effort, volatile, keep last 5, as camera drivers publish),
#: ``driver_events`` what the event drivers publish (best effort, volatile, keep last
#: 1000), ``reliable`` ROS's default (reliable, volatile, keep last 10).
QOS_PROFILES: dict[str, Qos] = {
    "sensor_data": _qos(QosReliability.BEST_EFFORT, 5),
    "driver_events": _qos(QosReliability.BEST_EFFORT, EVENT_QOS_DEPTH),
    "reliable": _qos(QosReliability.RELIABLE, 10),
}

_STORAGE_BY_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}
_WRITE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def find_msg_dir() -> Path:
    """The folder holding the project's ``.msg`` files (``<pkg>/msg/...``).

    Looked up, in order: the repository's ``msg/`` next to the package (editable
    install, source checkout), then ``share/derain_ros/msg`` under each entry of
    ``AMENT_PREFIX_PATH`` (colcon/ament install) and under ``sys.prefix`` (pip install).
    """
    first = next(iter(INTERFACE_TYPES.values()))
    candidates = [Path(__file__).resolve().parents[1] / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates += [Path(p) / "share" / "derain_ros" / "msg" for p in [*prefixes, sys.prefix]]
    for cand in candidates:
        if (cand / first).is_file():
            return cand
    raise BagTypeError("cannot find the project's .msg files; looked in "
                       + ", ".join(str(c) for c in candidates))


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The rosbags typestore: ROS 2 Kilted (or the latest) plus the project's types."""
    store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
    msg_dir = find_msg_dir()
    types: dict[str, Any] = {}
    for name, rel in INTERFACE_TYPES.items():
        types.update(get_types_from_msg((msg_dir / rel).read_text(), name))
    store.register(types)
    return store


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its message type and message count."""

    msgtype: str
    count: int


@dataclass
class BagMessage:
    """One message of a bag; ``msg`` deserialises ``raw`` (CDR) on first access."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    _msg: Any = field(default=None, repr=False)

    @property
    def msg(self) -> Any:
        """The deserialised message (rosbags dataclass), cached."""
        if self._msg is None:
            try:
                self._msg = typestore().deserialize_cdr(self.raw, self.msgtype)
            except Exception as err:
                raise BagTypeError(f"cannot deserialise a {self.msgtype} message on "
                                   f"{self.topic}: {err}") from err
        return self._msg


#: How to repair a recording that was cut off (in the errors of :class:`BagReader`).
TRUNCATED_HINT = ("Repair it, then read the repaired copy: `ros2 bag reindex BAG_FOLDER` "
                  "rebuilds metadata.yaml from the storage files; an mcap file cut in the "
                  "middle (no summary, no end magic) needs `mcap recover IN.mcap -o OUT.mcap` "
                  "(the mcap CLI) first, then `ros2 bag reindex`")


class BagReader:
    """Context manager reading a rosbag2 bag (sqlite3 or mcap; folder or single file).

    A ``metadata.yaml`` with an empty ``storage_identifier`` (real bags have it) is read
    through a patched copy in a temporary folder that links to the storage files; the
    bag itself is never written to. Raises :class:`BagNotFoundError` for a missing path
    and :class:`BagCorruptError` for unreadable metadata or storage (also while
    iterating over a truncated file).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._reader: Reader | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Open the bag (done by ``with``)."""
        if not self.path.exists():
            raise BagNotFoundError(f"no bag at {self.path}")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            stored = sorted(p.name for p in self.path.iterdir()
                            if p.suffix in _STORAGE_BY_SUFFIX)
            if stored:
                raise BagCorruptError(
                    f"{self.path} has storage files ({', '.join(stored)}) but no "
                    f"metadata.yaml: the recording was probably cut off before rosbag2 "
                    f"wrote it. {TRUNCATED_HINT}")
            raise BagNotFoundError(f"{self.path} has no metadata.yaml: not a rosbag2 bag")
        try:
            source = self._patched_dir() if self.path.is_dir() else self.path
            reader = Reader(source)
            reader.open()
        except BagError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise BagCorruptError(f"cannot open bag {self.path}: {err}. If the recording was "
                                  f"cut off (a crash, a full disk), {TRUNCATED_HINT}") from err
        self._reader = reader

    def _patched_dir(self) -> Path:
        """The bag folder, or a temporary copy of its metadata naming the storage."""
        meta_path = self.path / "metadata.yaml"
        yaml = YAML(typ="safe")
        try:
            meta = yaml.load(meta_path.read_text())
            info = meta["rosbag2_bagfile_information"]
            storage = info.get("storage_identifier")
            files = list(info.get("relative_file_paths") or [])
        except Exception as err:
            raise BagCorruptError(f"unreadable metadata {meta_path}: {err}") from err
        if storage:
            return self.path
        kinds = {_STORAGE_BY_SUFFIX.get(Path(f).suffix) for f in files}
        if len(kinds) != 1 or None in kinds:
            raise BagCorruptError(f"{meta_path}: empty storage identifier and storage files "
                                  f"{files} of no single known kind (.mcap, .db3)")
        info["storage_identifier"] = kinds.pop()
        self._tmp = tempfile.TemporaryDirectory(prefix="derain_bag_")
        tmp = Path(self._tmp.name)
        for name in files:
            src = (self.path / Path(name).name).resolve()
            if not src.exists():
                raise BagCorruptError(f"{self.path}: storage file {name} is missing")
            (tmp / src.name).symlink_to(src)
        with (tmp / "metadata.yaml").open("w") as fh:
            yaml.dump(meta, fh)
        return tmp

    def close(self) -> None:
        """Close the bag and remove any temporary metadata copy."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            with contextlib.suppress(Exception):
                reader.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def reader(self) -> Reader:
        """The underlying rosbags reader (open)."""
        if self._reader is None:
            raise BagError("bag is not open: use `with BagReader(path) as bag:`")
        return self._reader

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topic name -> (message type, message count), from the bag's metadata."""
        return {name: TopicInfo(info.msgtype or "", int(info.msgcount))
                for name, info in self.reader.topics.items()}

    @property
    def message_count(self) -> int:
        """Messages in the bag."""
        return int(self.reader.message_count)

    @property
    def start_time_ns(self) -> int:
        """Log time of the first message, ns."""
        return int(self.reader.start_time)

    @property
    def end_time_ns(self) -> int:
        """Log time just after the last message, ns."""
        return int(self.reader.end_time)

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages in log-time order, of ``topics`` (all when None)."""
        reader = self.reader
        wanted = None if topics is None else set(topics)
        if wanted is not None and (missing := wanted - set(self.topics)):
            raise BagError(f"topics {sorted(missing)} are not in {self.path} "
                           f"(it has {sorted(self.topics)})")
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        try:
            for conn, log_time, raw in reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, int(log_time), bytes(raw))
        except BagError:
            raise
        except Exception as err:
            raise BagCorruptError(f"bag {self.path} is corrupt or truncated: {err}. "
                                  f"{TRUNCATED_HINT}") from err


class BagWriter:
    """Context manager writing a rosbag2 bag atomically (mcap by default, or sqlite3).

    The bag is written into a temporary sibling folder and renamed to ``path`` only when
    the ``with`` block ends without an exception, so no half-written bag is ever found
    under ``path``. An existing ``path`` is refused (:class:`BagExistsError`) unless
    ``overwrite=True``, in which case it is replaced at the end.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 storage: Literal["mcap", "sqlite3"] = "mcap", overwrite: bool = False) -> None:
        if storage not in _WRITE_PLUGINS:
            raise BagError(f"unknown storage {storage!r}; use one of {sorted(_WRITE_PLUGINS)}")
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self._writer: Writer | None = None
        self._staging: Path | None = None
        self._conns: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        if self.path.exists() and not self.overwrite:
            raise BagExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-",
                                              dir=self.path.parent))
        try:
            self._writer = Writer(self._staging / self.path.name, version=9,
                                  storage_plugin=_WRITE_PLUGINS[self.storage])
            self._writer.open()
        except Exception as err:
            self._discard()
            raise BagError(f"cannot create bag {self.path}: {err}") from err
        return self

    def add_topic(self, name: str, msgtype: str,
                  qos: Literal["sensor_data", "reliable", "driver_events"] = "sensor_data") -> None:
        """Declare topic ``name`` of ``msgtype`` with the offered QoS profile ``qos``."""
        writer = self._open_writer()
        if name in self._conns:
            raise BagError(f"topic {name} was already added")
        if qos not in QOS_PROFILES:
            raise BagError(f"unknown QoS profile {qos!r}; use one of {sorted(QOS_PROFILES)}")
        store = typestore()
        if msgtype not in store.fielddefs:
            raise BagTypeError(f"unknown message type {msgtype!r}")
        self._conns[name] = writer.add_connection(name, msgtype, typestore=store,
                                                  offered_qos_profiles=[QOS_PROFILES[qos]])

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        """Write one message: a rosbags message object, or its CDR bytes as they are."""
        writer = self._open_writer()
        conn = self._conns.get(topic)
        if conn is None:
            raise BagError(f"topic {topic} was not added (call add_topic first)")
        if isinstance(msg, bytes | bytearray | memoryview):
            # (rosbags takes bytes or a memoryview: a bytearray goes in as a view, no copy)
            data = memoryview(msg) if isinstance(msg, bytearray) else msg
        else:
            try:
                data = typestore().serialize_cdr(msg, conn.msgtype)
            except Exception as err:
                raise BagTypeError(f"cannot serialise a message for {topic} as "
                                   f"{conn.msgtype}: {err}") from err
        writer.write(conn, int(log_time_ns), data)

    def _open_writer(self) -> Writer:
        if self._writer is None:
            raise BagError("bag writer is not open: use `with BagWriter(path) as bag:`")
        return self._writer

    def _discard(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        writer, self._writer = self._writer, None
        if exc_type is not None:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.abort()
            self._discard()
            return
        if self._staging is None or writer is None:
            raise BagError("bag writer was not opened")
        try:
            writer.close()
            if self.path.exists():
                if not self.overwrite:
                    raise BagExistsError(f"{self.path} appeared while writing; not replacing")
                shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
            (self._staging / self.path.name).rename(self.path)
        except BagError:
            self._discard()
            raise
        except Exception as err:
            self._discard()
            raise BagError(f"cannot finish bag {self.path}: {err}") from err
        self._discard()
