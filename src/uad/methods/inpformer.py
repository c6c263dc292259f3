"""INP-Former (Luo et al., CVPR 2025): "Exploring Intrinsic Normal Prototypes within a Single Image for
Universal Anomaly Detection".

A reconstruction model in Dinomaly's frame (frozen DINOv2-reg encoder, its eight middle blocks tapped, their
mean passed through an MLP bottleneck and eight decoder blocks, encoder taps and decoder outputs fused in two
groups and compared by cosine distance), whose decoder does not learn what normal looks like from the
training set alone: it is told, for every test image, by **intrinsic normal prototypes** (INPs) taken from
that image.

1. **INP extractor.** M learnable tokens (6) cross-attend to the image's patch tokens (the mean of the taps)
   and become the image's prototypes (B, M, D) (`uad.nn.prototypes.PrototypeExtractor`).
2. **INP coherence loss.** Each patch token's cosine distance to its nearest prototype, averaged: the
   prototypes must cover the image's (mostly normal) content (`coherence_loss`).
3. **INP-guided decoder.** Eight blocks whose attention takes keys and values from the prototypes only,
   with ReLU-ed cosine weights and no residual around the attention (`PrototypeGuidedBlock`): every token
   is rebuilt from normal prototypes, so an anomaly, which no prototype resembles, is not.
4. **Soft-mining loss.** The global cosine loss of each group, whose gradient at each point is weighted by
   (its distance / the mean distance) ** 3, so training dwells on the hard normal regions
   (`uad.nn.losses.global_cosine_soft_mining`). The objective is that loss + 0.2 x the coherence loss.

The anomaly map is Dinomaly's: per group, 1 - cos over channels at each patch, upsampled (bilinear,
align_corners=True) to the input, averaged over the groups; the protocol (`conf/protocol/inpformer392.yaml`)
resizes it to 256, smooths it and scores the mean of its top 1 %.

Structure as the official code (`luow23/INP-Former` @ 17d2653: `models/uad.py` `INP_Former`,
`models/vision_transformer.py`, `INP_Former_Multi_Class.py`): unlike Dinomaly, the cls and register tokens
are dropped from every tap before anything else, and the bottleneck has no dropout.

CNN variant (ours, not the paper's model; `InpFormerCNN`, which `InpFormer(cnn_encoder)` builds): the tapped
stages are averaged onto one grid of stride `cnn_stride` and concatenated, each position a token of width
sum(C_l); the two groups are the shallow and the deep half of the stages, as channel slices of the tokens and
of the fused decoder outputs (Dinomaly's CNN variant, with the prototypes and decoder of this paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uad.encoders import Encoder
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.methods.stage_tokens import StageTokens
from uad.nn.init import trunc_normal_init_
from uad.nn.level_cosine import level_cosine_maps
from uad.nn.losses import global_cosine_soft_mining
from uad.nn.prototypes import PrototypeExtractor, PrototypeGuidedBlock, coherence_loss
from uad.nn.token_groups import default_heads, fuse, tap_groups
from uad.nn.vit_block import NoisyBottleneck

OFFICIAL_GROUPS = ((0, 1, 2, 3), (4, 5, 6, 7))  # fuse_layer_encoder = fuse_layer_decoder in the scripts


class InpFormer(AnomalyNet):
    """INP extractor + MLP bottleneck + INP-guided decoder over the mean of the encoder's middle taps,
    trained by the soft-mining cosine loss plus `coherence_weight` x the INP coherence loss.
    num_prototypes: the INPs per image (official `INP_num`); dropout: the bottleneck's (official 0);
    num_heads None: the encoder's (6 / 12 / 16); mining_power: the soft-mining exponent (official y=3).
    On a CNN encoder `InpFormer(encoder, ...)` builds an `InpFormerCNN` (`AnomalyNet.cnn_variant`);
    `cnn_stride` is its own argument."""

    def __init__(
        self,
        encoder: Encoder,
        num_prototypes: int = 6,
        dropout: float = 0.0,
        bottleneck_ratio: float = 4.0,
        num_blocks: int = 8,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-8,
        encoder_groups: Sequence[Sequence[int]] | None = None,
        decoder_groups: Sequence[Sequence[int]] = OFFICIAL_GROUPS,
        mining_power: float = 3.0,
        coherence_weight: float = 0.2,
        init_std: float = 0.01,
        cnn_stride: int = 16,
    ) -> None:
        super().__init__(encoder)
        self.cnn_stride = cnn_stride
        self.encoder_groups, self.decoder_groups = tap_groups(
            encoder_groups, decoder_groups, len(encoder.taps), num_blocks
        )
        self.mining_power, self.coherence_weight = mining_power, coherence_weight
        width = self.token_width(encoder)
        heads = num_heads or default_heads(width)
        self.extractor = PrototypeExtractor(width, num_prototypes, heads, mlp_ratio, norm_eps)
        self.bottleneck = NoisyBottleneck(width, bottleneck_ratio, dropout)
        self.decoder = nn.ModuleList(
            PrototypeGuidedBlock(width, heads, mlp_ratio, norm_eps) for _ in range(num_blocks)
        )
        for part in (self.bottleneck, self.decoder, self.extractor):
            trunc_normal_init_(part, init_std, 3 * init_std)

    @staticmethod
    def token_width(encoder: Encoder) -> int:
        """The width D of the tokens: the ViT's."""
        return encoder.channels[0]

    # -- the paper's forward pass -----------------------------------------------------------------

    def extract(self, images: Tensor) -> Features:
        """The patch tokens' mean over the taps (B, N, D) and the fused encoder groups (B, G, D, h, w);
        the cls and register tokens are left out of both."""
        taps = self.encoder(images)  # 8 x (B, P + h*w, D)
        groups = [self.encoder.tokens_to_map(fuse(taps, g)) for g in self.encoder_groups]  # G x (B, D, h, w)
        prefix = self.encoder.num_prefix_tokens
        return {"tokens": fuse(taps, range(len(taps)))[:, prefix:], "encoder_groups": torch.stack(groups, 1)}

    def tokens_and_targets(self, features: Features) -> tuple[Tensor, list[Tensor]]:
        """(the tokens (B, N, D), the fused encoder groups G x (B, C_g, h, w)) of the extracted features."""
        return features["tokens"], list(features["encoder_groups"].unbind(1))

    def group_decoded(self, reverse: Sequence[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """The decoder groups: the mean of each group's (reversed) block outputs, as (B, D, h, w) maps."""
        return [fuse(reverse, g).transpose(1, 2).unflatten(2, grid) for g in self.decoder_groups]

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        tokens, encoder_groups = self.tokens_and_targets(features)  # (B, N, D), G x (B, C_g, h, w)
        prototypes = self.extractor(tokens)  # (B, M, D): this image's normal prototypes
        x = self.bottleneck(tokens)
        decoded = []
        for block in self.decoder:
            x = block(x, prototypes)
            decoded.append(x)  # (B, N, D)
        reverse = decoded[::-1]  # the last decoder block pairs with the shallowest taps
        decoder_groups = self.group_decoded(reverse, tuple(encoder_groups[0].shape[-2:]))
        anomaly_map = level_cosine_maps(encoder_groups, decoder_groups, size).mean(1, keepdim=True)
        return NetOutput(
            anomaly_map,  # (B, 1, H, W)
            {
                "tokens": tokens,
                "prototypes": prototypes,
                "decoder_blocks": decoded,
                "encoder_groups": encoder_groups,
                "decoder_groups": decoder_groups,
            },
        )

    def loss(self, output: NetOutput, step: int = 0) -> dict[str, Tensor]:
        reconstruction = global_cosine_soft_mining(
            output["encoder_groups"], output["decoder_groups"], self.mining_power
        )
        coherence, _ = coherence_loss(output["tokens"], output["prototypes"])
        return {
            "loss": reconstruction + self.coherence_weight * coherence,
            "reconstruction": reconstruction.detach(),
            "coherence": coherence.detach(),
        }


class InpFormerCNN(StageTokens, InpFormer):
    """The CNN variant (ours, not the paper's model; `uad.methods.stage_tokens`). `InpFormer(cnn_encoder)`
    builds it."""


InpFormer.cnn_variant = InpFormerCNN  # InpFormer(cnn_encoder) builds it
