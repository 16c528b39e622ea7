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
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "torch-bf16", "torch-bf16-graphs")
MODES = ("policy_actions", "policy", "forward_dynamics")


@dataclass
class Runner:
    """One row of the table: what it measures and a call that produces one chunk."""

    model: str
    mode: str
    backend: str
    steps: str
    params: int
    fn: Callable[[], object]
    warmup: int
    samples: list[float] = field(default_factory=list)


def time_once(fn: Callable[[], object], device: str) -> float:
    """Milliseconds of one call (CUDA events on a GPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def measure(runners: list[Runner], repeat: int, device: str) -> None:
    """Warm every runner up, then time them round-robin, ``repeat`` rounds: every row sees
    the same machine conditions (a shared, throttled or noisy CPU shifts all rows alike, so
    the ratios hold even when the absolute numbers drift)."""
    for r in runners:
        for _ in range(r.warmup):
            r.fn()
    for _ in range(repeat):
        for r in runners:
            r.samples.append(time_once(r.fn, device))


def median_p95(samples: list[float]) -> tuple[float, float]:
    out = sorted(samples)
    return statistics.median(out), out[min(len(out) - 1, int(round(0.95 * (len(out) - 1))))]


def inference_config(backend: str, device: str):
    from cosmos3_robot.runtime.policy import InferenceConfig

    return InferenceConfig(device=device, backend="onnxruntime" if backend.startswith("onnxruntime") else "torch",
                           int8=backend.endswith("int8"), compile=backend in ("torch-compile", "torch-bf16-graphs"),
                           dtype="bfloat16" if "bf16" in backend else "float32")


def our_runners(preset_name: str, modes: list[str], steps_list: list[int], backends: list[str],
                backend_modes: list[str], chunk: int, device: str, warmup: int, tmp: str) -> list[Runner]:
    """Runners for one preset: every backend x mode x steps (backends other than torch
    eager: ``backend_modes`` only). One model per backend (compiling or casting changes it)."""
    from cosmos3_robot.model import Cosmos3, WorldBatch, preset
    from cosmos3_robot.runtime.policy import generator_backend

    cfg = preset(preset_name)
    S = cfg.image_size
    video = torch.rand(1, 1, 3, S, S, device=device) * 2 - 1
    runners = []
    for backend in backends:
        torch.manual_seed(0)
        model = Cosmos3(cfg).to(device).eval()
        step_backend = generator_backend(model, inference_config(backend, device), f"{tmp}/{preset_name}-{backend}")
        for mode_name in (modes if backend == "torch" else backend_modes):
            mode = mode_name.removesuffix("+cache")
            for steps in steps_list:
                actions = torch.rand(1, chunk, 10, device=device) * 2 - 1 if mode == "forward_dynamics" else None
                batch = WorldBatch(text=["put the red cube on the green pad"], embodiment=["sim_arm"], video=video,
                                   n_context_frames=1, actions=actions, fps=10.0, control_hz=10.0,
                                   state=torch.rand(1, 10, device=device) * 2 - 1)  # read by state_input presets
                kw = {"steps": steps, "n_actions": chunk, "action_dim": 10, "backend": step_backend}
                if mode_name.endswith("+cache") or backend != "torch":  # the instruction's AR prefix K/V reused
                    kw["prefix_cache"] = {}
                if mode != "policy_actions":
                    kw["n_future_frames"] = cfg.temporal_compression

                @torch.inference_mode()
                def run(model=model, mode=mode, batch=batch, kw=kw):
                    model.generate(mode, batch, **kw)

                runners.append(Runner(f"cosmos3 {preset_name}", mode_name, backend, str(steps),
                                      model.num_parameters(), run,
                                      warmup + (2 if "compile" in backend or "graphs" in backend else 0)))
    return runners


def peer_runners(image_size: int, chunk: int, device: str, warmup: int, diffusion_steps: int) -> list[Runner]:
    """ACT and Diffusion Policy from LeRobot on one observation; [] when lerobot is missing."""
    from cosmos3_robot.benchmarks.common import make_peers

    peers = make_peers(image_size, chunk, device, diffusion_steps=diffusion_steps)
    if "LeRobot ACT" not in peers:
        return []
    obs = {"observation.images.front": torch.rand(1, 3, image_size, image_size, device=device),
           "observation.state": torch.rand(1, 8, device=device)}
    act = peers["LeRobot ACT"].eval()
    diff = peers["LeRobot Diffusion"].eval()
    dobs = {k: torch.stack([v, v], 1) for k, v in obs.items()}  # (B, n_obs_steps, ...)
    dobs["observation.images"] = dobs["observation.images.front"][:, :, None]

    @torch.inference_mode()
    def run_act():
        act.predict_action_chunk(obs)

    @torch.inference_mode()
    def run_diff():
        diff.diffusion.generate_actions(dobs)

    def params(p):
        return sum(x.numel() for x in p.parameters())

    return [Runner("LeRobot ACT", "actions", "torch", "-", params(act), run_act, warmup),
            Runner(f"LeRobot Diffusion ({diffusion_steps} steps)", "actions", "torch", "-", params(diff), run_diff,
                   warmup)]


def main(argv: list[str] | None = None) -> list[Runner]:
    from rich.table import Table

    from cosmos3_robot.benchmarks.common import print_results
    from cosmos3_robot.model import preset

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
    for mode in args.modes + args.backend_modes:
        if mode.removesuffix("+cache") not in MODES:
            ap.error(f"mode {mode!r}: expected one of {list(MODES)}, optionally with '+cache'")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    backends = args.backends or (["torch", "torch-bf16", "torch-bf16-graphs"] if cuda else
                                 ["torch", "onnxruntime", "onnxruntime-int8"])
    with tempfile.TemporaryDirectory() as tmp:
        runners = [r for name in args.presets
                   for r in our_runners(name, args.modes, args.steps, backends, args.backend_modes, args.chunk,
                                        args.device, args.warmup, tmp)]
        peers = peer_runners(64, args.chunk, args.device, args.warmup, args.diffusion_steps)
        measure(runners + peers, args.repeat, args.device)
    act_med = median_p95(peers[0].samples)[0] if peers else None
    table = Table(title=f"Latency per action chunk (batch 1, chunk {args.chunk}, {args.device}, "
                        f"{torch.get_num_threads()} threads; {args.repeat} rounds, rows interleaved)")
    for col in ("model", "mode", "backend", "steps", "image", "params", "median ms", "p95 ms", "vs ACT"):
        table.add_column(col, justify="right" if col not in ("model", "mode", "backend") else "left")
    sizes = {name: preset(name).image_size for name in args.presets}
    for r in runners + peers:
        med, p95 = median_p95(r.samples)
        ratio = f"{med / act_med:.2f}x" if act_med else "-"
        size = sizes.get(r.model.removeprefix("cosmos3 "), 64)
        table.add_row(r.model, r.mode, r.backend, r.steps, f"{size}px", f"{r.params / 1e6:.2f}M", f"{med:.1f}",
                      f"{p95:.1f}", ratio)
    print_results(table, args.device, bool(peers), width=130)
    return runners + peers


if __name__ == "__main__":
    main()
