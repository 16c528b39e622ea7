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
from cosmos3_robot.model.checkpoint import load_model, resolve_checkpoint
from cosmos3_robot.model.cosmos3 import Cosmos3
from cosmos3_robot.model.flow import SAMPLERS, check_temperature
from cosmos3_robot.normalize import QuantileNormalizer
from cosmos3_robot.processor import Processor, frames_to_tensor, frames_to_uint8


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
        self.backend = generator_backend(self.model, config, export_dir, weights_source)
        self.window = dict(window)
        self.config = config
        emb = embodiments.get(embodiment)
        # cameras whose current frame the observation stem reads (the recipe's window.views)
        views = tuple(self.window.get("views") or ()) if model.part("keypoints") is not None else ()
        if views and len(views) != model.config.n_views:
            raise ValueError(f"window views {list(views)}: the model reads {model.config.n_views} camera(s)")
        self.processor = Processor(
            emb, normalizer,
            # proprioception for models that read it (``state_input``), normalised as in training
            state_normalizer if model.config.state_input else None,
            image_size=int(self.window.get("image_size", model.config.image_size)),
            n_context=int(self.window.get("n_context", 1)), chunk=int(self.window.get("chunk", emb.chunk)),
            fps=float(self.window.get("fps") or emb.fps), camera=str(self.window.get("camera", "camera0")),
            views=views)
        self.last_timing: dict[str, float] = {}
        self.prefix_cache: dict = {}  # AR prefix K/V per instruction (the weights are fixed here)

    # the processor's settings, as the server, the nodes and the evaluator read them
    embodiment = property(lambda self: self.processor.embodiment)
    normalizer = property(lambda self: self.processor.normalizer)
    state_normalizer = property(lambda self: self.processor.state_normalizer)
    n_context = property(lambda self: self.processor.n_context)
    chunk = property(lambda self: self.processor.chunk)
    image_size = property(lambda self: self.processor.image_size)
    fps = property(lambda self: self.processor.fps)
    views = property(lambda self: self.processor.views)
    cameras = property(lambda self: self.processor.cameras, doc="Every camera the policy reads: the video "
                       "camera, then the other views.")
    required_views = property(lambda self: self.processor.required_views,
                              doc="The views a request must carry (the video camera's is its context frame).")

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

    # ---- inference -------------------------------------------------------------------
    def _generate(self, mode: str, batch: WorldBatch, seed: int | None, **kw: Any) -> dict[str, torch.Tensor]:
        """``model.generate`` with this policy's sampler settings, prefix cache and backend."""
        c = self.config
        return self.model.generate(mode, batch, steps=c.steps, sampler=c.sampler,  # type: ignore[arg-type]
                                   seed=c.seed if seed is None else seed, temperature=c.temperature,
                                   prefix_cache=self.prefix_cache, backend=self.backend, **kw)

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

    def _request(self, frames: Any, state: Mapping[str, Any], instruction: str, views: Mapping[str, Any] | None,
                 future: Any = None, actions: Mapping[str, Any] | None = None,
                 ) -> tuple[WorldBatch, dict[str, Any] | None]:
        """A checked request -> the model's batch of one on its device, and the start state the
        chunk decodes from. ``future`` ``(F, H, W, 3)`` uint8 frames follow the context
        (inverse dynamics); ``actions`` (raw keys -> ``(chunk, ...)``) to imagine."""
        _check_instruction(instruction)
        p = self.processor
        video = p.frames(frames)
        if future is not None:
            fut = np.asarray(future)
            if fut.ndim != 4 or fut.shape[-1] != 3 or fut.dtype != np.uint8:
                raise ValueError(f"future: expected (F, H, W, 3) uint8 frames, got {fut.shape} {fut.dtype}")
            video = torch.cat([video, frames_to_tensor(fut, p.image_size)])
        x = None
        if actions is not None:
            x = torch.as_tensor(p.encode_targets(state, actions, name="actions"), dtype=torch.float32)
            if x.shape[0] != p.chunk:
                raise ValueError(f"actions: expected {p.chunk} steps (the model's chunk), got {x.shape[0]}")
        views_t = p.view_frames(views, frames)
        start = p.start(state)
        return p.batch(video, instruction, start, x, views_t, device=self.model.device), start

    def _policy(self, frames, state, instruction, seed, prefix, n_future_frames, views=None):
        t0 = time.perf_counter()
        batch, start = self._request(frames, state, instruction, views)
        action_prefix = None
        if prefix is not None:
            action_prefix = torch.as_tensor(self.processor.encode_targets(state, prefix), dtype=torch.float32)[None]
        t1 = time.perf_counter()
        mode = "policy_actions" if n_future_frames is None else "policy"
        out = self._generate(mode, batch, seed, guidance=self.config.guidance,
                             n_actions=self.chunk, action_dim=self.embodiment.width, action_prefix=action_prefix,
                             n_future_frames=n_future_frames)
        t2 = time.perf_counter()
        result = self.processor.decode(out["actions"][0], start)
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
        batch, _ = self._request(frames, state, instruction, views, actions=actions)
        out = self._generate("forward_dynamics", batch, seed, n_future_frames=n_future_frames)
        return frames_to_uint8(out["video"][0])

    @torch.inference_mode()
    def label(self, frames: Any, future: Any, state: Mapping[str, Any], instruction: str = "",
              seed: int | None = None, views: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Inverse dynamics, for labelling video: the actions (raw keys -> ``(chunk, ...)``)
        that lead from the context ``frames`` to the ``future`` frames ``(F, H, W, 3)``."""
        batch, start = self._request(frames, state, instruction, views, future=future)
        out = self._generate("inverse_dynamics", batch, seed, n_actions=self.chunk, action_dim=self.embodiment.width)
        return self.processor.decode(out["actions"][0], start)
