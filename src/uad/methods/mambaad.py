"""MambaAD: a Mamba decoder that reconstructs a frozen CNN's feature pyramid (He et al., NeurIPS 2024;
official code lewandofskee/MambaAD and ADer's `model/mambaad.py`).

- **Encoder.** A frozen ImageNet CNN (ResNet-34 in the paper) tapped at three stages, strides 4, 8 and 16.
- **Multi-scale fusion with one-class embedding (MFF + OCE).** The shallow level is strided down (3 x 3,
  stride 2) and added to the middle level (1 x 1); that sum is strided down again and added to the deep level
  (1 x 1), then fused (1 x 1); every convolution is followed by batch norm and ReLU. A ResNet bottleneck
  stage (3 blocks, stride 2, 512 channels) compresses the result into a compact one-class embedding at
  stride 32, which a decoder can only expand into normal features.
- **Mamba decoder.** Four stages, from stride 32 up to stride 4. Every stage after the first expands the
  map 2x (a linear layer to 4 sub-pixels, then layer norm) to the width of the encoder level it
  reconstructs. Each stage is a series of Locality-Enhanced State Space (LSS) modules: two or three HSS
  blocks (`uad.nn.ss2d`: selective scans along hybrid scan orders, by default the Hilbert curve in 8
  directions), in parallel with two convolution branches (1 x 1, a 5 x 5 or 7 x 7 depthwise convolution,
  1 x 1; instance norm and SiLU after each) for local detail; the three are concatenated, mixed by a
  1 x 1 convolution and added to the module's input. The last three stages' outputs are the reconstruction
  of the three encoder levels.
- **Loss** (as the official code trains, `L2Loss` with weight 5): the sum over levels of 5 x the mean
  squared error between encoder and decoder features.
- **Anomaly map**: the sum over levels of 1 - cos(encoder, decoder) over channels, each upsampled
  bilinearly (align_corners=True) to the input, divided by L^2 = 9 as ADer's evaluator does (its 'add' mode
  divides by the number of levels times the sum of their unit weights: a constant factor, kept so that maps
  and scores equal the official ones); the protocol (`protocol=mambaad256`) smooths it with a Gaussian
  (sigma 4) and scores an image by the map's maximum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.resnet import Bottleneck
from torch import Tensor, nn

from uad.encoders import Encoder, EncoderSpec
from uad.errors import UserError
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.nn.level_cosine import level_cosine_maps
from uad.nn.ss2d import HSSBlock


def conv_bn_relu(in_dim: int, out_dim: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel, stride, padding=kernel // 2, bias=bias),
        nn.BatchNorm2d(out_dim),
        nn.ReLU(inplace=True),
    )


class MultiScaleFusion(nn.Module):
    """MFF: levels (C0 @ s, C1 @ 2s, C2 @ 4s) -> one (C2 @ 4s) map, top-down strided sums."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.down1 = conv_bn_relu(c0, c1, 3, stride=2, bias=False)  # shallow -> middle resolution
        self.lateral1 = conv_bn_relu(c1, c1, 1)
        self.down2 = conv_bn_relu(c1, c2, 3, stride=2, bias=False)  # -> deep resolution
        self.lateral2 = conv_bn_relu(c2, c2, 1)
        self.fuse = conv_bn_relu(c2, c2, 1)

    def forward(self, levels: list[Tensor]) -> Tensor:
        shallow, middle, deep = levels
        middle = self.lateral1(middle) + self.down1(shallow)  # (B, C1, H/8, W/8)
        deep = self.lateral2(deep) + self.down2(middle)  # (B, C2, H/16, W/16)
        return self.fuse(deep)


