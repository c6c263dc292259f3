"""The CNN variant of the token-decoder methods (Dinomaly, INP-Former): this suite's, not the papers'.

The papers' models decode ViT tokens. On a CNN encoder the tapped stages are averaged onto one grid of
stride `cnn_stride` and concatenated, so each position is a token of width sum(C_l). The encoder groups (by
default the shallow half and the deep half of the stages) are channel slices of those tokens, and the
decoder groups the same channel slices of the fused decoder outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from uad.encoders import Encoder
from uad.methods.base import Features
from uad.nn.align import align_avgpool
from uad.nn.token_groups import fuse, stage_slices, take_channels


class StageTokens:
    """Mixin placed before a token-decoder method (`class DinomalyCNN(StageTokens, Dinomaly)`): it replaces
    the method's token width, `extract`, `tokens_and_targets` and `group_decoded`; the method keeps its
    bottleneck, decoder, map and loss. The method sets `cnn_stride`, `encoder_groups` and `decoder_groups`."""

    encoder: Encoder
    cnn_stride: int
    encoder_groups: list[list[int]]
    decoder_groups: list[list[int]]

    def __init__(self, encoder: Encoder, *args: Any, **kwargs: Any) -> None:
        super().__init__(encoder, *args, **kwargs)
        self.channel_groups = stage_slices(encoder.channels, self.encoder_groups)

    @staticmethod
    def token_width(encoder: Encoder) -> int:
        return sum(encoder.channels)

    def extract(self, images: Tensor) -> Features:
        stages = self.encoder.feature_maps(images)  # per stage (B, C_l, H_l, W_l)
        return {"aligned": align_avgpool(stages, self.encoder.strides, self.cnn_stride)}  # (B, C, h, w)

    def tokens_and_targets(self, features: Features) -> tuple[Tensor, list[Tensor]]:
        """The tokens (B, h*w, C) and the encoder groups G x (B, C_g, h, w), channel slices of the tokens."""
        aligned = features["aligned"]  # (B, C, h, w)
        return aligned.flatten(2).transpose(1, 2), [take_channels(aligned, s) for s in self.channel_groups]

    def group_decoded(self, reverse: Sequence[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """The decoder groups: the same channel slices of each group's fused (reversed) block outputs."""
        maps = [d.transpose(1, 2).unflatten(2, grid) for d in reverse]  # (B, h*w, C) -> (B, C, h, w)
        return [
            take_channels(fuse(maps, g), s)
            for g, s in zip(self.decoder_groups, self.channel_groups, strict=True)
        ]
