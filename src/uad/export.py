"""`mode=export`: one self-contained graph (ONNX or TorchScript) of a trained model, checked against PyTorch
before it is written.

The graph takes `image`, float32 (N, 3, S, S) RGB in [0, 1] at the protocol's input size S (the caller
resizes, and crops, as the sidecar JSON says), ImageNet-normalises it, runs the network and applies the
protocol's map post-processing and image score (`uad.inference.Scorer`, the evaluation's own calls); it
returns `anomaly_map` (N, h, w) and `score` (N,). The batch is dynamic. Before the file is written, the
graph is run (onnxruntime, or `torch.jit.load`) on random images at two batch sizes and compared with
eager PyTorch; a difference above `export.tolerance` (relative to the largest reference value) refuses the
export, so no graph that disagrees with PyTorch leaves the building (anomalib #2303).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from uad.builders import build_protocol
from uad.checkpoint import load_module
from uad.errors import ConfigError, UserError
from uad.inference import Scorer
from uad.methods.base import AnomalyNet
from uad.metrics.protocol import EvalProtocol
from uad.utils.io import write_json
from uad.utils.logging import get_logger

log = get_logger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
OUTPUTS = ("anomaly_map", "score")
SIDECAR_FORMAT = "uad-export/1"


class ExportError(UserError, RuntimeError):
    """The exported graph disagrees with PyTorch beyond the tolerance; nothing was written."""


def relative_error(got: Tensor, ref: Tensor) -> float:
    """max |got - ref| / max |ref| (the largest reference value sets the scale; 0 / 0 = 0)."""
    scale = ref.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((got - ref).abs().max() / scale)


def _onnx(scorer: Scorer, example: Tensor, path: Path, opset: int) -> Callable[[Tensor], list[Tensor]]:
    import onnxruntime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values taken as constants
        torch.onnx.export(
            scorer,
            (example,),
            str(path),
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in ("image", *OUTPUTS)},
            opset_version=opset,
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: [torch.from_numpy(o) for o in session.run(list(OUTPUTS), {"image": x.numpy()})]


def _torchscript(scorer: Scorer, example: Tensor, path: Path, opset: int) -> Callable[[Tensor], list[Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(scorer, example, check_trace=False).save(str(path))
    loaded = _jit_load(path)
    return lambda x: list(loaded(x))


def export_graph(
    net: AnomalyNet,
    protocol: EvalProtocol,
    path: str | Path,
    fmt: str = "onnx",
    opset: int = 17,
    check_images: int = 4,
    tolerance: float = 1e-4,
) -> dict[str, float]:
    """Write `net` + the protocol's scoring to `path` as an ONNX or TorchScript graph, after checking it
    against eager PyTorch on `check_images` random images (and a batch of one); returns the measured
    relative errors. Raises `ExportError` (and writes nothing) above `tolerance`."""
    if fmt not in FORMATS:
        raise ConfigError(f"export.format '{fmt}' is not one of {sorted(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(net.cpu().eval(), protocol, raw_input=True).eval()
    size = protocol.input_size
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, size, size, generator=generator)  # (N, 3, S, S) RGB in [0, 1]
    partial = path.with_name(path.name + ".partial")
    run = (_onnx if fmt == "onnx" else _torchscript)(scorer, example, partial, opset)
    images = torch.rand(max(2, check_images), 3, size, size, generator=generator)
    errors = {name: 0.0 for name in OUTPUTS}
    with torch.no_grad():
        for batch in (images, images[:1]):  # another batch size than the traced one: the batch is dynamic
            for name, got, ref in zip(OUTPUTS, run(batch), scorer(batch)):
                if got.shape != ref.shape:
                    partial.unlink()
                    raise ExportError(
                        f"{fmt} output '{name}' has shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}"
                    )
                errors[name] = max(errors[name], relative_error(got, ref))
    worst = max(errors.values())
    if not worst <= tolerance:
        partial.unlink()
        raise ExportError(
            f"the {fmt} graph differs from PyTorch by {worst:.3g} relative "
            f"(maps {errors['anomaly_map']:.3g}, scores {errors['score']:.3g}) > "
            f"export.tolerance={tolerance}; nothing written. Try another export.opset or "
            f"export.format=torchscript, and report the method and backbone"
        )
    partial.replace(path)
    return errors


def export(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """`mode=export`: the graph of `ckpt_path` as `model.onnx` / `model.pt` plus `model.json` (input size,
    resize rule, classes, thresholds, parity) in `output_dir`."""
    if not cfg.get("ckpt_path"):
        raise ConfigError("mode=export needs ckpt_path=<run folder>/checkpoints/last.ckpt")
    options = cfg.export
    fmt = str(options.get("format", "onnx"))
    if fmt not in FORMATS:
        raise ConfigError(f"export.format '{fmt}' is not one of {sorted(FORMATS)}")
    module, cfg = load_module(cfg.ckpt_path, cfg)
    protocol = build_protocol(cfg)
    path = output_dir / f"model{FORMATS[fmt]}"
    errors = export_graph(
        module.net,
        protocol,
        path,
        fmt,
        int(options.get("opset", 17)),
        int(options.get("check_images", 4)),
        float(options.get("tolerance", 1e-4)),
    )
    size = protocol.input_size
    sidecar = {
        "format": SIDECAR_FORMAT,
        "graph": path.name,
        "graph_format": fmt,
        "input": {"name": "image", "shape": ["N", 3, size, size], "dtype": "float32", "range": [0, 1]},
        "outputs": {"anomaly_map": ["N", protocol.metric_size, protocol.metric_size], "score": ["N"]},
        "input_size": size,
        "preprocess": {
            "decode": "RGB (grayscale and palette converted, alpha dropped, 16 bit scaled by 1/257)",
            "resize": protocol.input.resize,
            "interpolation": protocol.input.interpolation,
            "image_size": protocol.input.image_size,
            "crop_size": protocol.input.crop_size,
            "normalisation": "inside the graph (ImageNet mean and std)",
        },
        "classes": module.extra.get("classes"),
        "thresholds": module.extra.get("thresholds"),
        "decision": "anomalous iff score > threshold (per class; global for other images)",
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "protocol": protocol.as_dict(),
        "checkpoint": str(cfg.ckpt_path),
        "parity": {"relative_error": errors, "tolerance": float(options.get("tolerance", 1e-4))},
    }
    write_json(output_dir / "model.json", sidecar)
    log.info(
        "exported %s -> %s (parity with PyTorch: maps %.2g, scores %.2g relative)",
        fmt,
        path,
        errors["anomaly_map"],
        errors["score"],
    )
    return {"graph": str(path), "sidecar": str(output_dir / "model.json"), **errors}


def run_graph(path: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported graph on (N, 3, S, S) float32 RGB images in [0, 1] -> maps (N, h, w), scores (N,)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        maps, scores = session.run(list(OUTPUTS), {"image": images.astype(np.float32)})
        return maps, scores
    with torch.no_grad():
        maps, scores = _jit_load(path)(torch.from_numpy(images.astype(np.float32)))
    return maps.numpy(), scores.numpy()


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        return torch.jit.load(str(path))
