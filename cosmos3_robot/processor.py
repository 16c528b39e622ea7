"""One processor: raw observation <-> model batch <-> robot units.

:class:`Processor` is the one place that turns what a robot or a data set holds into what the
model reads, and the model's output back into the robot's keys and units (the role of
LeRobot's ``processor_*.py`` and openpi's transforms). Training windows
(:class:`cosmos3_robot.data.windows.WindowDataset`), the runtime policy
(:class:`cosmos3_robot.runtime.policy.Cosmos3Policy`, and through it the websocket server, the
ROS 2 and DDS nodes and closed-loop evaluation) and the LeRobot plugin (its frames) all go
through it:

- frames ``(F, H, W, 3)`` uint8 -> ``(F, 3, S, S)`` float32 in [-1, 1] (:func:`frames_to_tensor`;
  LeRobot's ``(B, 3, H, W)`` floats in [0, 1] through :func:`pixels_to_model`), and back;
- a raw state (one step) -> the codec's start state -> the normalised proprio vector ``(P,)``;
- raw targets (a window's state and commands, a pinned prefix, a chunk to imagine) ->
  normalised pseudo-actions ``(T, D)``;
- the model's normalised chunk ``(T, D)`` -> raw robot keys ``(T, ...)``.

Action padding to the model's shared width happens when samples are collated
(:func:`cosmos3_robot.data.windows.collate`) and inside the model for a single request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.normalize import QuantileNormalizer
from cosmos3_robot.transforms import Transform, apply


def resize_pixels(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, C, H, W)`` float images -> ``(N, C, *size)``, values' range kept (area averaging
    when shrinking, bilinear when growing); returned as is when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="area" if x.shape[-1] >= size[-1] else "bilinear")


def pixels_to_model(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 3, H, W)`` float pixels in [0, 1] -> ``(N, 3, size, size)`` float32 in [-1, 1]
    (:func:`resize_pixels`)."""
    return resize_pixels(x.float().clamp(0, 1) * 2 - 1, (size, size))


def frames_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> ``(F, 3, size, size)`` float32 in [-1, 1]."""
    return pixels_to_model(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255, size)


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """``(F, 3, H, W)`` in [-1, 1] -> ``(F, H, W, 3)`` uint8 (the inverse of
    :func:`frames_to_tensor` at the same size)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def check_frames(frames: Any, n: int, name: str = "frames") -> np.ndarray:
    """Request frames -> ``(n, H, W, 3)`` uint8; ``(H, W, 3)`` is accepted when ``n`` is 1.
    Raises ``ValueError`` naming ``name`` and the expected shape."""
    x = np.asarray(frames)
    if x.ndim == 3 and n == 1:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != n or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected ({n}, H, W, 3) uint8 context frames"
                         f"{' or (H, W, 3)' if n == 1 else ''}, got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels 0..255, got {x.dtype}")
    if min(x.shape[1:3]) < 16:
        raise ValueError(f"{name}: images of {x.shape[1]}x{x.shape[2]} px are too small (>= 16 px)")
    return x


