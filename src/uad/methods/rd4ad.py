"""RD4AD: anomaly detection via reverse distillation from a one-class embedding (Deng and Li, CVPR 2022).

A frozen teacher (the encoder; WideResNet-50 layers 1-3 in the paper) gives features at three scales. The
trainable **one-class bottleneck embedding (OCBE)** fuses them: a multi-scale feature fusion (MFF) brings
the two finer levels down to the coarsest one with strided 3x3 convolutions (+ BN + ReLU) and
concatenates all three, and a one-class embedding block (OCE: a ResNet stage of 3 bottlenecks, stride 2)
squeezes them into a compact code. A student **decoder that mirrors the encoder** (ResNet stages going
up, with transposed convolutions) restores the three levels from the code, coarsest first. Because the
student only ever sees the teacher through the low-dimensional code, it fails to reproduce the teacher
where an image is anomalous.

Loss: per level, 1 - the cosine similarity of teacher and student features flattened per image, summed
over levels. Map: per level, 1 - cos over channels at each position, upsampled to the input (bilinear,
align_corners=True) and summed; the protocol then smooths it (Gaussian, sigma 4) and takes its maximum as
the image score (`conf/protocol/rd4ad.yaml`).

Official code: hq-deng/RD4AD (`resnet.py` `BN_layer`, `de_resnet.py`, `main.py`, `test.py`); ADer's
re-implementation `model/rd.py` differs in two places, both settable here: its OCE bottlenecks are half
as wide (`bottleneck_base_width` 64, timm's `Bottleneck` default) and its map is divided by
levels x sum of level weights = 9 (`map_reduction: ader`). The official `BN_layer` also holds a 1x1
convolution (`conv4`, `bn4`) that its forward never uses; it is not built here (docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from uad.encoders import Encoder, EncoderSpec
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.nn.level_cosine import flat_cosine_loss, level_cosine_maps
from uad.nn.resnet_blocks import conv3x3, resnet_init_, resnet_stage

MAP_REDUCTIONS = ("sum", "ader")


def _fp32_up(x: Tensor) -> Tensor:
    """`x` in float32 at least: half-precision (autocast) features go to float32, float64 stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _width(out_ch: int, base_width: int) -> int:
    """A ResNet bottleneck's inner width for `out_ch` outputs: planes (= out_ch / 4) x base_width / 64."""
    return int(out_ch // 4 * (base_width / 64))


class OneClassBottleneck(nn.Module):
    """OCBE: MFF (every finer level brought to the coarsest by strided conv3x3 + BN + ReLU steps through
    the next levels' widths, then all concatenated) and OCE (a ResNet stage, stride 2, 2 x C_last out)."""

    def __init__(self, channels: Sequence[int], blocks: int = 3, base_width: int = 128) -> None:
        super().__init__()
        self.fuse = nn.ModuleList()
        for i in range(len(channels) - 1):
            steps: list[nn.Module] = []
            for c_in, c_out in zip(channels[i:-1], channels[i + 1 :]):
                steps += [conv3x3(c_in, c_out, stride=2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            self.fuse.append(nn.Sequential(*steps))
        last = channels[-1]
        out = 2 * last
        self.oce = resnet_stage(len(channels) * last, _width(out, base_width), out, blocks, stride=2)

    def forward(self, levels: Sequence[Tensor]) -> Tensor:
        fused = [step(level) for step, level in zip(self.fuse, levels)] + [levels[-1]]  # L x (B, C_L, h, w)
        return self.oce(torch.cat(fused, dim=1))  # (B, 2 C_L, h/2, w/2)


class MirrorDecoder(nn.Module):
    """The student: one ResNet stage per encoder level, coarsest first, each doubling the grid with
    transposed convolutions (`blocks[k]` bottlenecks); returns the levels finest first, as the encoder."""

    def __init__(self, in_ch: int, channels: Sequence[int], blocks: Sequence[int], base_width: int) -> None:
        super().__init__()
        stages = []
        for out_ch, n in zip(reversed(channels), blocks):
            stages.append(resnet_stage(in_ch, _width(out_ch, base_width), out_ch, n, stride=2, up=True))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)

    def forward(self, code: Tensor) -> list[Tensor]:
        outputs = []
        for stage in self.stages:
            code = stage(code)
            outputs.append(code)
        return outputs[::-1]


class RD4AD(AnomalyNet):
    """RD4AD on a CNN backbone whose taps halve the grid level by level (ResNets: layers 1-3).

    Defaults are the official WideResNet-50 model: 3 OCE bottlenecks and decoder stages of 3, 4 and 6
    bottlenecks, both with the wide ResNet's base width 128. On `wres50`: 83,802,624 trainable parameters,
    the official bn + decoder count (92,195,328) less its unused conv4/bn4 (8,392,704).
    """

    def __init__(
        self,
        encoder: Encoder,
        bottleneck_blocks: int = 3,
        bottleneck_base_width: int = 128,
        decoder_blocks: Sequence[int] = (3, 4, 6),
        decoder_base_width: int = 128,
        map_reduction: str = "sum",
    ) -> None:
        super().__init__(encoder)
        channels, strides = list(encoder.channels), list(encoder.strides)
        if encoder.spec.kind != "cnn" or any(b != 2 * a for a, b in pairwise(strides)):
            raise ValueError(
                "RD4AD's decoder mirrors a CNN whose tapped stages halve the grid one after another; "
                f"backbone '{encoder.name}' ({encoder.spec.kind}, strides {strides}) has no such stages: "
                "use a CNN backbone such as backbone=wres50"
            )
        if len(decoder_blocks) != len(channels):
            raise ValueError(
                f"method.model.decoder_blocks {list(decoder_blocks)} needs one entry per tapped level "
                f"({len(channels)})"
            )
        if map_reduction not in MAP_REDUCTIONS:
            raise ValueError(f"method.model.map_reduction '{map_reduction}' is not one of {MAP_REDUCTIONS}")
        self.num_levels = len(channels)
        self.map_reduction = map_reduction
        self.bottleneck = OneClassBottleneck(channels, bottleneck_blocks, bottleneck_base_width)
        self.decoder = MirrorDecoder(2 * channels[-1], channels, decoder_blocks, decoder_base_width)
        resnet_init_(self.bottleneck)
        resnet_init_(self.decoder)

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...]:
        """A CNN's last three registry taps, the stages at strides 4, 8 and 16 (ResNets: layers 1-3; the
        EfficientNet-Lites' stride-2 stage is left out)."""
        return spec.taps[-3:] if spec.kind == "cnn" else spec.taps

    def extract(self, images: Tensor) -> Features:
        levels = self.encoder.feature_maps(images)  # L x (B, C_l, H_l, W_l), finest first
        return {f"level{i}": level for i, level in enumerate(levels)}

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        teacher = [features[f"level{i}"] for i in range(self.num_levels)]
        code = self.bottleneck(teacher)  # (B, 2 C_L, H_L / 2, W_L / 2)
        student = self.decoder(code)  # L x (B, C_l, H_l, W_l)
        level_maps = level_cosine_maps([_fp32_up(t) for t in teacher], [_fp32_up(s) for s in student], size)
        anomaly_map = level_maps.sum(1, keepdim=True)  # (B, 1, H, W)
        if self.map_reduction == "ader":  # ADer: the sum over levels / (levels x sum of the level weights)
            anomaly_map = anomaly_map / self.num_levels**2
        tensors = {"teacher": teacher, "code": code, "reconstruction": student, "level_maps": level_maps}
        return NetOutput(anomaly_map, tensors)

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        return flat_cosine_loss(output["teacher"], [_fp32_up(s) for s in output["reconstruction"]])
