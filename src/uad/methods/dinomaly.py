"""Dinomaly (Guo et al., CVPR 2025): "The less is more" philosophy for multi-class anomaly detection.

A frozen foundation ViT (DINOv2 with registers) is tapped at its eight middle blocks. The mean of the
taps passes a **noisy bottleneck** (an MLP whose dropout is the noise) and a decoder of eight ViT blocks
with **linear attention**, which cannot focus on single tokens and so does not learn an identity map.
Encoder taps and decoder outputs are fused in two groups (shallow encoder taps with the last decoder
blocks) and compared by **loose reconstruction**: one cosine distance per image and group, with hard
mining that shrinks the gradient of well-reconstructed points. The anomaly map is the mean over the
groups of the point-wise 1 - cos, upsampled to the input (bilinear, align_corners=True); the protocol
(`conf/protocol/dinomaly392.yaml`) resizes it to 256, smooths it and scores the mean of its top 1 %.

The structure follows the official code (`guojiajeremy/Dinomaly`: `models/uad.py` `ViTill`,
`dinomaly_*_uni.py`): all tokens, cls and registers included, pass bottleneck and decoder and are dropped
only before loss and map; the decoder's outputs are reversed before grouping.

On a CNN backbone the same code runs as `DinomalyCNN` (this suite's variant, not the paper's model; see
that class).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uad.encoders import Encoder
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.methods.stage_tokens import StageTokens
from uad.nn.init import trunc_normal_init_
from uad.nn.linear_attention import LinearAttention
from uad.nn.losses import global_cosine_hm, hard_mining_ratio
from uad.nn.token_groups import default_heads, fuse, tap_groups
from uad.nn.vit_block import NoisyBottleneck, ViTBlock

OFFICIAL_GROUPS = ((0, 1, 2, 3), (4, 5, 6, 7))  # fuse_layer_encoder = fuse_layer_decoder in the scripts


class Dinomaly(AnomalyNet):
    """Noisy MLP bottleneck + linear-attention ViT decoder over the mean of the encoder's middle taps,
    trained by loose (grouped, hard-mined) cosine reconstruction. dropout: the bottleneck's noise;
    bottleneck_ratio, num_blocks, num_heads, mlp_ratio: the bottleneck's and decoder's sizes (num_heads None:
    the encoder's); the other arguments as the paper's code sets them.

    This class is the paper's model, on a ViT. On a CNN encoder `Dinomaly(encoder, ...)` builds a
    `DinomalyCNN` (`AnomalyNet.cnn_variant`), so that `method=dinomaly` works on every backbone;
    `cnn_stride` is that variant's only own argument."""

    def __init__(
        self,
        encoder: Encoder,
        dropout: float = 0.2,
        bottleneck_ratio: float = 4.0,
        num_blocks: int = 8,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-8,
        attn_eps: float = 0.0,
        encoder_groups: Sequence[Sequence[int]] | None = None,
        decoder_groups: Sequence[Sequence[int]] = OFFICIAL_GROUPS,
        hm_ratio: float = 0.9,
        hm_warmup_steps: int = 1000,
        hm_factor: float = 0.1,
        init_std: float = 0.01,
        cnn_stride: int = 16,
    ) -> None:
        super().__init__(encoder)
        self.cnn_stride = cnn_stride
        self.encoder_groups, self.decoder_groups = tap_groups(
            encoder_groups, decoder_groups, len(encoder.taps), num_blocks
        )
        self.hm_ratio, self.hm_warmup_steps, self.hm_factor = hm_ratio, hm_warmup_steps, hm_factor
        width = self.token_width(encoder)
        heads = num_heads or default_heads(width)
        self.bottleneck = NoisyBottleneck(width, bottleneck_ratio, dropout)
        mixer = partial(LinearAttention, eps=attn_eps)
        self.decoder = nn.ModuleList(
            ViTBlock(width, heads, mlp_ratio, qkv_bias=True, norm_eps=norm_eps, mixer=mixer)
            for _ in range(num_blocks)
        )
        trunc_normal_init_(self.bottleneck, init_std, 3 * init_std)
        trunc_normal_init_(self.decoder, init_std, 3 * init_std)

    @staticmethod
    def token_width(encoder: Encoder) -> int:
        """The width D of the tokens the bottleneck and decoder carry: the ViT's."""
        return encoder.channels[0]

    # -- the paper's forward pass -----------------------------------------------------------------

    def extract(self, images: Tensor) -> Features:
        """The mean of the taps (bottleneck input) and the fused encoder groups (the targets), stacked
        (B, G, D, h, w)."""
        taps = self.encoder(images)  # 8 x (B, P + h*w, D)
        groups = [self._to_map(fuse(taps, g)) for g in self.encoder_groups]  # G x (B, D, h, w)
        return {"fused": fuse(taps, range(len(taps))), "encoder_groups": torch.stack(groups, dim=1)}

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        tokens, encoder_groups = self.tokens_and_targets(features)
        x = self.bottleneck(tokens)
        decoded = []
        for block in self.decoder:
            x = block(x)
            decoded.append(x)  # (B, N, D)
        reverse = decoded[::-1]  # the last decoder block pairs with the shallowest taps
        decoder_groups = self.group_decoded(reverse, tuple(encoder_groups[0].shape[-2:]))
        return NetOutput(
            self.anomaly_map(encoder_groups, decoder_groups, size),
            {
                "fused": tokens,
                "decoder_blocks": decoded,
                "encoder_groups": encoder_groups,
                "decoder_groups": decoder_groups,
            },
        )

    def tokens_and_targets(self, features: Features) -> tuple[Tensor, list[Tensor]]:
        """The bottleneck's input (B, P + h*w, D), all tokens; the encoder groups G x (B, D, h, w)."""
        return features["fused"], list(features["encoder_groups"].unbind(1))

    def group_decoded(self, reverse: Sequence[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """The decoder groups G x (B, D, h, w), fused from the reversed decoder outputs as the encoder's (the
        tokens map themselves; `grid` (h, w) serves the CNN variant)."""
        return [self._to_map(fuse(reverse, g)) for g in self.decoder_groups]

    def _to_map(self, tokens: Tensor) -> Tensor:
        return self.encoder.tokens_to_map(tokens)  # (B, P + h*w, D) -> (B, D, h, w)

    @staticmethod
    def anomaly_map(
        encoder_groups: Sequence[Tensor], decoder_groups: Sequence[Tensor], size: Sequence[int]
    ) -> Tensor:
        """Mean over groups of 1 - cos over channels, bilinear (align_corners=True) to `size`: (B,1,H,W)."""
        distances = [
            1 - F.cosine_similarity(en.float(), de.float(), dim=1).unsqueeze(1)
            for en, de in zip(encoder_groups, decoder_groups, strict=True)
        ]
        mean = torch.stack(distances, dim=0).mean(dim=0)  # (B, 1, h, w)
        return F.interpolate(mean, size=tuple(size), mode="bilinear", align_corners=True)

    def loss(self, output: NetOutput, step: int = 0) -> dict[str, Tensor]:
        ratio = hard_mining_ratio(step, self.hm_ratio, self.hm_warmup_steps)
        loss = global_cosine_hm(output["encoder_groups"], output["decoder_groups"], ratio, self.hm_factor)
        return {"loss": loss, "hm_ratio": torch.tensor(ratio)}


class DinomalyCNN(StageTokens, Dinomaly):
    """Dinomaly on a CNN encoder (this suite's variant, not the paper's model; `uad.methods.stage_tokens`).
    `Dinomaly(cnn_encoder, ...)` builds it."""


Dinomaly.cnn_variant = DinomalyCNN  # Dinomaly(cnn_encoder) builds it
