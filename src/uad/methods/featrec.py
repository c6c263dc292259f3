"""FeatRec: a plain feature-reconstruction baseline, the simplest real method on the shared base.

The encoder's tapped levels are averaged down to one stride-16 grid and concatenated; a narrow
per-position auto-encoder (1x1 convolutions) reconstructs them. What it cannot reconstruct is anomalous:
the map is the per-position L2 error, upsampled to the input (bilinear, align_corners=True).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from uad.encoders import Encoder
from uad.methods.base import AnomalyModel
from uad.nn.align import align_avgpool


class FeatRec(AnomalyModel):
    def __init__(
        self, encoder: Encoder, hidden_dim: int = 256, bottleneck_dim: int = 64, **kwargs: Any
    ) -> None:
        super().__init__(encoder, **kwargs)
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

    def forward(self, images: Tensor) -> dict[str, Any]:
        features = self.encoder.feature_maps(images)  # per level (B, C_l, H_l, W_l)
        aligned = align_avgpool(features, self.encoder.strides)  # (B, C, H/16, W/16)
        reconstruction = self.autoencoder(aligned)  # (B, C, H/16, W/16)
        distance = (reconstruction - aligned).pow(2).sum(1, keepdim=True).sqrt()  # (B, 1, H/16, W/16)
        anomaly_map = F.interpolate(distance, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return {
            "features": features,
            "aligned": aligned,
            "reconstruction": reconstruction,
            "anomaly_map": anomaly_map,
        }

    def loss(self, outputs: dict[str, Any]) -> Tensor:
        return F.mse_loss(outputs["reconstruction"], outputs["aligned"])