@dataclass
class Processor:
    """The conversions of one embodiment and window setting (one data entry of a recipe).

    Attributes:
        embodiment: the robot's codec and adapters.
        normalizer: pseudo-actions <-> the model's range (``None`` before statistics exist).
        state_normalizer: the proprio vector's normaliser; ``None``: no state is given to the
            model (a model without ``state_input``, or a layout without state blocks).
        image_size: the model's square frame size S (px).
        n_context: context frames per request.
        chunk: actions per chunk.
        fps: control rate (Hz), also the video rate of a request.
        camera: the video camera; ``views``: every camera whose current frame the
            observation stem reads, in the trained order.
        transforms: data-set specific raw-key steps run before the embodiment's adapters.
    """

    embodiment: Embodiment
    normalizer: QuantileNormalizer | None = None
    state_normalizer: QuantileNormalizer | None = None
    image_size: int = 64
    n_context: int = 1
    chunk: int = 16
    fps: float = 15.0
    camera: str = "camera0"
    views: tuple[str, ...] = ()
    transforms: Sequence[Transform] = field(default_factory=tuple)

    # ---- frames --------------------------------------------------------------------------
    def frames(self, frames: Any, name: str = "frames", n: int | None = None) -> torch.Tensor:
        """Checked request frames ``(n, H, W, 3)`` uint8 (default ``n_context``) ->
        ``(n, 3, S, S)`` float32 in [-1, 1]."""
        return frames_to_tensor(check_frames(frames, self.n_context if n is None else n, name), self.image_size)

    @property
    def cameras(self) -> tuple[str, ...]:
        """Every camera read: the video camera, then the other views."""
        return tuple(dict.fromkeys([self.camera, *self.views]))

    @property
    def required_views(self) -> tuple[str, ...]:
        """The views a request must carry (the video camera's is its context frame)."""
        return self.cameras[1:] if self.views else ()

    def view_frames(self, views: Mapping[str, Any] | None, frames: Any) -> torch.Tensor | None:
        """Every camera's current frame ``{camera: (H, W, 3) uint8}`` -> ``(N, 3, S, S)`` in
        the trained order; ``None`` without views. The video camera's view may be left out:
        it is then the last context frame."""
        if not self.views:
            return None
        given = dict(views or {})
        out = []
        for cam in self.views:
            if cam not in given:
                if cam in self.required_views:
                    raise ValueError(f"views: no frame for camera {cam!r}; the model reads {list(self.views)} "
                                     f"(views={{camera: (H, W, 3) uint8}})")
                x = np.asarray(frames)
                given[cam] = x if x.ndim == 3 else x[-1]
            out.append(self.frames(given[cam], name=f"views[{cam!r}]", n=1)[0])
        return torch.stack(out)

    # ---- state ---------------------------------------------------------------------------
    def start(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """A robot's current raw state ``{key: (...)}`` (one step) -> the codec's start state;
        ``None`` for command-only layouts (they decode without a state)."""
        if not self.embodiment.codec.state_blocks:
            return None
        if not isinstance(state, Mapping):
            raise ValueError(f"state: expected a mapping of raw key -> numbers, got {type(state).__name__}")
        raw = {}
        for k, v in state.items():
            a = np.asarray(v)
            if a.dtype.kind not in "biuf":
                raise ValueError(f"state[{k!r}]: expected numbers, got {a.dtype} values")
            a = a.astype(np.float64)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"state[{k!r}]: non-finite values {a.tolist()}")
            raw[k] = a[None]  # one time step
        try:
            return self.embodiment.start_from_raw(raw)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"state: does not fit embodiment {self.embodiment.name!r} ({exc})") from None

    @property
    def reads_state(self) -> bool:
        """Whether the model is given the proprio vector."""
        return self.state_normalizer is not None and bool(self.embodiment.codec.state_blocks)

    def proprio(self, start: Mapping[str, Any] | None) -> torch.Tensor | None:
        """Start state -> normalised proprio vector ``(P,)`` float32; ``None`` when no state is read."""
        if not self.reads_state or start is None:
            return None
        return torch.as_tensor(self.state_normalizer.normalize(self.embodiment.codec.proprio(start)),
                               dtype=torch.float32)

    # ---- actions -------------------------------------------------------------------------
    def encode_window(self, raw: Mapping[str, Any], proprio: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """A window's raw keys (state ``chunk + 1`` steps, commands ``chunk``) -> pseudo-actions
        ``(chunk, D)`` and (``proprio``) the proprio vector ``(P,)`` at its step 0, both before
        normalisation. Raises ``ValueError`` where the codec rejects the window."""
        episode = self.embodiment.from_raw(apply(self.transforms, raw))
        actions = np.asarray(self.embodiment.encode(episode), dtype=np.float64)
        state = self.embodiment.codec.proprio(self.embodiment.start_state(episode, 0)) if proprio else None
        return actions, state

    def encode_targets(self, state: Mapping[str, Any], targets: Mapping[str, Any], name: str = "prefix",
                       ) -> np.ndarray:
        """Raw targets ``{key: (k, ...)}`` (a pinned prefix, or a chunk to imagine) ->
        normalised pseudo-actions ``(k, D)`` from the current raw ``state``."""
        raw = {}
        state_keys = self.embodiment.state_keys()  # None: every key continues from the state
        for key, v in targets.items():
            a = np.asarray(v, dtype=np.float64)
            if a.ndim < 1 or len(a) == 0 or not np.all(np.isfinite(a)):
                raise ValueError(f"{name}[{key!r}]: expected (k, ...) finite targets, got shape {a.shape}")
            if self.embodiment.codec.state_blocks and (state_keys is None or key in state_keys):
                if key not in state:
                    raise ValueError(f"{name}[{key!r}]: no current state {key!r} to continue from")
                a = np.concatenate([np.asarray(state[key], dtype=np.float64)[None], a], 0)
            raw[key] = a
        try:
            x = self.embodiment.encode_raw(raw)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{name}: does not fit embodiment {self.embodiment.name!r} ({exc})") from None
        if len(x) > self.chunk:
            raise ValueError(f"{name}: {len(x)} steps, more than the chunk of {self.chunk}")
        return self.normalizer.normalize(np.asarray(x))

    def decode(self, normalized: torch.Tensor | np.ndarray, start: Mapping[str, Any] | None,
               ) -> dict[str, np.ndarray]:
        """The model's chunk ``(T, D)`` (normalised) -> raw robot keys ``(T, ...)``; raises
        ``FloatingPointError`` rather than return a non-finite target."""
        x = normalized.double().cpu().numpy() if isinstance(normalized, torch.Tensor) else np.asarray(normalized)
        actions = self.embodiment.codec.project(self.normalizer.unnormalize(x))  # e.g. a gripper of 1.02 -> 1.0
        result = {k: np.asarray(v) for k, v in self.embodiment.chunk_to_raw(actions, start).items()}
        for k, v in result.items():
            if not np.all(np.isfinite(v)):
                raise FloatingPointError(f"policy output {k!r} is not finite; refusing to return it")
        return result

    # ---- the batch -----------------------------------------------------------------------
    def batch(self, video: torch.Tensor, instruction: str, start: Mapping[str, Any] | None,
              actions: torch.Tensor | None = None, views: torch.Tensor | None = None,
              device: torch.device | str = "cpu") -> WorldBatch:
        """One request as a batch of one: ``video`` ``(F, 3, S, S)``, ``actions`` ``(T, D)``
        normalised, ``views`` ``(N, 3, S, S)``, everything moved to ``device``."""
        state = self.proprio(start)
        one = (lambda x: None if x is None else x[None].to(device))
        return WorldBatch(text=[instruction], embodiment=[self.embodiment.name], video=one(video),
                          n_context_frames=self.n_context, fps=self.fps, control_hz=self.fps, actions=one(actions),
                          state=one(state), views=one(views))
