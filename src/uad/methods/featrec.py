"""FeatRec: a plain feature-reconstruction baseline, the simplest real method on the shared base.

The encoder's tapped levels are averaged down to one stride-16 grid and concatenated; a narrow
per-position auto-encoder (1x1 convolutions) reconstructs them. What it cannot reconstruct is anomalous:
the map is the per-position L2 error, upsampled to the input (bilinear, align_corners=True).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from uad.encoders import Encoder
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.nn.align import align_avgpool


class FeatRec(AnomalyNet):
    """A per-position auto-encoder over the encoder's levels averaged onto one stride-16 grid; the map is
    its reconstruction error. hidden_dim / bottleneck_dim: the widths of its 1x1 convolutions."""

    def __init__(self, encoder: Encoder, hidden_dim: int = 256, bottleneck_dim: int = 64) -> None:
        super().__init__(encoder)
        channels = sum(encoder.channels)
        self.autoencoder = nn.Sequential(
            nn.Conv2d(channels, hidden_dim, 1),
            nn.GELU(),
            nn.Conv2d(hidden_dim, bottleneck_dim, 1),
            nn.GELU(),
            nn.Conv2d(bottleneck_dim, hidden_dim, 1),
            nn.GELU(),
            nn.Conv2d(hidden_dim, channels, 1),
        )

    def extract(self, images: Tensor) -> Features:
        features = self.encoder.feature_maps(images)  # per level (B, C_l, H_l, W_l)
        return {"aligned": align_avgpool(features, self.encoder.strides)}  # (B, C, H/16, W/16)

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        aligned = features["aligned"]
        reconstruction = self.autoencoder(aligned)  # (B, C, H/16, W/16)
        # the map in float32 under bf16 autocast, as every method's
        distance = (reconstruction.float() - aligned).pow(2).sum(1, keepdim=True).sqrt()  # (B, 1, H/16, W/16)
        anomaly_map = F.interpolate(distance, size=size, mode="bilinear", align_corners=True)
        return NetOutput(anomaly_map, {"aligned": aligned, "reconstruction": reconstruction})

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        return F.mse_loss(output["reconstruction"].float(), output["aligned"])
