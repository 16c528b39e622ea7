"""The policy node's logic, free of any ROS or DDS import.

Transports (the rclpy node in ``ros2_ws/src/cosmos3_robot`` and the pip-only DDS node in
:mod:`cosmos3_robot.runtime.dds_node`) turn messages into calls of :class:`PolicyNodeCore`
(``on_image``, ``on_state``, ``on_instruction``, ``on_estop``) and call :meth:`~PolicyNodeCore.tick`
from a timer at the control rate; ``tick`` returns the command to publish (or ``None``) and
the node's status. Inference runs on a worker thread, started by the chunk scheduler early
enough to arrive before the current chunk runs out; commands pass the safety filter.

The node never publishes an unsafe command: a malformed or stale input, a NaN state, an
e-stop, a policy error or a missing instruction lead to holding the last safe command (or
publishing nothing when none was ever sent), each counted with its reason in the status.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from cosmos3_robot.runtime.safety import SafetyConfig, SafetyFilter
from cosmos3_robot.runtime.scheduler import ChunkScheduler


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameters (the ROS parameters of ``config/policy.yaml``).

    Attributes:
        cameras: camera names in the order the policy uses them (the first is the model's).
        image_size: expected (height, width) of incoming frames, or None for any size.
        encodings: accepted raw image encodings.
        control_hz: command rate.
        max_frame_age_s, max_state_age_s: older inputs make the node hold (watchdog).
        sync_slop_s: largest stamp difference between cameras used together.
        blend, min_execute: chunk execution (see :mod:`.scheduler`).
        instruction: default instruction until one arrives on the instruction topic.
    """

    cameras: tuple[str, ...] = ("front",)
    image_size: tuple[int, int] | None = None
    encodings: tuple[str, ...] = ("rgb8", "bgr8")
    control_hz: float = 10.0
    max_frame_age_s: float = 0.5
    max_state_age_s: float = 0.2
    sync_slop_s: float = 0.05
    blend: str = "inpaint"
    min_execute: int = 1
    instruction: str = ""
    safety: SafetyConfig = field(default_factory=lambda: SafetyConfig(max_obs_age_s=None))


def decode_image(data: bytes | np.ndarray, height: int, width: int, encoding: str) -> np.ndarray:
    """A ``sensor_msgs/Image`` payload -> ``(H, W, 3)`` uint8 RGB; ``ValueError`` names the problem."""
    enc = encoding.lower()
    if enc not in ("rgb8", "bgr8", "mono8"):
        raise ValueError(f"image encoding {encoding!r}: expected rgb8, bgr8 or mono8")
    ch = 1 if enc == "mono8" else 3
    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), dtype=np.uint8)
    if buf.size != height * width * ch:
        raise ValueError(f"image data: {buf.size} bytes, expected {height}x{width}x{ch} = {height * width * ch}")
    img = buf.reshape(height, width, ch).copy()  # own, writable memory
    if enc == "bgr8":
        img = img[..., ::-1]
    elif enc == "mono8":
        img = np.repeat(img, 3, -1)
    return np.ascontiguousarray(img)


def decode_compressed(data: bytes, fmt: str) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (jpeg/png) -> ``(H, W, 3)`` uint8 RGB."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # noqa: BLE001  (PIL raises many types for corrupt data)
        raise ValueError(f"compressed image ({fmt!r}): cannot be decoded ({type(exc).__name__})") from None


@dataclass
class Stamped:
    stamp: float  # seconds, sender clock (header stamp)
    received: float  # seconds, this node's monotonic clock
    value: Any


