"""Websocket policy server speaking the openpi protocol, and its client.

Protocol (REFERENCE.md section 5): on connect the server sends one binary metadata frame;
each request is a binary msgpack-numpy observation dict, each reply a binary dict with
``actions`` ``(chunk, D)`` and ``server_timing`` ``{"infer_ms": ...}``. A malformed
observation gets a *text* frame ``"error: <field>: <what was expected>"`` (openpi clients
raise it as an error) and the connection stays open for the next request. ``GET /healthz``
answers ``200 OK``. The server binds to loopback unless told otherwise; with a token,
connections must send ``Authorization: Bearer <token>`` or openpi's ``Api-Key <token>`` (the scheme
case-insensitive). Messages above
``max_message_bytes`` close the connection with websocket code 1009 (message too big).
Inference runs in a worker thread, one request at a time per server (the model is not
re-entrant), so health checks and other connections stay responsive.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Mapping

import numpy as np

from cosmos3_robot.runtime.wire import WireError, pack, unpack

InferFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class ObservationKeys:
    """Where the policy's inputs sit in a request (openpi LIBERO-client names by default).

    Attributes:
        image: key of the ``(H, W, 3)`` uint8 camera frame (or ``(n_context, H, W, 3)``).
        state: raw embodiment key -> request key of that state vector.
        prompt: key of the instruction string.
        views: camera name -> request key of that camera's current ``(H, W, 3)`` uint8 frame,
            for a model that reads several cameras (``Cosmos3Policy.views``; the primary
            camera is ``image``). Default: openpi's wrist image as the ``wrist`` camera.
        timestamp: optional key of the observation time (s); the reply then carries
            ``timestamps`` ``(chunk,)``: when each target is due.
    """

    image: str = "observation/image"
    state: dict[str, str] = field(default_factory=lambda: {"state": "observation/state"})
    prompt: str = "prompt"
    timestamp: str = "timestamp"
    views: dict[str, str] = field(default_factory=lambda: {"wrist": "observation/wrist_image"})


def policy_infer_fn(policy: Any, keys: ObservationKeys = ObservationKeys()) -> InferFn:
    """Request dict -> reply dict for a :class:`~cosmos3_robot.runtime.Cosmos3Policy`."""
    needs_state = bool(policy.embodiment.codec.state_blocks)
    view_keys = {}
    for cam in getattr(policy, "views", ()):
        if cam in keys.views:
            view_keys[cam] = keys.views[cam]
        elif cam in policy.required_views:
            raise ValueError(f"views: the model reads camera {cam!r} but no request key is mapped to it; "
                             f"mapped: {keys.views} (cosmos3-robot serve --view {cam}=KEY)")

    def infer(obs: Mapping[str, Any]) -> dict[str, Any]:
        if keys.image not in obs:
            raise ValueError(f"{keys.image}: missing; expected a (H, W, 3) uint8 image")
        if keys.prompt not in obs or not isinstance(obs[keys.prompt], str):
            raise ValueError(f"{keys.prompt}: missing or not a string; expected the instruction text")
        state = {}
        if needs_state:
            for raw, key in keys.state.items():
                if key not in obs:
                    raise ValueError(f"{key}: missing; expected the robot state for {raw!r}")
                state[raw] = obs[key]
        for cam, key in view_keys.items():
            if key not in obs:
                raise ValueError(f"{key}: missing; expected the {cam!r} camera's (H, W, 3) uint8 image")
        extra = {"views": {cam: obs[key] for cam, key in view_keys.items()}} if view_keys else {}
        try:
            out = policy.infer(obs[keys.image], state, obs[keys.prompt], **extra)
        except ValueError as exc:  # name the request's field, not the policy's argument
            msg = str(exc)
            if msg.startswith("state") and len(keys.state) == 1:
                msg = re.sub(r"^state(\[[^\]]*\])?", next(iter(keys.state.values())), msg)
            raise ValueError(msg) from None
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            arrays = [np.asarray(v, dtype=np.float32) for v in out.values()]
        actions = arrays[0] if len(arrays) == 1 else np.concatenate([a.reshape(len(a), -1) for a in arrays], -1)
        if not np.all(np.isfinite(actions)):  # what is sent, after the cast (1e39 is inf in float32)
            raise ValueError(f"{', '.join(keys.state.values()) or 'observation'}: the actions for this observation "
                             f"do not fit float32 (|value| > {np.finfo(np.float32).max:.3g}); nothing sent")
        reply = {"actions": actions, "action_keys": list(out), "policy_timing": dict(policy.last_timing)}
        if keys.timestamp in obs:  # the observation's time (s) -> when each target is due
            t = np.asarray(obs[keys.timestamp], dtype=np.float64)
            if t.size != 1 or not np.isfinite(t).all():
                raise ValueError(f"{keys.timestamp}: expected one finite time in seconds, got {t.tolist()}")
            reply["timestamps"] = policy.chunk_timestamps(float(t), len(actions))
        return reply

    return infer


def server_metadata(policy: Any, keys: ObservationKeys = ObservationKeys()) -> dict[str, Any]:
    """The metadata frame: what requests must hold and what replies contain. ``action_dim``
    is the width of the reply's ``actions`` (the raw robot keys ``action_keys``, flattened and
    concatenated in that order, e.g. 8 for ``sim_arm``); ``pseudo_action_dim`` is the model's
    own action width (10 for ``sim_arm``)."""
    layout = policy.embodiment.raw_action_layout()
    return {"embodiment": policy.embodiment.name, "chunk": policy.chunk,
            "action_dim": int(sum(int(np.prod(s)) for s in layout.values())),
            "action_keys": {k: list(s) for k, s in layout.items()},
            "pseudo_action_dim": policy.embodiment.width,
            "control_hz": policy.fps, "image_size": policy.image_size, "n_context": policy.n_context,
            "observation_keys": {"image": keys.image, "state": keys.state, "prompt": keys.prompt,
                                 "views": keys.views}}


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_message_bytes: int = 16 * 1024 * 1024


class PolicyServer:
    """Serve ``infer`` (request dict -> reply dict) over websockets."""

    def __init__(self, infer: InferFn, config: ServerConfig = ServerConfig(),
                 metadata: Mapping[str, Any] | None = None):
        self.infer = infer
        self.config = config
        self.metadata = dict(metadata or {})
        self.requests = 0
        self.errors = 0
        self._lock = asyncio.Lock()
        self._server: Any = None
        self.port: int | None = None

    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.config.token is not None:
            got = request.headers.get("Authorization", "")
            scheme, _, key = got.strip().partition(" ")
            ok = scheme.lower() in ("bearer", "api-key") and hmac.compare_digest(
                key.strip().encode(), self.config.token.encode())
            if not ok:
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        return None

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        await ws.send(pack(self.metadata))
        while True:
            try:
                msg = await ws.recv()
            except ConnectionClosed:
                return
            t0 = time.perf_counter()
            try:
                if isinstance(msg, str):
                    raise WireError("expected a binary msgpack frame, got text")
                obs = await asyncio.to_thread(unpack, msg)  # a slow decode must not stall other clients
                if not isinstance(obs, dict):
                    raise WireError(f"expected an observation map, got {type(obs).__name__}")
                async with self._lock:  # one inference at a time on the shared model
                    reply = await asyncio.to_thread(self.infer, obs)
                reply = dict(reply)
                reply["server_timing"] = {"infer_ms": 1e3 * (time.perf_counter() - t0)}
                self.requests += 1
                out: str | bytes = pack(reply)
            except (ValueError, FloatingPointError, KeyError, TypeError) as exc:
                self.errors += 1
                out = f"error: {exc}"
            try:
                await ws.send(out)
            except ConnectionClosed:  # the client left mid-request
                return

    async def start(self) -> int:
        """Start listening; returns the bound port (``port=0`` picks a free one)."""
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self.config.host, self.config.port, compression=None,
                                   max_size=self.config.max_message_bytes, process_request=self._process_request)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def serve_forever(self) -> None:
        async def main() -> None:
            port = await self.start()
            print(f"[serve] listening on ws://{self.config.host}:{port} (healthz: http://{self.config.host}:{port}/healthz)",
                  flush=True)
            await asyncio.Future()

        asyncio.run(main())


class BackgroundServer:
    """A :class:`PolicyServer` on its own event-loop thread (tests, notebooks)."""

    def __init__(self, server: PolicyServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class PolicyServerError(RuntimeError):
    """The server answered a request with an error."""


class PolicyClient:
    """Synchronous client: ``PolicyClient(host, port).infer(obs) -> {"actions": ...}``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 timeout: float = 30.0):
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._conn = connect(f"ws://{host}:{port}", additional_headers=headers, compression=None, max_size=None,
                             open_timeout=timeout)
        self.ws = self._conn.__enter__()
        self.timeout = timeout
        self.metadata = unpack(self.ws.recv(timeout=timeout))

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        self.ws.send(pack(dict(obs)))
        reply = self.ws.recv(timeout=self.timeout)
        if isinstance(reply, str):
            raise PolicyServerError(reply)
        return unpack(reply)

    def close(self) -> None:
        self._conn.__exit__(None, None, None)

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
