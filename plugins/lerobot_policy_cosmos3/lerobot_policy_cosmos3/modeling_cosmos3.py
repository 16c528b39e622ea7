"""``Cosmos3Policy``: the cosmos3-robot model behind LeRobot's ``PreTrainedPolicy`` API.

Batches arrive from LeRobot's pre-processor (normalised state/action, pixels in [0, 1],
``task`` strings); the model's own code does the rest (:class:`cosmos3_robot.model.Cosmos3`):
``forward`` is its flow-matching loss, ``predict_action_chunk`` its ``generate`` in the
actions-only policy mode, and ``select_action`` serves that chunk step by step through the
chunk scheduler our evaluator and robot nodes run (``n_action_steps`` per chunk, like ACT's
queue; :class:`cosmos3_robot.runtime.scheduler.ChunkScheduler`).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from cosmos3_robot.model import Cosmos3, WorldBatch
from cosmos3_robot.processor import pixels_to_model
from cosmos3_robot.runtime.scheduler import ChunkScheduler
from lerobot.policies import PreTrainedPolicy
from lerobot.utils.constants import ACTION
from lerobot_policy_cosmos3.configuration_cosmos3 import DOMAIN, Cosmos3Config

TRAIN_MIXTURE = ("policy", "forward_dynamics", "policy", "inverse_dynamics")
"""Modes cycled by training step when future frames are loaded (policy 2 : FD 1 : ID 1)."""


class Cosmos3Policy(PreTrainedPolicy):
    config_class = Cosmos3Config
    name = "cosmos3"

    def __init__(self, config: Cosmos3Config, dataset_stats=None, dataset_meta=None, **kwargs):
        super().__init__(config)
        config.validate_features()
        if dataset_meta is not None and getattr(dataset_meta, "fps", None):
            config.fps = float(dataset_meta.fps)
        self.config = config
        self.model = Cosmos3(config.model_config())
        self._steps = itertools.count()
        self.reset()

    # ---- LeRobot API -------------------------------------------------------------------
    def get_optim_params(self) -> dict:
        return self.parameters()

    def reset(self) -> None:
        n = self.config.n_action_steps  # LeRobot's rollout waits for the policy: latency 0
        self._scheduler = ChunkScheduler(hz=float(self.config.fps or 1.0), min_execute=n, max_execute=n)
        self._step = 0
        self._prefix_cache: dict = {}  # the task's AR prefix K/V, reused while it stays the same

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Flow-matching loss on one batch: actions only, or (``future_frames``) the
        world-model mixture cycled by step."""
        self._prefix_cache.clear()  # the weights are changing
        mode = "policy_actions"
        if self.config.future_frames:
            mode = TRAIN_MIXTURE[next(self._steps) % len(TRAIN_MIXTURE)]
        loss, parts = self.model.loss(mode, self._world_batch(batch, with_actions=True))
        return loss, parts

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """``(B, chunk_size, action_dim)`` normalised actions for the current observation."""
        self.eval()
        c = self.config
        out = self.model.generate("policy_actions", self._world_batch(batch, with_actions=False),
                                  steps=c.num_inference_steps, sampler=c.sampler, guidance=c.guidance,
                                  temperature=c.temperature,
                                  n_actions=c.chunk_size, action_dim=c.action_feature.shape[0],
                                  prefix_cache=self._prefix_cache, seed=int(kwargs.get("seed", 0)))
        return out["actions"]

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """One ``(B, action_dim)`` action; a new chunk is sampled when the queue is empty."""
        self.eval()
        s = self._scheduler
        if s.should_request(self._step):
            chunk = self.predict_action_chunk(batch, **kwargs)  # (B, T, A)
            self._shape = chunk.shape[0], chunk.shape[2]
            self._device, self._dtype = chunk.device, chunk.dtype
            s.requested(self._step)  # the batch's envs step together: one (T, B * A) chunk
            s.add_chunk(self._step, chunk.transpose(0, 1).reshape(chunk.shape[1], -1).double().cpu().numpy())
        action = s.action(self._step)
        self._step += 1
        return torch.as_tensor(action, dtype=self._dtype, device=self._device).reshape(self._shape)

    # ---- batch conversion --------------------------------------------------------------
    def _world_batch(self, batch: dict[str, Tensor], with_actions: bool) -> WorldBatch:
        c = self.config
        key = c.camera_key
        if key not in batch:
            raise ValueError(f"{key}: the camera the policy was configured with is missing from the batch "
                             f"(keys: {sorted(batch)})")
        frames = batch[key]
        if frames.dim() == 4:  # (B, 3, H, W): the current frame only
            frames = frames[:, None]
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"{key}: expected (B, 3, H, W) or (B, T, 3, H, W) pixels in [0, 1], "
                             f"got {tuple(frames.shape)}")
        if not with_actions or not c.future_frames:
            frames = frames[:, :1]
        elif frames.shape[1] != 1 + c.future_frames:
            raise ValueError(f"{key}: expected {1 + c.future_frames} frames (current + future_frames), "
                             f"got {frames.shape[1]}")
        B, T = frames.shape[:2]
        S = self.model.config.image_size
        # LeRobot normalised state and actions already (its processor); frames as in our windows
        video = pixels_to_model(frames.reshape(B * T, *frames.shape[2:]), S).reshape(B, T, 3, S, S)
        task = batch.get("task")
        text = [str(t) for t in task] if isinstance(task, (list, tuple)) else [""] * B
        if len(text) != B:
            raise ValueError(f"task: expected {B} strings, got {len(text)}")
        actions = valid = None
        if with_actions:
            if ACTION not in batch:
                raise ValueError("action: training batches need (B, chunk_size, action_dim) actions")
            actions = batch[ACTION].float()
            if actions.dim() != 3 or actions.shape[1] != c.chunk_size:
                raise ValueError(f"action: expected (B, {c.chunk_size}, D), got {tuple(actions.shape)}")
            pad = batch.get("action_is_pad")  # chunk steps past the episode's end, as ACT masks them
            if pad is not None:
                if tuple(pad.shape) != tuple(actions.shape[:2]):
                    raise ValueError(f"action_is_pad: expected ({B}, {c.chunk_size}) bool, got {tuple(pad.shape)}")
                valid = ~pad.bool()
        state = None
        if self.model.config.state_input and "observation.state" in batch:
            state = batch["observation.state"].float()
            if state.dim() == 3:  # (B, 1 + future_frames, S) when future frames are loaded: now is the first
                state = state[:, 0]
            if state.dim() != 2 or state.shape[0] != B:
                raise ValueError(f"observation.state: expected ({B}, S) or ({B}, T, S), "
                                 f"got {tuple(batch['observation.state'].shape)}")
        return WorldBatch(text=text, embodiment=[DOMAIN] * B, video=video, n_context_frames=1, actions=actions,
                          fps=c.fps, control_hz=c.fps, action_valid=valid, state=state)
