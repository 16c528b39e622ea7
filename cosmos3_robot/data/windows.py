"""Cutting episodes into training samples through an embodiment codec.

A sample at "now" index ``t`` (on the resampled grid) holds:

- ``n_context`` frames ``t - n_context + 1 .. t`` and ``n_future`` frames ``t+1 .. t+n_future``;
- the action chunk: ``chunk`` pseudo-actions for the transitions ``t -> t+1 -> ...``, so action
  step 0 sits between frame ``t`` (the current one) and frame ``t + 1`` (the reference's
  timing rule), encoded from the raw state/commands of steps ``t .. t + chunk``;
- the instruction, the frame rate, the control rate and the embodiment name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cosmos3_robot import embodiments
from cosmos3_robot.data.episode import DataError, Episode, resample_indices
from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.normalize import QuantileNormalizer
from cosmos3_robot.padding import MAX_ACTION_WIDTH, stack_padded
from cosmos3_robot.processor import Processor, frames_to_tensor
from cosmos3_robot.transforms import Transform


@dataclass(frozen=True)
class WindowSpec:
    """How samples are cut.

    Attributes:
        embodiment: registered embodiment name (its adapters read the episode's raw keys).
        camera: which camera's frames become the video.
        fps: sampling rate in Hz for frames and control steps (episodes are resampled by
            timestamps); ``None`` keeps each episode's own rate.
        n_context: context frames (``1 + k * temporal_compression``).
        n_future: future frames (a multiple of the temporal compression; 0 for none).
        chunk: actions per sample.
        image_size: frames are resized to ``image_size`` square (area interpolation).
        stride: steps between consecutive window starts.
        views: cameras whose current frame ("now") each sample also carries as ``views``
            ``(N, 3, S, S)``, in this order (the observation stem of a model with
            ``visual_keypoints`` reads them; e.g. ``("front", "wrist")``). Empty: none.
        pad_end: also cut windows whose chunk / future frames run past the episode's end,
            holding the last state, command and frame (LeRobot-style end padding), so an
            episode shorter than a chunk still trains and the final approach is not lost.
    """

    embodiment: str
    camera: str
    fps: float | None = None
    n_context: int = 1
    n_future: int = 0
    chunk: int = 16
    image_size: int = 64
    stride: int = 1
    pad_end: bool = False
    views: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(self.views))
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"WindowSpec: views {list(self.views)} name a camera twice")
        if self.n_context < 1 or self.n_future < 0 or self.chunk < 1 or self.stride < 1:
            raise ValueError(f"WindowSpec: n_context >= 1, n_future >= 0, chunk >= 1, stride >= 1; got {self}")


def _hold_end(ep: Episode, n: int) -> Episode:
    """``ep`` with its last step repeated ``n`` times (timestamps continue at the median step)."""
    idx = np.r_[np.arange(len(ep)), np.full(n, len(ep) - 1)]
    out = ep.select(idx)
    dt = float(np.median(np.diff(ep.timestamps)))
    out.timestamps = np.r_[ep.timestamps, ep.timestamps[-1] + dt * np.arange(1, n + 1)]
    return out


class WindowDataset(Dataset):
    """All windows of a list of episodes for one :class:`WindowSpec`.

    ``normalizer`` maps pseudo-actions to the model's range; compute it with
    :meth:`action_statistics` on the training data, store it with the run.
    ``state_normalizer`` (from :meth:`state_statistics`) does the same for the robot's
    proprioception at "now" (:meth:`ActionCodec.proprio`); samples carry ``state`` when it
    is set and the embodiment has state blocks. ``transforms``
    run on each window's raw state/commands before the embodiment's own adapters (e.g. a
    dataset's position + rotation-vector columns -> the ``ee`` pose).
    """

    def __init__(self, episodes: Sequence[Episode], spec: WindowSpec,
                 normalizer: QuantileNormalizer | None = None, transforms: Sequence[Transform] = (),
                 skip_bad: bool = False, state_normalizer: QuantileNormalizer | None = None):
        self.spec = spec
        self.skipped: list[str] = []  # "episode (steps): reason" for each window dropped by skip_bad
        emb = embodiments.get(spec.embodiment)
        # raw window -> model sample (fps is per episode here: the processor's is unused)
        self.processor = Processor(emb, normalizer, state_normalizer, image_size=spec.image_size,
                                   n_context=spec.n_context, chunk=spec.chunk, camera=spec.camera, views=spec.views,
                                   transforms=tuple(transforms))
        self.episodes: list[Episode] = []
        self.fps: list[float] = []
        self.index: list[tuple[int, int]] = []
        self.lengths: list[int] = []  # real steps of each episode (before pad_end's hold)
        self._cache: dict = {}
        horizon = max(spec.chunk, spec.n_future)
        for ep in episodes:
            ep.validate()
            for cam in (spec.camera, *spec.views):
                if cam not in ep.frames:
                    raise DataError(f"{ep.name}: frames: no camera {cam!r}; cameras: {sorted(ep.frames)}")
            if spec.fps is not None:
                ep = ep.select(resample_indices(ep.timestamps, spec.fps, ep.name))
                fps = spec.fps
            else:
                fps = float(1.0 / np.median(np.diff(ep.timestamps)))
            e = len(self.episodes)
            n_real = len(ep)
            if spec.pad_end:  # hold the last step for `horizon` more steps
                ep = _hold_end(ep, horizon)
            self.episodes.append(ep)
            self.lengths.append(n_real)
            self.fps.append(fps)
            last = n_real - 1 if spec.pad_end else n_real - horizon  # step 0 of a chunk is a real transition
            for t in range(spec.n_context - 1, last, spec.stride):
                self.index.append((e, t))
        if skip_bad:  # encode every window once; drop (and count) those the codec rejects
            keep = []
            for i, et in enumerate(self.index):
                try:
                    self.raw_actions(i)
                    keep.append(et)
                except DataError as exc:
                    self.skipped.append(str(exc))
            self.index = keep
        if not self.index:
            raise DataError(f"no window fits: episodes need at least {spec.n_context + horizon} steps "
                            f"(n_context {spec.n_context} + max(chunk, n_future) {horizon}) at the sample rate")

    embodiment = property(lambda self: self.processor.embodiment)
    transforms = property(lambda self: self.processor.transforms)

    @property
    def normalizer(self) -> QuantileNormalizer | None:
        return self.processor.normalizer

    @normalizer.setter
    def normalizer(self, value: QuantileNormalizer | None) -> None:
        self.processor.normalizer = value

    @property
    def state_normalizer(self) -> QuantileNormalizer | None:
        return self.processor.state_normalizer

    @state_normalizer.setter
    def state_normalizer(self, value: QuantileNormalizer | None) -> None:
        self.processor.state_normalizer = value

    def __len__(self) -> int:
        return len(self.index)

    def drop_padded_future(self) -> "WindowDataset":
        """Keep only the windows whose future frames all lie within their episode (with
        ``pad_end`` the last windows' future frames repeat the final one), what forward
        dynamics is scored on; returns ``self``."""
        n = self.spec.n_future
        self.index = [(e, t) for e, t in self.index if t + n <= self.lengths[e] - 1]
        self._cache.clear()
        return self

    def _encoded(self, i: int, proprio: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Pseudo-actions ``(chunk, D)`` of window ``i`` and (``proprio``) the proprioception
        ``(P,)`` at its step 0, before normalisation. Each window is encoded once and kept
        (the codec's per-window work is a large share of a small model's training step;
        windows are drawn many times)."""
        key = (self.index[i], proprio)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._encode(i, proprio)
        return hit

    def _encode(self, i: int, proprio: bool) -> tuple[np.ndarray, np.ndarray | None]:
        e, t = self.index[i]
        ep = self.episodes[e]
        c = self.spec.chunk
        raw: dict[str, Any] = {k: v[t: t + c + 1] for k, v in ep.state.items()}
        raw.update({k: v[t: t + c] for k, v in ep.commands.items()})
        try:
            return self.processor.encode_window(raw, proprio)
        except ValueError as exc:
            raise DataError(f"{ep.name} (steps {t}..{t + c}): {exc}") from None

    def raw_actions(self, i: int) -> np.ndarray:
        """Pseudo-actions ``(chunk, D)`` of window ``i``, before normalisation."""
        return self._encoded(i, proprio=False)[0]

    def raw_proprio(self, i: int) -> np.ndarray:
        """Proprioception ``(P,)`` at window ``i``'s "now", before normalisation (empty
        for command-only layouts)."""
        return self._encoded(i, proprio=True)[1]  # type: ignore[return-value]

    def state_statistics(self, max_windows: int = 4096, seed: int = 0) -> QuantileNormalizer | None:
        """Quantile statistics of the proprioception over (a seeded subsample of) all
        windows; ``None`` for command-only layouts (no state to read).

        The 6D rotation entries are left unnormalised: they already lie in [-1, 1], and a
        data set that keeps one orientation (a top-down gripper) has quantile ranges of
        1e-5 there, which would turn a 2-degree tilt at run time into inputs of +-100."""
        codec = self.embodiment.codec
        if not codec.state_blocks:
            return None
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(self), size=min(len(self), max_windows), replace=False)
        return QuantileNormalizer.from_data(np.stack([self.raw_proprio(int(i)) for i in pick]),
                                            skip=codec.proprio_rotation_mask())

    def action_statistics(self, max_windows: int = 4096, seed: int = 0) -> QuantileNormalizer:
        """Quantile statistics over (a seeded subsample of) all windows."""
        rng = np.random.default_rng(seed)
        n = len(self)
        pick = rng.choice(n, size=min(n, max_windows), replace=False)
        acts = np.concatenate([self.raw_actions(int(i)) for i in pick], 0)
        return self.embodiment.normalizer(acts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, t = self.index[i]
        ep, s = self.episodes[e], self.spec
        frames = ep.frames[s.camera][t - s.n_context + 1: t + s.n_future + 1]
        p = self.processor
        actions, state = self._encoded(i, proprio=p.reads_state)
        if p.normalizer is not None:
            actions = p.normalizer.normalize(actions)
        extra = {} if state is None else {"state": torch.as_tensor(p.state_normalizer.normalize(state),
                                                                   dtype=torch.float32)}
        if s.views:
            extra["views"] = frames_to_tensor(np.stack([ep.frames[c][t] for c in s.views]), s.image_size)
        return {**extra,
            "video": frames_to_tensor(frames, s.image_size),
            "n_context_frames": s.n_context,
            "actions": torch.as_tensor(actions, dtype=torch.float32),
            "text": ep.text,
            "fps": self.fps[e],
            "control_hz": self.fps[e],
            "embodiment": s.embodiment,
        }


def collate(samples: Sequence[dict[str, Any]]) -> WorldBatch:
    """Samples (possibly of different embodiments) -> one :class:`WorldBatch`.

    Actions are zero-padded to the shared width with a per-sample mask; so is the
    proprioceptive ``state`` when any sample has one (a sample without has an empty mask).
    """
    n_ctx = {s["n_context_frames"] for s in samples}
    if len(n_ctx) != 1:
        raise ValueError(f"collate: samples disagree on n_context_frames {sorted(n_ctx)}")
    actions, mask = stack_padded([s["actions"] for s in samples], MAX_ACTION_WIDTH)
    state = state_mask = None
    if any("state" in s for s in samples):
        state, state_mask = stack_padded([s.get("state", torch.zeros(0))[None] for s in samples], MAX_ACTION_WIDTH)
        state = state[:, 0].float()
    n_views = {len(s["views"]) if "views" in s else 0 for s in samples}
    if len(n_views) != 1:
        raise ValueError(f"collate: samples disagree on the number of views {sorted(n_views)}")
    views = torch.stack([s["views"] for s in samples]) if n_views.pop() else None
    return WorldBatch(
        text=[s["text"] for s in samples],
        embodiment=[s["embodiment"] for s in samples],
        video=torch.stack([s["video"] for s in samples]),
        n_context_frames=n_ctx.pop(),
        actions=actions,
        action_mask=mask,
        fps=torch.tensor([s["fps"] for s in samples]),
        control_hz=torch.tensor([s["control_hz"] for s in samples]),
        state=state,
        state_mask=state_mask,
        views=views,
    )


def mixture_weights(datasets: Sequence[Dataset], weights: Sequence[float]) -> torch.Tensor:
    """Per-sample weights for a ``ConcatDataset`` so dataset ``d`` is drawn with probability
    ``weights[d] / sum(weights)`` whatever its size."""
    if len(datasets) != len(weights) or any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"mixture weights: expected {len(datasets)} non-negative weights, got {list(weights)}")
    parts = [torch.full((len(d),), w / len(d), dtype=torch.float64) for d, w in zip(datasets, weights)]
    return torch.cat(parts)
