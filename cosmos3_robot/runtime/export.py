"""Export of the Generator step to ONNX, and onnxruntime as a Generator backend.

A denoising step is one pass of the Generator tower over the DM tokens against cached
keys/values (the AR prefix, plus clean DM tokens with ``block_causal``). That pass is what
runs ``steps`` times per chunk, so it is what gets exported: :class:`GeneratorStep` is the
tower as one graph with plain tensor inputs (the :class:`~cosmos3_robot.model.sequence.GeneratorBackend`
signature), which onnxruntime runs on CPUs and TensorRT builds an engine from on Jetson
(``trtexec --onnx=generator_step.onnx --fp16`` with shape profiles for ``L`` and ``Lp``).
Everything else per request (the AR prefix, the video encoder, embeddings, heads, the
sampler) stays in torch and runs once per chunk or is tiny.

    path = export_generator_step(model, "out/generator_step.onnx")       # + parity report
    step = OrtGeneratorStep(path)
    model.generate("policy_actions", batch, backend=step, prefix_cache={}, ...)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cosmos3_robot.model.cosmos3 import Cosmos3

INPUTS = ("tokens", "prefix_k", "prefix_v", "cos", "sin", "bias", "mods", "final_mod", "group")
OUTPUTS = ("hidden", "keys", "values")


class GeneratorStep(nn.Module):
    """The Generator tower of ``model`` as one graph (shapes in ``GeneratorBackend``).

    Calls the model's own layers (:meth:`MoTLayer.forward_dm`), so the exported graph is
    the same math as the torch path; only the attention mask arrives as an additive bias.
    """

    def __init__(self, model: Cosmos3):
        super().__init__()
        self.model = model

    def forward(self, tokens, prefix_k, prefix_v, cos, sin, bias, mods, final_mod, group):
        m = self.model
        x = tokens
        keys, values = [], []
        for i, layer in enumerate(m.core.layers):
            x, k, v = layer.forward_dm(x, None, cos, sin, prefix_k[i], prefix_v[i], bias, group, mods[i])
            keys.append(k)
            values.append(v)
        shift, scale = final_mod.index_select(1, group).split([m.config.dim] * 2, -1)
        return m.dm_final_norm(x) * (1 + scale) + shift, torch.stack(keys), torch.stack(values)


def example_inputs(model: Cosmos3, B: int = 1, L: int = 16, Lp: int = 40, S: int = 2,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the step's shapes (trace and parity check); the last ``Lp // 4``
    prefix keys are hidden by the bias, like text padding."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    H, hd, n = c.n_heads, c.head_dim, c.n_layers

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    angles = r(B, L, hd // 2, scale=3.0)
    bias = torch.zeros(B, 1, L, Lp + L)
    bias[..., Lp - Lp // 4: Lp] = float("-inf")
    group = torch.arange(L) * S // L
    return (r(B, L, c.dim), r(n, B, H, Lp, hd), r(n, B, H, Lp, hd), angles.cos(), angles.sin(), bias,
            r(n, 1, S, 6 * c.dim, scale=0.1), r(1, S, 2 * c.dim, scale=0.1), group)


@dataclass
class ExportReport:
    """What :func:`export_generator_step` wrote and how close onnxruntime is to torch."""

    path: str
    int8: bool
    opset: int
    size_mb: float
    max_abs_error: float  # ORT vs torch on the hidden output, random inputs
    max_abs_reference: float  # magnitude of that output, for scale

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def export_generator_step(model: Cosmos3, path: str | os.PathLike[str], *, int8: bool = False,
                          opset: int = 17) -> ExportReport:
    """Write the Generator step of ``model`` as ONNX to ``path`` (float32; with ``int8``
    the linear layers' weights are then quantised by onnxruntime's dynamic int8
    quantisation, the fp32 graph kept beside it as ``*.fp32.onnx``). Dynamic axes: batch
    ``B``, tokens ``L``, prefix ``Lp`` and streams ``S``. Checks the file with onnxruntime
    against torch and returns the report (also written to ``*.json``)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the export extra
        raise RuntimeError("ONNX export needs onnx and onnxruntime: pip install 'cosmos3-robot[export]'") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    step = GeneratorStep(model).eval()
    args = example_inputs(model)
    fp32 = path.with_suffix(".fp32.onnx") if int8 else path
    dynamic = {"tokens": {0: "B", 1: "L"}, "prefix_k": {1: "B", 3: "Lp"}, "prefix_v": {1: "B", 3: "Lp"},
               "cos": {0: "B", 1: "L"}, "sin": {0: "B", 1: "L"}, "bias": {0: "B", 2: "L", 3: "Lk"},
               "mods": {2: "S"}, "final_mod": {1: "S"}, "group": {0: "L"},
               "hidden": {0: "B", 1: "L"}, "keys": {1: "B", 3: "L"}, "values": {1: "B", 3: "L"}}
    with torch.no_grad():
        # The TorchScript exporter: no onnxscript dependency, dynamic axes by name, and it
        # keeps the graph a plain op list that TensorRT's parser takes.
        torch.onnx.export(step, args, str(fp32), input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    # Parity at a shape other than the traced one, so the dynamic axes are exercised too.
    check = example_inputs(model, B=2, L=24, Lp=56, S=3, seed=1)
    with torch.no_grad():
        ref = step(*check)[0]
    got = OrtGeneratorStep(path)(*check)[0]
    report = ExportReport(str(path), int8, opset, path.stat().st_size / 2**20,
                          float((got - ref).abs().max()), float(ref.abs().max()))
    path.with_suffix(".json").write_text(report.to_json())
    return report


class OrtGeneratorStep:
    """An exported Generator step run by onnxruntime; a ``GeneratorBackend`` for
    :meth:`Cosmos3.generate`. Tensors in and out are CPU float32 (numpy views, no copies).
    ``threads``: onnxruntime's intra-op threads; ``spin``: let them busy-wait between runs."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1, spin: bool = False):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread by default: at batch 1 the step's GEMMs are too small to split well,
        # and measured on 2 cores more threads were slower or erratic (with spinning).
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Between steps torch runs (embeddings, sampler): by default ORT's workers sleep
        # instead of spinning, which would take the cores from it.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUTS):
            raise ValueError(f"{self.path}: not a Generator step export (inputs {names}, expected {list(INPUTS)})")

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feeds = {}
        for name, t in zip(INPUTS, tensors):
            t = t.detach().cpu().contiguous()
            feeds[name] = (t.long() if name == "group" else t.float()).numpy()
        return tuple(torch.from_numpy(o) for o in self.session.run(list(OUTPUTS), feeds))  # type: ignore[return-value]
