"""Latency per action chunk, ours and LeRobot's ACT / Diffusion Policy, in the same run.

For each preset, mode (actions only; the same with the instruction's prefix cached across
requests as the policy runtime does; video + actions; forward dynamics), number of
denoising steps and Generator backend (torch eager; torch.compile; onnxruntime fp32 and
int8 on a CPU; bf16 and bf16 with CUDA graphs on a GPU): median and p95 milliseconds per
chunk for one observation (batch 1) after warm-up, timed with CUDA events on a GPU. Then
LeRobot's ACT and Diffusion Policy (random weights, no pretrained backbone, the same image
size and chunk length) on the same observation, and the ratio of each row to ACT. Peak RSS
(and peak CUDA memory on a GPU) at the end.

    .venv/bin/python benchmarks/inference_latency.py                    # the issue's CPU table
    .venv/bin/python benchmarks/inference_latency.py --presets compact --device cuda \\
        --backends torch torch-bf16 torch-bf16-graphs
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from typing import Callable

import torch

BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "torch-bf16", "torch-bf16-graphs")


def timed(fn: Callable[[], object], repeat: int, warmup: int, device: str) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(round(0.95 * (len(out) - 1))))]


def inference_config(backend: str, device: str):
    from cosmos3_robot.runtime.policy import InferenceConfig

    return InferenceConfig(device=device, backend="onnxruntime" if backend.startswith("onnxruntime") else "torch",
                           int8=backend.endswith("int8"), compile=backend in ("torch-compile", "torch-bf16-graphs"),
                           dtype="bfloat16" if "bf16" in backend else "float32")


def ours(preset_name: str, mode: str, steps: int, chunk: int, device: str, repeat: int, warmup: int,
         backend: str = "torch"):
    from cosmos3_robot.model import Cosmos3, WorldBatch, preset
    from cosmos3_robot.runtime.policy import generator_backend

    cfg = preset(preset_name)
    torch.manual_seed(0)
    model = Cosmos3(cfg).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        step_backend = generator_backend(model, inference_config(backend, device), tmp)
    S = cfg.image_size
    video = torch.rand(1, 1, 3, S, S, device=device) * 2 - 1
    actions = torch.rand(1, chunk, 10, device=device) * 2 - 1 if mode == "forward_dynamics" else None
    batch = WorldBatch(text=["put the red cube on the green pad"], embodiment=["sim_arm"], video=video,
                       n_context_frames=1, actions=actions, fps=10.0, control_hz=10.0)
    kw = {"steps": steps, "n_actions": chunk, "action_dim": 10, "backend": step_backend}
    if mode.endswith("+cache") or backend != "torch":  # the instruction's AR prefix K/V reused
        kw["prefix_cache"] = {}
    mode = mode.removesuffix("+cache")
    if mode != "policy_actions":
        kw["n_future_frames"] = cfg.temporal_compression

    @torch.inference_mode()
    def run():
        model.generate(mode, batch, **kw)

    result = timed(run, repeat, warmup + (2 if "compile" in backend or "graphs" in backend else 0), device)
    return result, model.num_parameters(), S


def lerobot_peers(image_size: int, chunk: int, device: str, repeat: int, warmup: int, diffusion_steps: int):
    """ACT and Diffusion Policy from LeRobot on one observation; {} when lerobot is missing."""
    from common import make_peers

    peers = make_peers(image_size, chunk, device, diffusion_steps=diffusion_steps)
    obs = {"observation.images.front": torch.rand(1, 3, image_size, image_size, device=device),
           "observation.state": torch.rand(1, 8, device=device)}
    out = {}
    if "LeRobot ACT" in peers:
        act = peers["LeRobot ACT"].eval()

        @torch.inference_mode()
        def run_act():
            act.predict_action_chunk(obs)

        out["LeRobot ACT"] = (timed(run_act, repeat, warmup, device), sum(p.numel() for p in act.parameters()))
        diff = peers["LeRobot Diffusion"].eval()
        dobs = {k: torch.stack([v, v], 1) for k, v in obs.items()}  # (B, n_obs_steps, ...)

        @torch.inference_mode()
        def run_diff():
            diff.diffusion.generate_actions({**dobs, "observation.images": dobs["observation.images.front"][:, :, None]})

        out[f"LeRobot Diffusion ({diffusion_steps} steps)"] = (timed(run_diff, repeat, warmup, device),
                                                               sum(p.numel() for p in diff.parameters()))
    return out


def main(argv: list[str] | None = None) -> None:
    from rich.table import Table

    from common import print_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--modes", nargs="+", default=["policy_actions", "policy_actions+cache", "policy",
                                                   "forward_dynamics"],
                    help="generation modes; '+cache' reuses the instruction's AR prefix across requests "
                         "(always on for backends other than torch)")
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 4, 10])
    ap.add_argument("--backends", nargs="+", choices=BACKENDS,
                    help="Generator backends (default: torch, onnxruntime, onnxruntime-int8 on a CPU; "
                         "torch, torch-bf16, torch-bf16-graphs on CUDA)")
    ap.add_argument("--backend-modes", nargs="+", default=["policy_actions"],
                    help="modes measured with the non-default backends")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--diffusion-steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    backends = args.backends or (["torch", "torch-bf16", "torch-bf16-graphs"] if cuda else
                                 ["torch", "onnxruntime", "onnxruntime-int8"])
    rows = []
    for name in args.presets:
        for backend in backends:
            modes = args.modes if backend == "torch" else args.backend_modes
            for mode in modes:
                for steps in args.steps:
                    (med, p95), params, size = ours(name, mode, steps, args.chunk, args.device, args.repeat,
                                                    args.warmup, backend)
                    rows.append((f"cosmos3 {name}", mode, backend, str(steps), size, params, med, p95))
                    gc.collect()
    peers = lerobot_peers(64, args.chunk, args.device, args.repeat, args.warmup, args.diffusion_steps)
    act_med = peers["LeRobot ACT"][0][0] if "LeRobot ACT" in peers else None
    for label, ((med, p95), params) in peers.items():
        rows.append((label, "actions", "torch", "-", 64, params, med, p95))
    table = Table(title=f"Latency per action chunk (batch 1, chunk {args.chunk}, {args.device}, "
                        f"{torch.get_num_threads()} threads)")
    for col in ("model", "mode", "backend", "steps", "image", "params", "median ms", "p95 ms", "vs ACT"):
        table.add_column(col, justify="right" if col not in ("model", "mode", "backend") else "left")
    for model, mode, backend, steps, size, params, med, p95 in rows:
        ratio = f"{med / act_med:.2f}x" if act_med else "-"
        table.add_row(model, mode, backend, steps, f"{size}px", f"{params / 1e6:.2f}M", f"{med:.1f}", f"{p95:.1f}",
                      ratio)
    print_results(table, args.device, bool(peers), width=130)


if __name__ == "__main__":
    main()
