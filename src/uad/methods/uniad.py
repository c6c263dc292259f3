"""UniAD (You et al., NeurIPS 2022): a unified reconstruction model for all classes.

The frozen encoder's levels are point-sampled onto the stride-16 grid and concatenated (MFCN neck), the
tokens are jittered in training (feature jitter), projected to the hidden width, and a transformer with
neighbour-masked attention reconstructs them: the encoder sees each token only through tokens outside its
own neighbourhood, which stops it from copying its input ("identical shortcut"), and the decoder restarts
every layer from a learned query (layer-wise query embedding). The anomaly map is the per-position L2
reconstruction error, upsampled to the input (bilinear, align_corners=True).

Official code: zhiyuanyou/UniAD, models/reconstructions/uniad.py and models/necks/mfcn.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uad.encoders import Encoder, EncoderSpec
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.nn.align import align_bilinear
from uad.nn.attention import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    neighbour_mask,
)
from uad.nn.init import shared_packed_xavier_, xavier_linear_
from uad.nn.noise import FeatureJitter
from uad.nn.pos_embed import build_positional_embedding


class UniAD(AnomalyNet):
    """UniAD on any registry backbone; `mode=describe` at 224 on effb4 gives the official 7,717,392.

    The feature grid is the coarsest tapped level (stride 16 for the CNN taps, the patch grid for a ViT),
    so the positional code and the queries are sized from `encoder.input_size`. `neighbor_size` is in grid
    cells (official: 7 at 224; ADer: input / 32, i.e. 8 at 256); null turns the mask off. `official_init`
    starts the layers as the official deep copies do (`_deep_copy_init`); false draws every layer apart.
    """

    def __init__(
        self,
        encoder: Encoder,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        neighbor_size: int | Sequence[int] | None = 7,
        pos_embed: str = "learned",
        jitter_scale: float = 20.0,
        jitter_prob: float = 1.0,
        official_init: bool = True,
    ) -> None:
        super().__init__(encoder)
        channels = sum(encoder.channels)
        side = min(encoder.grid_sizes())  # the coarsest tapped level
        self.grid = (side, side)
        if isinstance(neighbor_size, int):
            neighbor_size = (neighbor_size, neighbor_size)
        self.neighbor_size = None if neighbor_size is None else tuple(neighbor_size)
        if self.neighbor_size is not None:
            neighbour_mask(self.grid, self.neighbor_size)  # fail at build time, naming the key, if blind

        self.jitter = FeatureJitter(jitter_scale, jitter_prob)
        self.input_proj = nn.Linear(channels, hidden_dim)
        self.pos_embed = build_positional_embedding(pos_embed, self.grid, hidden_dim)
        self.transformer_encoder = TransformerEncoder(
            TransformerEncoderLayer(hidden_dim, num_heads, ffn_dim, dropout, dropout, activation),
            num_encoder_layers,
        )
        self.transformer_decoder = TransformerDecoder(
            TransformerDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, dropout, activation),
            num_decoder_layers,
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, channels)
        for module in (self.input_proj, self.transformer_encoder, self.transformer_decoder, self.output_proj):
            xavier_linear_(module)  # official `initializer: xavier_uniform`; never the frozen encoder
        # layer-wise query embeddings, N(0, 1) as the official nn.Embedding
        self.queries = nn.ParameterList(
            nn.Parameter(torch.randn(side * side, hidden_dim)) for _ in range(num_decoder_layers)
        )
        if official_init:
            self._deep_copy_init()

    @torch.no_grad()
    def _deep_copy_init(self) -> None:
        """The official start: its layers are deep copies, initialised before copying where its initializer
        does not reach them. So every decoder layer starts from the same query, and the Q/K/V projections of
        each attention kind (encoder self-attention, decoder memory and previous-layer attention) are one
        xavier draw over the packed 3D x D matrix, shared by all layers. Output projections and FFNs stay
        independently xavier-initialised, as the official initializer re-draws every Linear."""
        for query in self.queries[1:]:
            query.copy_(self.queries[0])
        encoder, decoder = self.transformer_encoder.layers, self.transformer_decoder.layers
        shared_packed_xavier_([layer.attn for layer in encoder])
        shared_packed_xavier_([layer.memory_attn for layer in decoder])
        shared_packed_xavier_([layer.prev_attn for layer in decoder])

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...]:
        """The registry's taps: for CNNs the stages up to stride 16 (effb4: blocks 1,5,9,21 = 272 ch, as the
        official `outlayers: [1,2,3,4]`); for a ViT its tapped blocks, whose patch grid is the token grid."""
        return spec.taps

    def extract(self, images: Tensor) -> Features:
        features = self.encoder.feature_maps(images)  # per level (B, C_l, H_l, W_l)
        return {"aligned": align_bilinear(features, self.grid)}  # (B, C, h, w)

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        aligned = features["aligned"]
        b, c, h, w = aligned.shape
        tokens = aligned.flatten(2).transpose(1, 2)  # (B, h*w, C)
        tokens = self.input_proj(self.jitter(tokens))  # (B, h*w, D)
        pos = self.pos_embed()  # (h*w, D)
        mask = (
            None
            if self.neighbor_size is None
            else neighbour_mask(self.grid, self.neighbor_size, aligned.device)
        )
        memory = self.transformer_encoder(tokens, pos, mask)  # (B, h*w, D)
        decoded = self.transformer_decoder(list(self.queries), memory, pos, mask)[-1]  # (B, h*w, D)
        reconstruction = self.output_proj(self.decoder_norm(decoded))  # (B, h*w, C)
        reconstruction = reconstruction.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        distance = (reconstruction.float() - aligned).pow(2).sum(1, keepdim=True).sqrt()  # (B, 1, h, w)
        anomaly_map = F.interpolate(distance, size=size, mode="bilinear", align_corners=True)  # (B, 1, H, W)
        tensors = {"aligned": aligned, "encoded": memory, "reconstruction": reconstruction}
        return NetOutput(anomaly_map, tensors)

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        """FeatureMSELoss: mean squared error to the clean aligned features over all B*C*h*w elements."""
        return F.mse_loss(output["reconstruction"].float(), output["aligned"])
