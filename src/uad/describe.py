"""`mode=describe`: build the configured network without training and report its parameters, the shapes
of its named tensors and its FLOPs per image (encoder and trainable part apart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from uad.builders import build_encoder, build_net, build_protocol
from uad.methods.base import MemoryBankNet
from uad.nn import attention as _attention  # noqa: F401  registers the CPU SDPA FLOP formula
from uad.utils.io import write_json


@torch.no_grad()
def describe(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    protocol = build_protocol(cfg)
    encoder = build_encoder(cfg, protocol)
    net = build_net(cfg, encoder).eval()
    images = torch.randn(1, 3, protocol.input_size, protocol.input_size)
    with FlopCounterMode(display=False) as counter:
        features = net.extract(images)
    encoder_flops = counter.get_total_flops()
    if isinstance(net, MemoryBankNet):  # a bank of this one image's patches, so that the map can be shown
        net.fit(features, torch.zeros(1, dtype=torch.long))
    with FlopCounterMode(display=False) as counter:
        output = net.reconstruct(features, tuple(images.shape[-2:]))
    trainable_flops = counter.get_total_flops()
    info = {
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "input_size": protocol.input_size,
        **net.parameter_counts(),
        "encoder": {
            "timm_model": encoder.spec.timm_name,
            "taps": list(encoder.taps),
            "channels": encoder.channels,
            "strides": encoder.strides,
            "weights": encoder.weights_source,
        },
        "shapes": {
            "taps": _shapes(encoder(images)),  # the encoder's raw output, one entry per tap
            "features": {name: _shapes(value) for name, value in features.items()},
            "anomaly_map": _shapes(output.anomaly_map),
            **{name: _shapes(value) for name, value in output.tensors.items()},
        },
        "gflops": (encoder_flops + trainable_flops) / 1e9,
        "gmacs": (encoder_flops + trainable_flops) / 2e9,
        "gmacs_encoder": encoder_flops / 2e9,
        "gmacs_trainable": trainable_flops / 2e9,
    }
    write_json(output_dir / "describe.json", info)
    _print_description(info)
    return info


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, list | tuple):
        return [_shapes(v) for v in value]
    if isinstance(value, dict):
        return {k: _shapes(v) for k, v in value.items()}
    return None


def _print_description(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['method']} on {info['backbone']} at {info['input_size']} px")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("trainable params", f"{info['trainable_params']:,}")
    table.add_row("frozen params", f"{info['frozen_params']:,}")
    for name, count in info["per_module"].items():
        table.add_row(f"  {name}", f"{count:,}")
    table.add_row(
        "GMACs / image (encoder + rest)",
        f"{info['gmacs']:.2f} ({info['gmacs_encoder']:.2f} + {info['gmacs_trainable']:.2f})",
    )
    for name, shape in info["shapes"].items():
        table.add_row(f"shape: {name}", str(shape))
    Console().print(table)