def one_class_embedding(in_dim: int, planes: int = 128, blocks: int = 3) -> nn.Sequential:
    """OCE: a stride-2 ResNet bottleneck stage (timm's Bottleneck, expansion 4) to 4 x `planes` channels."""
    out_dim = planes * Bottleneck.expansion
    downsample = nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, 2, bias=False), nn.BatchNorm2d(out_dim))
    layers = [Bottleneck(in_dim, planes, stride=2, downsample=downsample)]
    layers += [Bottleneck(out_dim, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class PatchExpand(nn.Module):
    """2x upsampling of a (B, H, W, C_in) map: a linear layer to 4 x C_out, the 2 x 2 sub-pixels laid out
    in space (p1 rows, p2 columns, then channels), then layer norm. -> (B, 2H, 2W, C_out)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.expand = nn.Linear(in_dim, 4 * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        x = self.expand(x).view(b, h, w, 2, 2, self.out_dim)  # (B, H, W, p1, p2, C)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.out_dim)
        return self.norm(x)


def local_branch(dim: int, kernel: int) -> list[nn.Sequential]:
    """The three convolutions of a locality branch: 1 x 1, depthwise kernel x kernel, 1 x 1."""

    def unit(conv: nn.Conv2d) -> nn.Sequential:
        return nn.Sequential(conv, nn.InstanceNorm2d(dim), nn.SiLU())

    return [
        unit(nn.Conv2d(dim, dim, 1)),
        unit(nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)),
        unit(nn.Conv2d(dim, dim, 1)),
    ]


class LSSModule(nn.Module):
    """Locality-Enhanced State Space module on (B, H, W, dim): `depth` HSS blocks in series beside two
    convolution branches (5 x 5 and 7 x 7 depthwise), concatenated, mixed 1 x 1, plus the input."""

    def __init__(self, dim: int, side: int, depth: int, drop_path: float, **ss2d) -> None:
        super().__init__()
        self.smm_blocks = nn.ModuleList(HSSBlock(dim, side, drop_path, **ss2d) for _ in range(depth))
        self.conv1b7, self.conv77, self.conv1a7 = local_branch(dim, 7)
        self.conv1b5, self.conv55, self.conv1a5 = local_branch(dim, 5)
        self.finalconv11 = nn.Conv2d(3 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        global_ = x
        for block in self.smm_blocks:
            global_ = block(global_)  # (B, H, W, dim)
        grid = x.permute(0, 3, 1, 2)  # (B, dim, H, W)
        local7 = self.conv1a7(self.conv77(self.conv1b7(grid)))
        local5 = self.conv1a5(self.conv55(self.conv1b5(grid)))
        mixed = self.finalconv11(torch.cat([global_.permute(0, 3, 1, 2), local5, local7], dim=1))
        return mixed.permute(0, 2, 3, 1) + x


def lss_depths(depth: int) -> list[int]:
    """A stage of `depth` HSS blocks as LSS modules: of 3 blocks when 3 divides it, else of 2."""
    for per_module in (3, 2):
        if depth % per_module == 0:
            return [per_module] * (depth // per_module)
    raise ValueError(f"a MambaAD decoder stage needs a depth divisible by 3 or 2; got {depth}")


class DecoderStage(nn.Module):
    """2x expansion from `in_dim` (none for the first stage: in_dim None), then the stage's LSS modules,
    on (B, H, W, C); LSS module i drops its HSS blocks' paths at rate drop_paths[i]."""

    def __init__(
        self, in_dim: int | None, dim: int, side: int, depth: int, drop_paths: list[float], **ss2d
    ) -> None:
        super().__init__()
        self.upsample = None if in_dim is None else PatchExpand(in_dim, dim)
        modules = lss_depths(depth)
        self.blocks = nn.ModuleList(
            LSSModule(dim, side, n, drop_paths[i], **ss2d) for i, n in enumerate(modules)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class MambaAD(AnomalyNet):
    """MambaAD on a frozen CNN; defaults are the official MVTec config (`depths_decoder=[3, 4, 6, 3]`,
    Hilbert scans in 8 directions, d_state 16, drop-path rate 0.2)."""

    def __init__(
        self,
        encoder: Encoder,
        depths: tuple[int, ...] = (3, 4, 6, 3),
        scan: str = "hilbert",
        directions: int = 8,
        d_state: int = 16,
        embed_planes: int = 128,
        drop_path_rate: float = 0.2,
        loss_weight: float = 5.0,
    ) -> None:
        super().__init__(encoder)
        if encoder.spec.kind != "cnn" or len(encoder.channels) != 3:
            raise UserError(
                f"method=mambaad needs a CNN backbone tapped at three stages (strides 4, 8, 16): its fusion "
                f"and decoder mirror that pyramid; backbone={encoder.spec.name} gives {encoder.spec.kind} "
                f"features at strides {list(encoder.strides)}. Use e.g. backbone=res34"
            )
        strides = list(encoder.strides)
        if [s / strides[0] for s in strides] != [1, 2, 4] or encoder.input_size % (8 * strides[0]):
            raise UserError(
                f"method=mambaad needs taps at strides s, 2s, 4s and an input size divisible by 8s; got "
                f"strides {strides} at {encoder.input_size} px (backbone.taps, protocol.image_size)"
            )
        self.loss_weight = loss_weight
        channels = list(encoder.channels)  # shallow .. deep
        side = encoder.input_size // (8 * strides[0])  # the embedding's side, stride 8s
        self.fusion = MultiScaleFusion(channels)
        self.embedding = one_class_embedding(channels[-1], embed_planes)

        dims = [embed_planes * Bottleneck.expansion, *channels[::-1]]  # 512, C2, C1, C0
        rates = torch.linspace(0, drop_path_rate, sum(depths)).flip(0).tolist()  # deepest stage drops most
        ss2d = {"scan": scan, "directions": directions, "d_state": d_state}
        stages, offset = [], 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            in_dim = dims[i - 1] if i else None
            stages.append(DecoderStage(in_dim, dim, side * 2**i, depth, rates[offset:], **ss2d))
            offset += depth
        self.decoder = nn.ModuleList(stages)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The official initialisation: He-normal (fan-out) convolutions in the fusion and embedding and in
        the LSS modules, truncated-normal (std 0.02) linear layers in the decoder; norms at 1 and 0."""
        for module in (self.fusion, self.embedding):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        for m in self.decoder.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                m.weight.normal_(0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...] | None:
        """The last three of the registry's CNN stages (ResNets: layer1-3, strides 4, 8, 16)."""
        return spec.taps[-3:] if spec.kind == "cnn" else None

    def extract(self, images: Tensor) -> Features:
        levels = self.encoder.feature_maps(images)  # per level (B, C_l, H_l, W_l), shallow first
        return {f"level{i}": level for i, level in enumerate(levels)}

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        levels = [features[f"level{i}"] for i in range(3)]
        embedding = self.embedding(self.fusion(levels))  # (B, 512, H/32, W/32)
        x = embedding.permute(0, 2, 3, 1)  # (B, h, w, 512)
        decoded = []
        for i, stage in enumerate(self.decoder):
            x = stage(x)  # (B, 2^i h, 2^i w, dims[i])
            if i > 0:
                decoded.insert(0, x.permute(0, 3, 1, 2))  # shallowest first, as `levels`
        distances = level_cosine_maps(levels, [rec.float() for rec in decoded], size)  # (B, L, H, W)
        # ADer's cal_anomaly_map (amap_mode 'add') divides the level sum by L x sum(weights) = L^2
        anomaly_map = distances.sum(1, keepdim=True) / distances.shape[1] ** 2  # (B, 1, H, W)
        return NetOutput(anomaly_map, {"levels": levels, "embedding": embedding, "decoded": decoded})

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        """The official objective (ADer `L2Loss`, lam 5): sum over levels of lam x MSE(encoder, decoder)."""
        return sum(
            self.loss_weight * F.mse_loss(rec.float(), level)
            for level, rec in zip(output["levels"], output["decoded"], strict=True)
        )
