"""The frozen feature extractor every method wraps: a timm model cut at its last tap, always in eval mode."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.models.efficientnet import EfficientNetFeatures
from torch import Tensor, nn

from uad.encoders.padding import freeze_same_padding, meta_forward
from uad.encoders.registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, get_spec
from uad.encoders.weights import (
    EncoderWeightsError,
    load_into,
    match_keys,
    package_weights_path,
    read_state_dict,
)
from uad.errors import ConfigError


class Encoder(nn.Module):
    """Frozen multi-level feature extractor.

    Input: images normalised with ImageNet mean/std (the data pipeline's convention); an encoder whose
    weights expect other statistics (the EfficientNet-Lite family) re-normalises internally.
    `forward` returns one tensor per tap: CNN maps (B, C, H, W), or ViT tokens (B, P + h*w, D) with the
    P prefix tokens (cls, registers) first. `feature_maps` always returns maps.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        weights: str | Mapping[str, Tensor] | None = None,
        taps: Sequence[int] | None = None,
        input_size: int = 224,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.spec: EncoderSpec = get_spec(name)
        self.name = name
        self.taps = tuple(int(t) for t in (taps if taps is not None else self.spec.taps))
        self.input_size = int(input_size)
        self.weights_source = "random init"
        # a CNN given a channels-last (NHWC) input convolves NHWC: oneDNN runs it 1.3-1.6x faster than NCHW
        # (EfficientNet-B4, WRes50, Res34 at batch 16 on 2 CPU cores; maps within 5e-7), the GPU tensor-core
        # layout. The weights keep their layout: stored NHWC too they gave no more speed, other rounding.
        self.channels_last = channels_last and self.spec.kind == "cnn"
        if self.spec.kind == "cnn":
            self.net = self._build_cnn(pretrained, weights)
            self.channels = list(self.net.feature_info.channels())
            self.strides = list(self.net.feature_info.reduction())
            self.num_prefix_tokens = 0
        else:
            self.net = self._build_vit(pretrained, weights)
            self.channels = [self.net.embed_dim] * len(self.taps)
            self.strides = [self.net.patch_embed.patch_size[0]] * len(self.taps)
            self.num_prefix_tokens = self.net.num_prefix_tokens
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(self.spec.std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(self.spec.mean)) / torch.tensor(self.spec.std)
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    # -- construction -----------------------------------------------------------------------------

    def _build_cnn(self, pretrained: bool, weights: str | Mapping[str, Tensor] | None) -> nn.Module:
        spec = self.spec
        kwargs = {"features_only": True, "out_indices": self.taps}
        if pretrained and weights is None and spec.package is None:
            net = self._from_hub(**kwargs)
        else:
            net = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
            if pretrained or weights is not None:
                path = weights if weights is not None else package_weights_path(spec)
                self.weights_source = _source(path)
                with torch.device("meta"):
                    full = timm.create_model(spec.timm_name, pretrained=False)
                state = match_keys(read_state_dict(path, spec), full, f"weights '{self.weights_source}'")
                load_into(net, state, f"weights '{self.weights_source}'")
        if isinstance(net, EfficientNetFeatures):  # it runs every block; keep those up to the last tap
            last = net.feature_info.module_name()[-1]  # e.g. "blocks.4"
            net.blocks = net.blocks[: int(last.split(".")[1]) + 1 if last.startswith("blocks.") else 0]
        if spec.static_padding:
            freeze_same_padding(net, spec.native_size)
        return net

    def _build_vit(self, pretrained: bool, weights: str | Mapping[str, Tensor] | None) -> nn.Module:
        spec = self.spec
        patch = spec.patch_size
        if self.input_size % patch:
            raise ConfigError(
                f"backbone '{spec.name}' has {patch}-pixel patches; the input size {self.input_size} "
                f"is not a multiple of {patch} (Dinomaly uses 392 = 28 x 14)"
            )
        if max(self.taps) >= spec.depth:
            raise ConfigError(f"backbone.taps {self.taps} exceed the blocks of '{spec.name}'")
        kwargs = {"img_size": self.input_size, "num_classes": 0}
        if spec.pos_offset is not None:  # keep the native grid; `_pos_embed` resamples it per input
            kwargs = {"img_size": spec.native_size, "num_classes": 0, "dynamic_img_size": True}
        if pretrained and weights is None:
            net = self._from_hub(**kwargs)
        else:
            net = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
            if weights is not None:
                from timm.models.vision_transformer import checkpoint_filter_fn

                self.weights_source = _source(weights)
                state = checkpoint_filter_fn(read_state_dict(weights, spec), net)
                load_into(net, state, f"weights '{self.weights_source}'")
        net.blocks = net.blocks[: max(self.taps) + 1]  # the encoder runs only up to its last tap
        net.norm = nn.Identity()
        return net

    def _from_hub(self, **kwargs) -> nn.Module:
        try:
            net = timm.create_model(self.spec.hub_name, pretrained=True, **kwargs)
        except Exception as err:
            from uad.encoders.weights import how_to_fix

            raise EncoderWeightsError(
                f"could not get pretrained weights for backbone '{self.spec.name}' ('{self.spec.hub_name}') "
                f"from the timm hub: {type(err).__name__}: {err}. {how_to_fix(self.spec)}"
            ) from err
        self.weights_source = f"timm hub: {self.spec.hub_name}"
        return net

    # -- behaviour --------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Encoder:
        """Stay in eval mode whatever Lightning asks: frozen BatchNorm statistics, no dropout."""
        return super().train(False)

    def grid_sizes(self, input_size: int | None = None) -> list[int]:
        """Side of each tap's grid: measured for CNNs (static padding can give other sizes than
        ceil(size / stride) when the size is not a multiple of the stride), patches per side for ViTs."""
        size = input_size or self.input_size
        if self.spec.kind == "cnn":
            return [int(f.shape[-2]) for f in meta_forward(self.net, size)]
        return [math.ceil(size / s) for s in self.strides]

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        x = images * self.in_scale + self.in_shift
        if self.channels_last:  # the maps go back to the usual layout
            return [f.contiguous() for f in self.net(x.contiguous(memory_format=torch.channels_last))]
        if self.spec.kind == "cnn":
            return list(self.net(x))
        net = self.net
        x = net.patch_embed(x)
        x = net._pos_embed(x) if self.spec.pos_offset is None else self._pos_embed(x)  # (B, P + h*w, D)
        x = net.norm_pre(net.patch_drop(x))
        taps, outs = set(self.taps), []
        for index, block in enumerate(net.blocks):
            x = block(x)
            if index in taps:
                outs.append(x)
        return outs

    def _pos_embed(self, x: Tensor) -> Tensor:
        """(B, h, w, D) patch embeddings -> (B, P + h*w, D) tokens [cls, registers, patches], with the
        positional embedding resampled as the original DINOv2 code does (cls position folded into the
        cls token when the model has no_embed_class; registers get no position)."""
        net = self.net
        batch, h, w, dim = x.shape
        pos = net.pos_embed
        cls_pos = None
        if not net.no_embed_class:
            cls_pos, pos = pos[:, :1], pos[:, net.num_prefix_tokens :]
        x = x.reshape(batch, h * w, dim) + resample_grid_pos_embed(pos, (h, w), self.spec.pos_offset)
        prefix = []
        if net.cls_token is not None:
            cls = net.cls_token if cls_pos is None else net.cls_token + cls_pos
            prefix.append(cls.expand(batch, -1, -1))
        if net.reg_token is not None:
            prefix.append(net.reg_token.expand(batch, -1, -1))
        return torch.cat([*prefix, x], dim=1)

    def tokens_to_map(self, tokens: Tensor) -> Tensor:
        """(B, P + h*w, D) -> (B, D, h, w), dropping the prefix tokens."""
        patches = tokens[:, self.num_prefix_tokens :]
        side = math.isqrt(patches.shape[1])
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        feats = self(images)
        return feats if self.spec.kind == "cnn" else [self.tokens_to_map(t) for t in feats]


def _source(weights: str | Mapping[str, Tensor]) -> str:
    """Where the weights came from, for `describe` and the logs: the file, or a state dict in memory."""
    return "a state dict given in memory" if isinstance(weights, Mapping) else str(weights)


def resample_grid_pos_embed(pos: Tensor, size: tuple[int, int], offset: float) -> Tensor:
    """(1, n0*n0, D) positional embedding of a square grid -> (1, h*w, D), as DINOv2's
    `interpolate_pos_encoding`: bicubic with scale factor ((h + offset) / n0, (w + offset) / n0), no
    antialias, align_corners False (the offset avoids a floating-point off-by-one in the output size and
    shifts the sampling points slightly; timm's size-based antialiased resampling gives other values).
    The native grid is returned unchanged."""
    n0 = math.isqrt(pos.shape[1])
    h, w = int(size[0]), int(size[1])  # constants when traced for export: the grid is fixed by the input size
    if (h, w) == (n0, n0):
        return pos
    grid = pos.float().reshape(1, n0, n0, -1).permute(0, 3, 1, 2)  # (1, D, n0, n0)
    grid = F.interpolate(
        grid, scale_factor=((h + offset) / n0, (w + offset) / n0), mode="bicubic", antialias=False
    )  # (1, D, h, w)
    if grid.shape[-2:] != (h, w):
        raise ValueError(f"positional embedding resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}")
    return grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pos.dtype)
