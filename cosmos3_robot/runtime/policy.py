"""A trained checkpoint as a policy: observations in, action chunks in robot units out.

:class:`Cosmos3Policy` is what closed-loop evaluation, the websocket server and the ROS 2
node share. It owns the model, the embodiment, the normaliser and the window settings the
model was trained with (all read from the run's checkpoint folder), and turns

- context frames ``(n_context, H, W, 3)`` uint8 (any size: resized like the training data),
- the robot's current raw state (e.g. ``{"state": (8,)}`` for ``sim_arm``),
- an instruction,

into a chunk of raw robot targets ``{key: (chunk, ...)}``: the model samples normalised
pseudo-actions, which are un-normalised and integrated from the current state by the
embodiment codec, then put back into the robot's keys and units by its adapters.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from cosmos3_robot import embodiments
from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.data.windows import frames_to_tensor, frames_to_uint8
from cosmos3_robot.model.checkpoint import load_model, resolve_checkpoint
from cosmos3_robot.model.cosmos3 import Cosmos3
from cosmos3_robot.model.flow import SAMPLERS, check_temperature
from cosmos3_robot.normalize import QuantileNormalizer


@dataclass(frozen=True)
class InferenceConfig:
    """Sampling settings.

    Attributes:
        steps: denoising steps per chunk; 0 (models with an action prior) returns the
            prior's chunk without running the towers (see ``Cosmos3.generate``).
        sampler: ``"euler"`` or ``"heun"``.
        guidance: classifier-free guidance scale on the instruction (1 = off).
        seed: base seed; call ``infer(..., seed=k)`` for per-request seeds.
        use_ema: load the EMA weights when the checkpoint has them.
        device: torch device string.
        backend: where the Generator tower runs at each denoising step: ``"torch"`` or
            ``"onnxruntime"`` (CPU; the step exported to ONNX once and cached next to the
            checkpoint, see :mod:`cosmos3_robot.runtime.export`).
        int8: with ``onnxruntime``, int8 dynamic quantisation of the Generator's linear
            weights (about 1e-3 deviation in normalised actions; 4x less weight traffic).
        compile: with ``torch``, ``torch.compile`` the Generator tower (on CUDA with CUDA
            graphs, ``mode="reduce-overhead"``); the first chunks pay the compilation.
        dtype: ``"float32"``, or ``"bfloat16"`` weights and activations on CUDA.
        temperature: scale of the sampler's starting noise in [0, 1] (1: sample the learned
            distribution; lower: nearer its centre, see ``Cosmos3.generate``).
    """

    steps: int = 4
    sampler: str = "euler"
    guidance: float = 1.0
    seed: int = 0
    use_ema: bool = True
    device: str = "cpu"
    backend: str = "torch"
    int8: bool = False
    compile: bool = False
    dtype: str = "float32"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= int(self.steps) <= 1000:
            raise ValueError(f"steps: expected 0..1000 denoising steps, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected {' or '.join(map(repr, SAMPLERS))}, got {self.sampler!r}")
        if self.backend not in ("torch", "onnxruntime"):
            raise ValueError(f"backend: expected 'torch' or 'onnxruntime', got {self.backend!r}")
        check_temperature(self.temperature)
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.int8 and self.backend != "onnxruntime":
            raise ValueError("int8: needs backend 'onnxruntime' (int8 Generator weights are an ONNX export)")
        if self.backend == "onnxruntime" and (self.device != "cpu" or self.dtype != "float32" or self.compile):
            raise ValueError("backend 'onnxruntime' runs float32 on the CPU; for a GPU use backend 'torch' "
                             "(dtype bfloat16, compile) or TensorRT with the exported ONNX")


def generator_backend(model: Cosmos3, config: InferenceConfig, export_dir: str | os.PathLike[str] | None = None,
                      source: str = ""):
    """Apply ``config``'s speed settings to ``model`` and return the Generator backend for
    :meth:`Cosmos3.generate` (``None``: the model's own torch modules).

    ``export_dir``: where the ONNX export of the step is kept (re-exported when ``source``,
    a description of the weights, differs from the one recorded); a temporary folder when
    ``None`` or not writable."""
    if config.dtype == "bfloat16":
        if not config.device.startswith("cuda"):
            raise ValueError("dtype bfloat16: only on CUDA (this CPU path runs float32)")
        model.to(torch.bfloat16)
    if config.compile:
        mode = "reduce-overhead" if config.device.startswith("cuda") else None
        model.core.forward_dm = torch.compile(model.core.forward_dm, dynamic=False, mode=mode)  # type: ignore[method-assign]
    if config.backend != "onnxruntime" or config.steps == 0:  # steps 0 never runs the Generator
        return None
    from cosmos3_robot.runtime.export import OrtGeneratorStep, export_generator_step

    name = "generator_step.int8.onnx" if config.int8 else "generator_step.onnx"
    folder = Path(export_dir) if export_dir is not None else None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                folder = None
        except OSError:
            folder = None
    if folder is None:  # no place to keep it: export, load, and remove the file again
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cosmos3-export-") as tmp:
            export_generator_step(model, Path(tmp) / name, int8=config.int8)
            return OrtGeneratorStep(Path(tmp) / name)
    path = folder / name
    stamp = path.with_suffix(".source")
    if not (path.exists() and stamp.exists() and stamp.read_text() == source) or not source:
        export_generator_step(model, path, int8=config.int8)
        stamp.write_text(source)
    return OrtGeneratorStep(path)


def _check_instruction(text: Any) -> None:
    if not isinstance(text, str):
        raise ValueError(f"instruction: expected a string, got {type(text).__name__}")


class Cosmos3Policy:
    """Model + embodiment + normaliser + window settings, with validated inputs."""

    def __init__(self, model: Cosmos3, embodiment: str, normalizer: QuantileNormalizer, window: Mapping[str, Any],
                 config: InferenceConfig = InferenceConfig(), export_dir: str | os.PathLike[str] | None = None,
                 weights_source: str = "", state_normalizer: QuantileNormalizer | None = None):
        self.model = model.to(config.device).eval()  # the device the config names, as from_checkpoint
        # proprioception for models that read it (``state_input``), normalised as in training
        self.state_normalizer = state_normalizer if model.config.state_input else None
        self.backend = generator_backend(self.model, config, export_dir, weights_source)
        self.embodiment = embodiments.get(embodiment)
        self.normalizer = normalizer
        self.window = dict(window)
        self.config = config
        self.n_context = int(self.window.get("n_context", 1))
        self.chunk = int(self.window.get("chunk", self.embodiment.chunk))
        self.image_size = int(self.window.get("image_size", model.config.image_size))
        self.fps = float(self.window.get("fps") or self.embodiment.fps)
        # cameras whose current frame the observation stem reads (the recipe's window.views)
        self.views: tuple[str, ...] = tuple(self.window.get("views") or ()) if model.keypoints is not None else ()
        if self.views and len(self.views) != model.config.n_views:
            raise ValueError(f"window views {list(self.views)}: the model reads {model.config.n_views} camera(s)")
        self.last_timing: dict[str, float] = {}
        self.prefix_cache: dict = {}  # AR prefix K/V per instruction (the weights are fixed here)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], config: InferenceConfig = InferenceConfig(),
                        source: int = 0) -> "Cosmos3Policy":
        """Load from a run or checkpoint folder; ``source`` picks the data entry whose
        embodiment, normaliser and window settings to use."""
        ckpt = resolve_checkpoint(path)
        info = json.loads((ckpt / "trainer.json").read_text())
        windows, norms = info.get("windows") or [], info.get("normalizers") or []
        if not 0 <= source < len(windows) or len(norms) != len(windows):
            raise ValueError(f"checkpoint {ckpt}: no data entry {source} with window settings and normaliser "
                             f"({len(windows)} windows, {len(norms)} normalisers)")
        weights = ckpt / "ema.safetensors"
        if not (config.use_ema and weights.exists()):
            weights = ckpt / "model.safetensors"
        model = load_model(weights, map_location=config.device)
        window = windows[source]
        emb = embodiments.get(window["embodiment"])
        normalizer = QuantileNormalizer.from_dict(norms[source])
        if normalizer.dim != emb.width:
            raise ValueError(f"checkpoint {ckpt}: normaliser has {normalizer.dim} dims, embodiment "
                             f"{emb.name!r} has {emb.width}")
        state_norms = info.get("state_normalizers") or [None] * len(windows)
        state_normalizer = None if state_norms[source] is None else QuantileNormalizer.from_dict(state_norms[source])
        if model.config.state_input and emb.codec.state_blocks and state_normalizer is None:
            raise ValueError(f"checkpoint {ckpt}: the model reads proprioception but trainer.json has no "
                             f"state_normalizers entry {source}")
        st = weights.stat()
        return cls(model, emb.name, normalizer, window, config, export_dir=ckpt / "export",
                   weights_source=f"{weights.resolve()} {st.st_size} {st.st_mtime_ns}",
                   state_normalizer=state_normalizer)

    # ---- input checks ----------------------------------------------------------------
    def _frames(self, frames: Any, name: str = "frames", n: int | None = None) -> torch.Tensor:
        x = np.asarray(frames)
        n = self.n_context if n is None else n
        if x.ndim == 3 and n == 1:
            x = x[None]
        if x.ndim != 4 or x.shape[0] != n or x.shape[-1] != 3:
            raise ValueError(f"{name}: expected ({n}, H, W, 3) uint8 context frames"
                             f"{' or (H, W, 3)' if n == 1 else ''}, got shape {x.shape}")
        if x.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 pixels 0..255, got {x.dtype}")
        if min(x.shape[1:3]) < 16:
            raise ValueError(f"{name}: images of {x.shape[1]}x{x.shape[2]} px are too small (>= 16 px)")
        return frames_to_tensor(x, self.image_size)

    def _start(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.embodiment.codec.state_blocks:  # command-only layouts decode without a state
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

    def _encode_targets(self, state: Mapping[str, Any], prefix: Mapping[str, Any]) -> np.ndarray:
        """Raw targets ``(k, ...)`` (a pinned prefix, or a chunk to imagine) -> normalised
        pseudo-actions ``(k, D)`` from the current state."""
        raw = {}
        state_keys = self.embodiment.state_keys()  # None: every key continues from the state
        for key, v in prefix.items():
            a = np.asarray(v, dtype=np.float64)
            if a.ndim < 1 or len(a) == 0 or not np.all(np.isfinite(a)):
                raise ValueError(f"prefix[{key!r}]: expected (k, ...) finite targets, got shape {a.shape}")
            if self.embodiment.codec.state_blocks and (state_keys is None or key in state_keys):
                if key not in state:
                    raise ValueError(f"prefix[{key!r}]: no current state {key!r} to continue from")
                a = np.concatenate([np.asarray(state[key], dtype=np.float64)[None], a], 0)
            raw[key] = a
        try:
            x = self.embodiment.encode_raw(raw)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"prefix: does not fit embodiment {self.embodiment.name!r} ({exc})") from None
        if len(x) > self.chunk:
            raise ValueError(f"prefix: {len(x)} steps, more than the chunk of {self.chunk}")
        return self.normalizer.normalize(np.asarray(x))

    @property
    def cameras(self) -> tuple[str, ...]:
        """Every camera the policy reads: the video camera, then the other views."""
        return tuple(dict.fromkeys([str(self.window.get("camera", "camera0")), *self.views]))

    @property
    def required_views(self) -> tuple[str, ...]:
        """The views a request must carry (the video camera's is its context frame)."""
        return self.cameras[1:] if self.views else ()

    def _views(self, views: Mapping[str, Any] | None, frames: Any) -> torch.Tensor | None:
        """Every camera's current frame ``{camera: (H, W, 3) uint8}`` -> ``(1, N, 3, S, S)`` in
        the trained order; ``None`` for a model without an observation stem. The primary
        camera's view may be left out: it is then the last context frame."""
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
            out.append(self._frames(given[cam], name=f"views[{cam!r}]", n=1)[0])
        return torch.stack(out)[None].to(self.model.device)

    # ---- inference -------------------------------------------------------------------
    def _batch(self, video: torch.Tensor, instruction: str, start: dict[str, Any] | None,
               actions: torch.Tensor | None = None, views: torch.Tensor | None = None) -> WorldBatch:
        _check_instruction(instruction)
        state = None
        if self.state_normalizer is not None and start is not None:
            proprio = self.state_normalizer.normalize(self.embodiment.codec.proprio(start))
            state = torch.as_tensor(proprio, dtype=torch.float32, device=self.model.device)[None]
        return WorldBatch(text=[instruction], embodiment=[self.embodiment.name], video=video,
                          n_context_frames=self.n_context, fps=self.fps, control_hz=self.fps, actions=actions,
                          state=state, views=views)

    def _generate(self, mode: str, batch: WorldBatch, seed: int | None, **kw: Any) -> dict[str, torch.Tensor]:
        """``model.generate`` with this policy's sampler settings, prefix cache and backend."""
        c = self.config
        return self.model.generate(mode, batch, steps=c.steps, sampler=c.sampler,  # type: ignore[arg-type]
                                   seed=c.seed if seed is None else seed, temperature=c.temperature,
                                   prefix_cache=self.prefix_cache, backend=self.backend, **kw)

    def _decode_actions(self, normalized: torch.Tensor, start: dict[str, Any] | None) -> dict[str, np.ndarray]:
        """Model output ``(T, D)`` (normalised) -> raw robot keys ``(T, ...)``."""
        actions = self.normalizer.unnormalize(normalized.double().cpu().numpy())
        actions = self.embodiment.codec.project(actions)  # e.g. a gripper of 1.02 -> 1.0
        result = {k: np.asarray(v) for k, v in self.embodiment.chunk_to_raw(actions, start).items()}
        for k, v in result.items():
            if not np.all(np.isfinite(v)):
                raise FloatingPointError(f"policy output {k!r} is not finite; refusing to return it")
        return result

    def chunk_timestamps(self, obs_time: float, n: int | None = None) -> np.ndarray:
        """When each of a chunk's targets is due (s): target ``k`` of a chunk computed from
        the observation at ``obs_time`` is reached at ``obs_time + (k + 1) / fps`` (action
        step 0 lies between the current frame and the next)."""
        return float(obs_time) + (np.arange(n or self.chunk) + 1) / self.fps

    @torch.inference_mode()
    def infer(self, frames: Any, state: Mapping[str, Any], instruction: str, seed: int | None = None,
              prefix: Mapping[str, Any] | None = None, views: Mapping[str, Any] | None = None,
              ) -> dict[str, np.ndarray]:
        """One action chunk: raw robot keys -> ``(chunk, ...)`` targets for the next
        ``chunk`` control steps (step 0 is the first target after the current state).

        ``prefix`` (raw keys -> ``(k, ...)``, e.g. the previous chunk's not-yet-executed
        targets) pins the first ``k`` steps of the new chunk (inpainting continuation).
        ``views`` (camera -> ``(H, W, 3)`` uint8): the current frame of every camera the
        model reads (``self.views``; the primary camera may be left out)."""
        return self._policy(frames, state, instruction, seed, prefix, n_future_frames=None, views=views)[0]

    @torch.inference_mode()
    def infer_with_video(self, frames: Any, state: Mapping[str, Any], instruction: str, n_future_frames: int,
                         seed: int | None = None, views: Mapping[str, Any] | None = None,
                         ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Actions and the co-generated future video ``(n_future_frames, S, S, 3)`` uint8
        (the ``policy`` mode: what the model expects to see while acting)."""
        actions, video = self._policy(frames, state, instruction, seed, None, n_future_frames=n_future_frames,
                                      views=views)
        assert video is not None
        return actions, video

    def _policy(self, frames, state, instruction, seed, prefix, n_future_frames, views=None):
        t0 = time.perf_counter()
        video = self._frames(frames)[None].to(self.model.device)
        view_tensor = self._views(views, frames)
        start = self._start(state)
        action_prefix = None
        if prefix is not None:
            action_prefix = torch.as_tensor(self._encode_targets(state, prefix), dtype=torch.float32)[None]
        t1 = time.perf_counter()
        mode = "policy_actions" if n_future_frames is None else "policy"
        out = self._generate(mode, self._batch(video, instruction, start, views=view_tensor), seed,
                             guidance=self.config.guidance,
                             n_actions=self.chunk, action_dim=self.embodiment.width, action_prefix=action_prefix,
                             n_future_frames=n_future_frames)
        t2 = time.perf_counter()
        result = self._decode_actions(out["actions"][0], start)
        t3 = time.perf_counter()
        self.last_timing = {"prepare_ms": 1e3 * (t1 - t0), "model_ms": 1e3 * (t2 - t1),
                            "decode_ms": 1e3 * (t3 - t2), "total_ms": 1e3 * (t3 - t0)}
        return result, (frames_to_uint8(out["video"][0]) if "video" in out else None)

    @torch.inference_mode()
    def imagine(self, frames: Any, state: Mapping[str, Any], actions: Mapping[str, Any], instruction: str,
                n_future_frames: int, seed: int | None = None, views: Mapping[str, Any] | None = None) -> np.ndarray:
        """Forward dynamics, "what would happen": the next ``n_future_frames`` frames
        ``(F, S, S, 3)`` uint8 if the robot executed ``actions`` (raw keys -> ``(chunk, ...)``
        targets from the current ``state``)."""
        video = self._frames(frames)[None].to(self.model.device)
        x = torch.as_tensor(self._encode_targets(state, actions), dtype=torch.float32)[None]
        if x.shape[1] != self.chunk:
            raise ValueError(f"actions: expected {self.chunk} steps (the model's chunk), got {x.shape[1]}")
        out = self._generate("forward_dynamics", self._batch(video, instruction, self._start(state),
                                                             x.to(self.model.device), self._views(views, frames)),
                             seed,
                             n_future_frames=n_future_frames)
        return frames_to_uint8(out["video"][0])

    @torch.inference_mode()
    def label(self, frames: Any, future: Any, state: Mapping[str, Any], instruction: str = "",
              seed: int | None = None, views: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Inverse dynamics, for labelling video: the actions (raw keys -> ``(chunk, ...)``)
        that lead from the context ``frames`` to the ``future`` frames ``(F, H, W, 3)``."""
        ctx = self._frames(frames)
        fut = np.asarray(future)
        if fut.ndim != 4 or fut.shape[-1] != 3 or fut.dtype != np.uint8:
            raise ValueError(f"future: expected (F, H, W, 3) uint8 frames, got {fut.shape} {fut.dtype}")
        video = torch.cat([ctx, frames_to_tensor(fut, self.image_size)])[None].to(self.model.device)
        start = self._start(state)
        out = self._generate("inverse_dynamics", self._batch(video, instruction, start, views=self._views(views, frames)),
                             seed, n_actions=self.chunk,
                             action_dim=self.embodiment.width)
        return self._decode_actions(out["actions"][0], start)
