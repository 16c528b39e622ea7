"""rosbag2 recordings (sqlite3 or MCAP) via ``rosbags`` (pure Python, no ROS install).

One bag is one episode. Topics are aligned to a regular ``fps`` grid by sample-and-hold:
each grid time takes, per topic, the latest message at or before it (message header stamps,
or receive times). A topic with no message within ``max_age`` seconds of a grid time is a
gap: a :class:`DataError` naming the topic and the time, not a silently repeated value.

Supported message types: ``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8),
``sensor_msgs/msg/CompressedImage`` (JPEG/PNG), ``sensor_msgs/msg/JointState`` (positions),
``geometry_msgs/msg/PoseStamped`` / ``Pose`` (a 4x4 pose), ``std_msgs/msg/Float64MultiArray``
/ ``Float32MultiArray`` (data), ``std_msgs/msg/Float64`` / ``Float32`` (a scalar).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from cosmos3_robot import geometry as geo
from cosmos3_robot.data.episode import DataError, Episode


@dataclass(frozen=True)
class RosbagLayout:
    """Attributes:
        cameras: camera name -> image topic.
        state: raw key -> topic (JointState, PoseStamped, arrays, scalars).
        commands: raw key -> topic of commands.
        fps: the alignment grid in Hz.
        time_source: ``"header"`` stamps (default; falls back to receive time for messages
            without a header) or ``"receive"`` (bag record time).
        max_age: the oldest a held message may be, in seconds (default ``2 / fps``).
        text: the instruction (bags carry none; a ``std_msgs/String`` topic may be given
            in ``text_topic`` instead).
        sort_stamps: a topic whose stamps run backwards against the recording order is an
            error (sorting would silently time-reverse the trajectory); ``True`` sorts each
            topic by its stamps instead, for bags known to be recorded out of order.
    """

    cameras: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    fps: float = 15.0
    time_source: Literal["header", "receive"] = "header"
    max_age: float | None = None
    text: str = ""
    text_topic: str | None = None
    sort_stamps: bool = False


def _image(msg: Any, msgtype: str, where: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        from PIL import Image

        try:
            return np.asarray(Image.open(io.BytesIO(bytes(msg.data))).convert("RGB"))
        except Exception as exc:
            raise DataError(f"{where}: compressed image could not be decoded ({exc})") from None
    enc = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(enc)
    if channels is None:
        raise DataError(f"{where}: image encoding {msg.encoding!r} is not supported "
                        "(expected rgb8, bgr8, rgba8, bgra8 or mono8)")
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    if msg.step * msg.height != buf.size or msg.step < msg.width * channels:
        raise DataError(f"{where}: image data of {buf.size} bytes does not match "
                        f"{msg.height} rows x {msg.step} bytes per row")
    img = buf.reshape(msg.height, msg.step)[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if enc.startswith("bgr"):
        img = img[..., [2, 1, 0]]
    elif channels == 4:
        img = img[..., :3]
    elif channels == 1:
        img = np.repeat(img, 3, -1)
    return np.ascontiguousarray(img[..., :3])


def _value(msg: Any, msgtype: str, where: str) -> np.ndarray:
    if msgtype.endswith("JointState"):
        return np.asarray(msg.position, dtype=np.float64)
    if msgtype.endswith("PoseStamped") or msgtype.endswith("/Pose"):
        pose = msg.pose if hasattr(msg, "pose") else msg
        p, q = pose.position, pose.orientation
        return geo.pose_from_pos_quat(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]), order="xyzw")
    if msgtype.endswith("MultiArray"):
        return np.asarray(msg.data, dtype=np.float64)
    if msgtype.endswith("/Float64") or msgtype.endswith("/Float32"):
        return np.asarray([msg.data], dtype=np.float64)
    raise DataError(f"{where}: message type {msgtype} is not supported for state/commands")


def _stamp(msg: Any, recv_ns: int, source: str) -> float:
    if source == "header" and hasattr(msg, "header"):
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return recv_ns * 1e-9


def read_rosbag(path: str | os.PathLike[str], layout: RosbagLayout) -> Iterator[Episode]:
    """Yield the bag as one validated :class:`Episode` on the ``layout.fps`` grid."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    store = get_typestore(Stores.LATEST)
    topics: dict[str, tuple[str, str]] = {}
    for kind, mapping in (("frames", layout.cameras), ("state", layout.state), ("commands", layout.commands)):
        for key, topic in mapping.items():
            topics[topic] = (kind, key)
    if layout.text_topic:
        topics[layout.text_topic] = ("text", "text")
    series: dict[str, list[tuple[float, Any]]] = {t: [] for t in topics}
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:
        raise DataError(f"{path}: not a readable rosbag2 ({type(exc).__name__}: {exc})") from None
    try:
        present = {c.topic for c in reader.connections}
        missing = sorted(set(topics) - present)
        if missing:
            raise DataError(f"{path}: topic(s) {missing} not in the bag; topics: {sorted(present)}")
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, recv, raw in reader.messages(connections=conns):
            kind, key = topics[conn.topic]
            where = f"{path.name}:{conn.topic}"
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:
                raise DataError(f"{where}: message at {recv * 1e-9:.3f} s could not be deserialised ({exc})") from None
            t = _stamp(msg, recv, layout.time_source)
            if kind == "frames":
                val: Any = _image(msg, conn.msgtype, where)
            elif kind == "text":
                val = str(msg.data)
            else:
                val = _value(msg, conn.msgtype, where)
            series[conn.topic].append((t, val))
    finally:
        reader.close()

    empty = [t for t, s in series.items() if not s]
    if empty:
        raise DataError(f"{path}: no messages on topic(s) {empty}")
    for topic, s in series.items():
        stamps = np.array([tv[0] for tv in s])
        back = np.flatnonzero(np.diff(stamps) < 0)
        if back.size and not layout.sort_stamps:
            i = int(back[0])
            raise DataError(f"{path.name}:{topic}: stamps run backwards against the recording order "
                            f"({back.size} times; message {i + 1} at {stamps[i + 1]:.6f} s after {stamps[i]:.6f} s); "
                            f"fix the stamps, use time_source 'receive', or set sort_stamps to sort them")
        s.sort(key=lambda tv: tv[0])
    data_topics = [t for t in topics if topics[t][0] != "text"]
    start = max(series[t][0][0] for t in data_topics)
    end = min(series[t][-1][0] for t in data_topics)
    if end <= start:
        raise DataError(f"{path}: topics do not overlap in time")
    grid = start + np.arange(int(np.floor((end - start) * layout.fps + 1e-9)) + 1) / layout.fps
    max_age = layout.max_age if layout.max_age is not None else 2.0 / layout.fps
    out: dict[str, dict[str, np.ndarray]] = {"frames": {}, "state": {}, "commands": {}}
    for topic in data_topics:
        kind, key = topics[topic]
        times = np.array([t for t, _ in series[topic]])
        idx = np.searchsorted(times, grid + 1e-9, side="right") - 1
        age = grid - times[idx]
        if (age > max_age).any():
            g = int(np.argmax(age > max_age))
            raise DataError(f"{path.name}:{topic}: no message within {max_age:.3f} s before "
                            f"t={grid[g] - start:.3f} s (last one {age[g]:.3f} s old)")
        values = [series[topic][i][1] for i in idx]
        shapes = {np.shape(v) for v in values}
        if len(shapes) != 1:
            raise DataError(f"{path.name}:{topic}: messages change shape {sorted(shapes)}")
        out[kind][key] = np.stack(values)
    text = layout.text
    if layout.text_topic:
        text = series[layout.text_topic][-1][1]
    yield Episode(f"{path.name}", grid - start, out["frames"], out["state"], out["commands"], text).validate()
