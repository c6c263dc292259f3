"""DualAD: coupled wide-shallow and narrow-deep reconstruction networks (Electronics 2025; cyhaan/DualAD).

The frozen encoder's levels are average-pooled to stride 16 and concatenated (MFAA), giving C-channel
tokens on an h x w grid. In training they are perturbed into pseudo-anomalies (Gaussian noise scaled per
image and channel by the spatial std); the target is always the clean features.

- The **wide-shallow network (WSN)** embeds the tokens into a wide space (1024 = S streams x 256) that is
  cut into S narrow streams, and at the end decodes the concatenated NDN outputs back to C channels.
  **He** (heterogeneous): an MLP pair, and every stream is re-read from its own memory module (cosine
  addressing, hard shrinkage), which pulls anomalous tokens towards stored normal patterns.
  **Ho** (homogeneous): wide transformer stages, an encoder after the input projection and a decoder with
  learned queries before the output projection; no memory.
- The **narrow-deep network (NDN)**, shared by both: a transformer encoder on the sum of the streams and
  a decoder whose layer k takes stream k as its query; the outputs of all its layers are concatenated.
  All attention hides each token's own 7 x 7 neighbourhood; one learned 2-D positional code serves every
  layer (projected to the WSN width in Ho).

`DualAD` holds what both share; `DualADHe` and `DualADHo` add their wide-shallow networks.

Loss: the sum over backbone levels of each level's MSE. Map: the product over levels of each level's
RMS error, upsampled bilinearly (align_corners=True) to the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uad.encoders import Encoder, EncoderSpec
from uad.errors import ConfigError
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.nn.align import align_avgpool
from uad.nn.attention import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    neighbour_mask,
)
from uad.nn.init import xavier_linear_
from uad.nn.level_error import level_mse_sum, level_rms_product
from uad.nn.memory import MemoryModule
from uad.nn.noise import SpatialNoise
from uad.nn.pos_embed import LearnedPositionalEmbedding2d


class WideMLP(nn.Module):
    """He's WSN half: Linear -> ReLU -> Linear, token-wise."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class WideEncoder(nn.Module):
    """Ho's WSN input: Linear C -> W, then `num_layers` masked transformer encoder layers at width W."""

    def __init__(
        self, in_dim: int, width: int, num_layers: int, num_heads: int, ffn_dim: int, dropout: float
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        layer = TransformerEncoderLayer(width, num_heads, ffn_dim, dropout, attn_dropout=0.0)
        self.encoder = TransformerEncoder(layer, num_layers)

    def forward(self, x: Tensor, pos: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.encoder(self.proj(x), pos, mask)


class WideDecoder(nn.Module):
    """Ho's WSN output: `num_layers` decoder layers at width W, each with its own learned query (N(0, 1),
    one per grid position) attending to the NDN output and to the previous layer; then Linear W -> C."""

    def __init__(
        self,
        width: int,
        out_dim: int,
        num_tokens: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.queries = nn.ParameterList(torch.randn(num_tokens, width) for _ in range(num_layers))  # (N, W)
        layer = TransformerDecoderLayer(width, num_heads, ffn_dim, dropout, attn_dropout=0.0)
        self.decoder = TransformerDecoder(layer, num_layers)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, pos: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.proj(self.decoder(list(self.queries), x, pos, mask)[-1])


@dataclass(frozen=True)
class WideShallowSizes:
    """What a variant's wide-shallow network is built from (the constructor's arguments)."""

    channels: int  # C, the MFAA token width
    hidden_dim: int  # D, one stream
    num_streams: int  # S
    wide_hidden: int  # the WSN's hidden width (wsn_ratio x S*D)
    num_heads: int
    dropout: float
    wsn_layers: int  # Ho
    memory_slots: int  # He
    memory_scale: float  # He
    shrink_threshold: float | None  # He

    @property
    def width(self) -> int:
        return self.hidden_dim * self.num_streams  # S*D


class DualAD(AnomalyNet):
    """What He and Ho share: MFAA features, pseudo-anomalies, the NDN, the loss and the map; defaults are the
    official MVTec/VisA config. `DualAD(encoder, variant="he")` builds a `DualADHe`, `variant="ho"` a
    `DualADHo` (as `pathlib.Path(...)` builds a `PosixPath`), so that one config key chooses the variant.
    memory_slots, memory_scale and shrink_threshold are He's own arguments, wsn_layers Ho's."""

    def __new__(cls, *args: Any, **kwargs: Any) -> DualAD:
        if cls is DualAD:
            variant = kwargs.get("variant", args[1] if len(args) > 1 else "he")
            if variant not in VARIANTS:
                raise ConfigError(f"method.model.variant '{variant}' is not one of {tuple(VARIANTS)}")
            cls = VARIANTS[variant]
        return super().__new__(cls)

    def __init__(
        self,
        encoder: Encoder,
        variant: str = "he",
        hidden_dim: int = 256,
        num_streams: int = 4,
        num_encoder_layers: int = 4,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        wsn_ratio: float = 4.0,
        wsn_layers: int = 2,
        memory_slots: int = 196,
        memory_scale: float = 1.0,
        shrink_threshold: float | None = None,
        noise_scale: float = 3.2,
        neighbor_size: int | None = 7,
    ) -> None:
        super().__init__(encoder)
        self.levels = list(encoder.channels)
        self.grid = self._grid(encoder)
        self.neighbor_size = neighbor_size
        channels, wide_hidden = sum(self.levels), int(hidden_dim * num_streams * wsn_ratio)

        self.noise = SpatialNoise(noise_scale)
        self.pos_embed = LearnedPositionalEmbedding2d(self.grid, hidden_dim)
        sizes = WideShallowSizes(
            channels,
            hidden_dim,
            num_streams,
            wide_hidden,
            num_heads,
            dropout,
            wsn_layers,
            memory_slots,
            memory_scale,
            shrink_threshold,
        )
        self.build_wide_shallow(sizes)  # wsn_in, the variant's own modules, wsn_out
        self.ndn_encoder = TransformerEncoder(
            TransformerEncoderLayer(hidden_dim, num_heads, ffn_dim, dropout, attn_dropout=0.0),
            num_encoder_layers,
        )
        self.ndn_decoder = TransformerDecoder(
            TransformerDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, attn_dropout=0.0), num_streams
        )
        for name, module in self.named_children():
            if name not in OWN_INIT:
                xavier_linear_(module)  # the official initializer

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...] | None:
        """CNNs: the stages up to stride 16 (ResNets layer1-3, EfficientNets blocks to the 160/112-ch
        stage), as the registry's taps. ViTs: every third block, the last included (ViT-S: 2, 5, 8, 11)."""
        if spec.kind == "cnn":
            return spec.taps
        depth = spec.depth
        return tuple(range(depth // 4 - 1, depth, depth // 4))

    @staticmethod
    def _grid(encoder: Encoder) -> tuple[int, int]:
        """The stride-16 grid that `align_avgpool` produces for the encoder's input size."""
        sizes, strides = encoder.grid_sizes(), encoder.strides
        finest = strides.index(min(strides))
        side = sizes[finest] // (16 // strides[finest])
        return side, side

    def extract(self, images: Tensor) -> Features:
        features = self.encoder.feature_maps(images)  # per level (B, C_l, H_l, W_l)
        return {"aligned": align_avgpool(features, self.encoder.strides)}  # (B, C, h, w)

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        aligned = features["aligned"]
        b, c, h, w = aligned.shape
        if (h, w) != self.grid:
            raise ValueError(
                f"DualAD was built for a {self.grid[0]}x{self.grid[1]} feature grid but got {h}x{w}: "
                "feed images of the protocol's input size (protocol.image_size)"
            )
        mask = (  # (N, N), True = attend; None = no mask
            neighbour_mask(self.grid, self.neighbor_size, aligned.device) if self.neighbor_size else None
        )
        pos = self.pos_embed()  # (N, D)
        wide_pos = self.wide_position(pos)  # (N, S*D), or None where the WSN reads no positions

        tokens = self.noise(aligned.flatten(2).transpose(1, 2))  # (B, N, C), pseudo-anomalous in training
        streams = self.wide_in(tokens, wide_pos, mask)  # S x (B, N, D)
        encoded = self.ndn_encoder(sum(streams), pos, mask)  # (B, N, D)
        decoded = self.ndn_decoder(streams, encoded, pos, mask)  # S x (B, N, D)
        rec_tokens = self.wide_out(torch.cat(decoded, dim=-1), wide_pos, mask)  # (B, N, C)

        reconstruction = rec_tokens.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        error = level_rms_product(reconstruction, aligned, self.levels)  # (B, 1, h, w)
        anomaly_map = F.interpolate(error, size=size, mode="bilinear", align_corners=True)  # (B, 1, H, W)
        return NetOutput(
            anomaly_map,
            {
                "aligned": aligned,
                "streams": streams,
                "encoded": encoded,
                "decoded": decoded,
                "reconstruction": reconstruction,
            },
        )

    def _split(self, wide: Tensor) -> list[Tensor]:
        return list(wide.chunk(len(self.ndn_decoder.layers), dim=-1))  # (B, N, S*D) -> S x (B, N, D)

    # -- the wide-shallow network: the variant's own ----------------------------------------------

    def build_wide_shallow(self, sizes: WideShallowSizes) -> None:
        """Adds `wsn_in`, the variant's own modules and `wsn_out` (C -> S*D -> C)."""
        raise NotImplementedError

    def wide_position(self, pos: Tensor) -> Tensor | None:
        """The positional code at the WSN's width (N, S*D), from the NDN's (N, D); None: not used."""
        return None

    def wide_in(self, tokens: Tensor, pos: Tensor | None, mask: Tensor | None) -> list[Tensor]:
        """The clean or perturbed tokens (B, N, C) -> the S streams (B, N, D) the NDN reads."""
        raise NotImplementedError

    def wide_out(self, decoded: Tensor, pos: Tensor | None, mask: Tensor | None) -> Tensor:
        """The concatenated NDN outputs (B, N, S*D) -> the reconstructed tokens (B, N, C)."""
        raise NotImplementedError

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        return level_mse_sum(output["reconstruction"], output["aligned"], self.levels)


class DualADHe(DualAD):
    """Heterogeneous: an MLP pair around the NDN, and every stream re-read from its own memory module."""

    def build_wide_shallow(self, sizes: WideShallowSizes) -> None:
        self.wsn_in = WideMLP(sizes.channels, sizes.wide_hidden, sizes.width)
        self.memories = nn.ModuleList(
            MemoryModule(sizes.memory_slots, sizes.hidden_dim, sizes.memory_scale, sizes.shrink_threshold)
            for _ in range(sizes.num_streams)
        )
        self.wsn_out = WideMLP(sizes.width, sizes.wide_hidden, sizes.channels)

    def wide_in(self, tokens: Tensor, pos: Tensor | None, mask: Tensor | None) -> list[Tensor]:
        streams = self._split(self.wsn_in(tokens))  # S x (B, N, D)
        return [memory(s)[1] for memory, s in zip(self.memories, streams, strict=True)]

    def wide_out(self, decoded: Tensor, pos: Tensor | None, mask: Tensor | None) -> Tensor:
        return self.wsn_out(decoded)


class DualADHo(DualAD):
    """Homogeneous: wide transformer stages around the NDN (no memory); the NDN's positional code is lifted
    to the WSN width by `pos_proj`."""

    def build_wide_shallow(self, sizes: WideShallowSizes) -> None:
        heads, depth, hidden, dropout = sizes.num_heads, sizes.wsn_layers, sizes.wide_hidden, sizes.dropout
        self.wsn_in = WideEncoder(sizes.channels, sizes.width, depth, heads, hidden, dropout)
        self.pos_proj = nn.Linear(sizes.hidden_dim, sizes.width)
        num_tokens = self.grid[0] * self.grid[1]
        self.wsn_out = WideDecoder(sizes.width, sizes.channels, num_tokens, depth, heads, hidden, dropout)

    def wide_position(self, pos: Tensor) -> Tensor:
        return self.pos_proj(pos)  # (N, D) -> (N, S*D)

    def wide_in(self, tokens: Tensor, pos: Tensor | None, mask: Tensor | None) -> list[Tensor]:
        return self._split(self.wsn_in(tokens, pos, mask))

    def wide_out(self, decoded: Tensor, pos: Tensor | None, mask: Tensor | None) -> Tensor:
        return self.wsn_out(decoded, pos, mask)


VARIANTS: dict[str, type[DualAD]] = {"he": DualADHe, "ho": DualADHo}
OWN_INIT = ("encoder", "pos_embed", "memories")  # modules that keep their own initialisation
