"""The robot-side subcommands of ``cosmos3-robot``: ``serve`` (websockets, the openpi
protocol), ``node`` (the policy node over DDS) and ``export`` (ONNX), with the sampling
options they share. :mod:`cosmos3_robot.cli` registers them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}``; ``ValueError`` naming the flag otherwise."""
    out = {}
    for kv in items:
        name, sep, key = kv.partition("=")
        if not (sep and name and key):
            raise ValueError(f"{flag} {kv!r}: expected NAME=REQUEST_KEY")
        out[name] = key
    return out


def _cmd_serve(args: argparse.Namespace) -> int:
    from cosmos3_robot.runtime import Cosmos3Policy
    from cosmos3_robot.runtime.server import (ObservationKeys, PolicyServer, ServerConfig, policy_infer_fn,
                                              server_metadata)

    try:
        policy = Cosmos3Policy.from_checkpoint(args.checkpoint, _inference_config(args))
        # default: each raw state key the embodiment reads as observation/<key> (sim_arm: observation/state)
        state = _pairs(args.state_key, "--state-key") if args.state_key else \
            {k: f"observation/{k}" for k in policy.embodiment.state_keys() or ("state",)}
        views = _pairs(args.view, "--view") if args.view else {"wrist": "observation/wrist_image"}
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        token = _serve_token(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"[serve] warning: listening on {args.host} without --token: anyone who can reach the port can "
              f"drive the policy", file=sys.stderr)
    keys = ObservationKeys(image=args.image_key, state=state, prompt=args.prompt_key, views=views)
    meta = server_metadata(policy, keys)
    try:
        infer = policy_infer_fn(policy, keys)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = PolicyServer(infer, ServerConfig(args.host, args.port, token), meta)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _serve_token(args: argparse.Namespace) -> str | None:
    """--token, else --token-file, else $COSMOS3_TOKEN (None: no token)."""
    if args.token and args.token_file:
        raise ValueError("--token and --token-file: give one")
    if args.token_file:
        try:
            text = Path(args.token_file).read_text().strip().splitlines()
        except OSError as exc:
            raise ValueError(f"--token-file {args.token_file}: cannot be read ({exc.strerror})") from None
        if not text or not text[0].strip():
            raise ValueError(f"--token-file {args.token_file}: empty")
        return text[0].strip()
    return args.token or os.environ.get("COSMOS3_TOKEN") or None


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run or checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or openpi's 'Api-Key TOKEN') from "
                                   "clients; visible in ps, prefer --token-file or $COSMOS3_TOKEN")
    p.add_argument("--token-file", help="read the token from this file (first line)")
    p.add_argument("--image-key", default="observation/image", help="request key of the camera frame")
    p.add_argument("--view", action="append", metavar="CAMERA=KEY",
                   help="request key of another camera the model reads (repeatable; default "
                        "wrist=observation/wrist_image)")
    p.add_argument("--state-key", action="append", metavar="RAW=KEY",
                   help="embodiment raw key = request key (default state=observation/state)")
    p.add_argument("--prompt-key", default="prompt", help="request key of the instruction")
    _inference_args(p)


def _inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=4,
                   help="denoising steps per chunk (0: the action prior's chunk, models with action_prior)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="where the Generator runs per denoising step (onnxruntime: CPU, exported once and cached "
                        "in the checkpoint's export/ folder)")
    p.add_argument("--int8", action="store_true", help="int8 Generator weights (with --backend onnxruntime)")
    p.add_argument("--compile", action="store_true", help="torch.compile the Generator (CUDA graphs on a GPU)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="bfloat16: on CUDA")


def _inference_config(args: argparse.Namespace):
    from cosmos3_robot.runtime import InferenceConfig

    return InferenceConfig(steps=args.steps, device=args.device, backend=args.backend, int8=args.int8,
                           compile=args.compile, dtype=args.dtype)


def _cmd_export(args: argparse.Namespace) -> int:
    from cosmos3_robot.runtime.export import export_generator_step
    from cosmos3_robot.runtime.policy import Cosmos3Policy, InferenceConfig

    try:
        policy = Cosmos3Policy.from_checkpoint(args.checkpoint, InferenceConfig())
        report = export_generator_step(policy.model, args.out, int8=args.int8, opset=args.opset)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.to_json())
    print(f"[export] {report.path}: onnxruntime vs torch max abs error {report.max_abs_error:.2e} "
          f"(outputs up to {report.max_abs_reference:.2f}). TensorRT: trtexec --onnx={report.path} --fp16 "
          f"--minShapes/--optShapes/--maxShapes for tokens, prefix_k, prefix_v, cos, sin, bias, group")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run or checkpoint folder")
    p.add_argument("--out", required=True, help="the .onnx file to write (a .json report goes beside it)")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the linear weights")
    p.add_argument("--opset", type=int, default=17)


def _cmd_node(args: argparse.Namespace) -> int:
    import yaml

    from cosmos3_robot.runtime.dds_node import DDSPolicyNode
    from cosmos3_robot.runtime.node_params import build_node, load_params

    try:
        params = load_params(args.params)
        for kv in args.set:
            if "=" not in kv:
                raise ValueError(f"--set {kv!r}: expected name=value")
            k, v = kv.split("=", 1)
            params[k] = yaml.safe_load(v)
        core, topics, policy = build_node(params)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = DDSPolicyNode(core, topics, domain_id=args.domain)
    print(f"[node] {policy.embodiment.name} policy on DDS domain {args.domain}: {list(topics.cameras.values())} + "
          f"{topics.state_topic} -> {topics.command_topic} at {core.config.control_hz:g} Hz", flush=True)
    try:
        node.run()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="ros2_ws/src/cosmos3_robot/config/policy.yaml",
                   help="the ROS 2 parameter YAML of the policy node")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter, e.g. --set checkpoint=runs/sim (repeatable)")
    p.add_argument("--domain", type=int, default=0, help="DDS domain id (ROS_DOMAIN_ID)")