class PolicyNodeCore:
    """Inputs -> scheduled, safety-filtered commands.

    ``infer(frames, state, instruction, prefix)`` -> ``(T, D)`` commands for the steps from
    the observation on (e.g. ``Cosmos3Policy.infer`` wrapped by :func:`policy_infer`).
    """

    def __init__(self, infer: Callable[..., np.ndarray], config: NodeConfig = NodeConfig(),
                 clock: Callable[[], float] = time.monotonic):
        self.infer = infer
        self.config = config
        self.clock = clock
        self.images: dict[str, Stamped] = {}
        self.state: Stamped | None = None
        self.instruction = config.instruction
        self.safety = SafetyFilter(config.safety)
        self.scheduler = ChunkScheduler(hz=config.control_hz, blend=config.blend,  # type: ignore[arg-type]
                                        min_execute=config.min_execute)
        self.counts: Counter = Counter()
        self.last_problem = ""
        self.step = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosmos3-infer")
        self._future: Future | None = None
        self._future_step = 0
        self._t_request = 0.0
        self._lock = threading.Lock()

    # ---- inputs (any thread) --------------------------------------------------------
    def reject(self, reason: str, detail: str) -> None:
        """Count an input problem under ``reason`` (the transports call it for undecodable messages)."""
        with self._lock:
            self.counts[reason] += 1
            self.last_problem = f"{reason}: {detail}"

    def on_image(self, camera: str, stamp: float, image: np.ndarray) -> bool:
        c = self.config
        if camera not in c.cameras:
            self.reject("unknown_camera", f"{camera!r} not in {list(c.cameras)}")
            return False
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            self.reject("bad_image", f"{camera}: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
            return False
        if c.image_size is not None and tuple(img.shape[:2]) != tuple(c.image_size):
            self.reject("bad_image", f"{camera}: size {img.shape[1]}x{img.shape[0]}, expected "
                                      f"{c.image_size[1]}x{c.image_size[0]}")
            return False
        with self._lock:
            self.images[camera] = Stamped(float(stamp), self.clock(), img)
        return True

    def on_state(self, stamp: float, state: Mapping[str, Any]) -> bool:
        if not isinstance(state, Mapping):
            self.reject("bad_state", f"expected a mapping of raw key -> numbers, got {type(state).__name__}")
            return False
        vals = {}
        for k, v in state.items():
            a = np.asarray(v)
            if a.dtype.kind not in "biuf" or a.size == 0:
                self.reject("bad_state", f"state[{k!r}]: expected numbers, got {a.dtype} of shape {a.shape}")
                return False
            vals[k] = a.astype(np.float64)
        bad = [k for k, v in vals.items() if not np.all(np.isfinite(v))]
        if bad:
            self.reject("bad_state", f"non-finite values in {bad}")
            return False
        if not isinstance(stamp, (int, float, np.integer, np.floating)) or not np.isfinite(stamp):
            self.reject("bad_state", f"stamp: expected a finite time in seconds, got {stamp!r}")
            return False
        with self._lock:
            self.state = Stamped(float(stamp), self.clock(), vals)
        return True

    def pose_state(self, xyz: Any, quat_wxyz: Any, width: int | None = None) -> np.ndarray:
        """A pose state message -> the raw state vector ``[x y z, qw qx qy qz]``, padded up to
        ``width`` with the gripper of the last command sent (0 before any)."""
        v = np.r_[np.asarray(xyz, dtype=np.float64), np.asarray(quat_wxyz, dtype=np.float64)]
        if width is not None and width > len(v):
            last = self.safety.last_command
            v = np.r_[v, np.full(width - len(v), float(last[-1]) if last is not None else 0.0)]
        return v

    def on_instruction(self, text: str) -> bool:
        """A new instruction; anything but a string is refused (counted as ``bad_instruction``)
        and the current one stays."""
        if not isinstance(text, str):
            self.reject("bad_instruction", f"expected a string, got {type(text).__name__}")
            return False
        with self._lock:
            self.instruction = text
        return True

    def on_estop(self, pressed: bool) -> None:
        self.safety.estop(bool(pressed))

    # ---- the control loop (timer thread) ---------------------------------------------
    def _fresh_inputs(self, now: float) -> tuple[dict[str, Any], list[np.ndarray]] | str:
        c = self.config
        with self._lock:
            state, images, text = self.state, dict(self.images), self.instruction
        if state is None:
            return "no_state"
        if now - state.received > c.max_state_age_s:
            return "stale_state"
        if any(cam not in images for cam in c.cameras):
            return "no_image"
        if any(now - images[cam].received > c.max_frame_age_s for cam in c.cameras):
            return "stale_image"
        stamps = [images[cam].stamp for cam in c.cameras]
        if max(stamps) - min(stamps) > c.sync_slop_s:
            return "cameras_out_of_sync"
        if not text:
            return "no_instruction"
        return state.value, [images[cam].value for cam in c.cameras]

    def _collect(self, now: float) -> None:
        if self._future is None or not self._future.done():
            return
        fut, s_obs = self._future, self._future_step
        self._future = None
        self.scheduler.in_flight = None
        try:
            chunk = np.asarray(fut.result(), dtype=np.float64)
            if chunk.ndim != 2 or len(chunk) == 0 or not np.all(np.isfinite(chunk)):
                raise ValueError(f"policy returned shape {chunk.shape}; expected (T>=1, D) finite commands")
            self.scheduler.add_chunk(s_obs, chunk)
        except Exception as exc:  # noqa: BLE001  (a failing policy must not stop the loop)
            self.reject("policy_error", f"{type(exc).__name__}: {exc}")
            return
        self.scheduler.record_latency(now - self._t_request)
        self.counts["chunks"] += 1

    def tick(self) -> tuple[np.ndarray | None, dict[str, Any]]:
        """One control period: returns (command to publish or None, status). Never raises:
        an unexpected error holds the last safe command, counted as ``tick_error``."""
        try:
            return self._tick()
        except Exception as exc:  # noqa: BLE001  (the control loop must keep running)
            self.reject("tick_error", f"{type(exc).__name__}: {exc}")
            try:
                cmd = self.safety.hold("tick_error")
            except Exception:  # noqa: BLE001
                cmd = None
            return (None if cmd is None else cmd[0]), self.status()

    def _tick(self) -> tuple[np.ndarray | None, dict[str, Any]]:
        now = self.clock()
        step = self.step
        self.step += 1
        self._collect(now)
        inputs = self._fresh_inputs(now)
        if isinstance(inputs, str):
            self.reject(inputs, f"at step {step}")
        elif self.scheduler.should_request(step) and self._future is None:
            state, frames = inputs
            prefix = self.scheduler.pending(step) if self.config.blend == "inpaint" else None
            self.scheduler.requested(step)
            self._future_step, self._t_request = step, now
            self._future = self._pool.submit(self.infer, frames, state, self.instruction, prefix)
        planned = self.scheduler.action(step)
        if isinstance(inputs, str) or planned is None:
            # nothing fresh or nothing planned: hold (or stay silent if nothing was ever sent)
            cmd = self.safety.hold("estop" if self.safety.estopped else "hold")
        else:
            cmd = self.safety.filter(planned[None])
        out = None if cmd is None else cmd[0]
        if out is not None:
            self.counts["commands"] += 1
        return out, self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        return {"step": self.step, "latency_ms": 1e3 * self.scheduler.latency_s, "estop": self.safety.estopped,
                "counts": counts, "safety": self.safety.report(), "last_problem": self.last_problem,
                "ok": not self.safety.estopped and not self.last_problem.startswith(("stale", "no_"))}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def policy_infer(policy: Any, state_key: str = "state", cameras: tuple[str, ...] = ()) -> Callable[..., np.ndarray]:
    """Adapt a :class:`~cosmos3_robot.runtime.Cosmos3Policy` to :class:`PolicyNodeCore`'s
    ``infer``: the first camera's frame as the model's video, every camera the model reads
    (``policy.views``, matched by name against ``cameras``, the node's camera order) as its
    views, the raw state, the instruction, the pending prefix. A model camera the node does
    not subscribe to is an error here, when the node is built."""
    wanted = tuple(getattr(policy, "views", ()))
    missing = [c for c in wanted if c not in cameras and c in policy.required_views]
    if missing:
        raise ValueError(f"camera_names: the model reads cameras {list(wanted)}; add {missing} "
                         f"(node cameras: {list(cameras)})")
    index = {c: cameras.index(c) for c in wanted if c in cameras}

    def infer(frames: list[np.ndarray], state: Mapping[str, Any], text: str, prefix: np.ndarray | None):
        # pin at most chunk - 1 pending commands, so the new chunk always adds something
        pre = {state_key: prefix[: policy.chunk - 1]} if prefix is not None and len(prefix) else None
        extra = {"views": {c: frames[i] for c, i in index.items()}} if index else {}
        out = policy.infer(frames[0], state, text, prefix=pre, **extra)
        return np.asarray(out[state_key])

    return infer
