"""ViTAD (Zhang et al., CVIU 2025): plain ViTs for multi-class unsupervised anomaly detection.

A frozen ViT (DINO ViT-S/16) is the **teacher**: its tokens after blocks 3, 6 and 9 (1-based, as the paper
counts) are the reconstruction targets, and its tokens after the last block are the **neck** that feeds the
student. The **fusion** (one linear layer over the concatenated neck taps; one tap here, so D -> D) maps
them into the **student**, a plain ViT decoder of 9 pre-norm blocks with softmax self-attention and a
learned positional embedding of its own (no class token). The student's tokens after its blocks 3, 6 and
9 are its features, deepest first: the last decoder block pairs with the shallowest teacher tap, as the
decoder mirrors the encoder.

Loss: per level, 1 - cos between the whole flattened (D * h * w) teacher and student features of each
image, averaged over the batch and summed over the levels. Anomaly map: the point-wise 1 - cos over
channels of each level, upsampled bilinearly (align_corners=True) to the input, summed and divided by the
number of levels squared (ADer's scale: its mean over levels, divided once more); the protocol
(`conf/protocol/vitad.yaml`) smooths it (Gaussian, sigma 4) and scores an image by the max of its 16 x 16
average-pooled map.

Official code: ADer (zhangzjn/ADer @ 902937a) `model/vitad.py` (`ViT_Encoder`, `Fusion`, `ViT_Decoder`,
`ViTAD`), `loss/base_loss.py` (`CosLoss`, avg=False), `trainer/vitad_trainer.py`, `util/metric.py`
(`cal_anomaly_map`). The official student is a whole timm VisionTransformer of which only the positional
embedding and the blocks run; its unused patch embedding, class token, final norm and 1000-class head
(681,448 parameters for ViT-S, never updated) are not built here.

On a CNN backbone the same code runs as `ViTADCNN` (this suite's variant, not the paper's model; see that
class).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uad.encoders import Encoder, EncoderSpec
from uad.methods.base import AnomalyNet, Features, NetOutput
from uad.nn.align import align_avgpool
from uad.nn.attention import SelfAttention
from uad.nn.init import trunc_normal_init_
from uad.nn.token_groups import default_heads
from uad.nn.vit_block import ViTBlock


class ViTAD(AnomalyNet):
    """ViTAD on a registry ViT. Its taps are the teachers then the neck (last); on ViT-S/16 DINO at 256 px
    it has 16,216,320 trainable parameters (the official model's 16,897,768 less its unused 681,448).
    `students` are the decoder blocks (1-based) whose outputs are compared, one per teacher. On a CNN encoder
    `ViTAD(encoder, ...)` builds a `ViTADCNN` (`AnomalyNet.cnn_variant`); `cnn_stride`
    is that variant's only own argument."""

    neck_tap = ": the last ViT tap is the neck"  # how the taps divide, for an error message

    def __init__(
        self,
        encoder: Encoder,
        depth: int = 9,
        students: Sequence[int] = (3, 6, 9),
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        cnn_stride: int = 16,
    ) -> None:
        super().__init__(encoder)
        self.cnn_stride = cnn_stride
        self.students = sorted(int(s) for s in students)
        teachers = self.teacher_count(encoder)
        if len(self.students) != teachers or not all(1 <= s <= depth for s in self.students):
            raise ValueError(
                f"method.model.students {list(students)} must name {teachers} decoder blocks in "
                f"1..{depth}, one per teacher tap (backbone.taps {list(encoder.taps)}{self.neck_tap})"
            )
        width, side = self.token_grid(encoder)
        self.fusion = nn.Linear(width, width)  # PyTorch's default init, as the official Fusion
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, width))
        self.decoder = nn.ModuleList(
            ViTBlock(width, num_heads or default_heads(width), mlp_ratio, True, norm_eps, SelfAttention)
            for _ in range(depth)
        )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_init_(self.decoder, std=0.02, bound=2.0)  # timm's ViT init: N(0, 0.02) cut at +-2

    @staticmethod
    def teacher_count(encoder: Encoder) -> int:
        return len(encoder.taps) - 1  # the last tap is the neck

    def token_grid(self, encoder: Encoder) -> tuple[int, int]:
        """The width D of the student's tokens and the side of their grid: the ViT's."""
        return encoder.channels[0], encoder.grid_sizes()[0]

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...]:
        """ViT: blocks d/4, d/2, 3d/4 (teachers) and d (neck), 1-based (ViT-S: 3, 6, 9 and 12, the official
        taps); CNN: its three deepest stages up to stride 16."""
        if spec.kind == "vit":
            d = spec.depth
            return (d // 4 - 1, d // 2 - 1, 3 * d // 4 - 1, d - 1)
        return spec.taps[-3:]

    # -- the paper's forward pass -----------------------------------------------------------------

    def extract(self, images: Tensor) -> Features:
        """The teacher taps as maps (B, T, D, h, w) and the neck's patch tokens (B, h*w, D)."""
        taps = self.encoder(images)  # (T + 1) x (B, P + h*w, D)
        teachers = torch.stack([self.encoder.tokens_to_map(t) for t in taps[:-1]], dim=1)
        return {"teachers": teachers, "neck": taps[-1][:, self.encoder.num_prefix_tokens :]}

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        teachers, neck = self.teachers_and_neck(features)
        x = self.fusion(neck) + self.pos_embed  # (B, h*w, D)
        taps = []
        for index, block in enumerate(self.decoder, start=1):
            x = block(x)
            if index in self.students:
                taps.append(x)
        h, w = teachers[0].shape[-2:]
        maps = [t.transpose(1, 2).reshape(t.shape[0], -1, h, w) for t in reversed(taps)]  # (B, D, h, w)
        students = self.compared(maps)
        return NetOutput(
            self.anomaly_map(teachers, students, size),
            {"neck": neck, "teachers": teachers, "students": students},
        )

    def teachers_and_neck(self, features: Features) -> tuple[list[Tensor], Tensor]:
        """The teachers T x (B, D, h, w) and the neck (B, h*w, D) the student reads."""
        return list(features["teachers"].unbind(1)), features["neck"]

    def compared(self, maps: list[Tensor]) -> list[Tensor]:
        """The part of the student's tap maps (B, D, h, w) compared with its teacher: all of it."""
        return maps

    @staticmethod
    def anomaly_map(teachers: Sequence[Tensor], students: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Sum over the L levels of 1 - cos over channels, each bilinear (align_corners=True) to `size`,
        divided by L * L: ADer's `cal_anomaly_map` divides the sum by L * sum(weights) with unit weights,
        i.e. the mean over levels / L. The constant factor changes no ranking metric; kept so that maps and
        image scores equal the official ones."""
        maps = [
            F.interpolate(
                1 - F.cosine_similarity(t.float(), s.float(), dim=1).unsqueeze(1),
                size=tuple(size),
                mode="bilinear",
                align_corners=True,
            )
            for t, s in zip(teachers, students, strict=True)
        ]  # L x (B, 1, H, W)
        return torch.stack(maps).sum(0) / len(maps) ** 2

    def loss(self, output: NetOutput, step: int = 0) -> Tensor:
        """Sum over levels of the batch mean of 1 - cos(vec(teacher_i), vec(student_i))."""
        return sum(
            (1 - F.cosine_similarity(t.float().flatten(1), s.float().flatten(1), dim=1)).mean()
            for t, s in zip(output["teachers"], output["students"], strict=True)
        )


class ViTADCNN(ViTAD):
    """ViTAD on a CNN encoder (this suite's variant, not the paper's model): the tapped stages are averaged
    onto one stride-`cnn_stride` grid and concatenated; the neck is that whole token (width sum(C_l)), and
    the teachers are its channel slices, one per stage, shallowest first. The student works at the
    concatenated width and each of its taps is compared with the same channel slice of the teacher it pairs
    with. `ViTAD(cnn_encoder, ...)` builds it."""

    neck_tap = ""

    def __init__(self, encoder: Encoder, *args: Any, **kwargs: Any) -> None:
        super().__init__(encoder, *args, **kwargs)
        bounds = torch.tensor([0, *encoder.channels]).cumsum(0).tolist()
        self.slices = list(pairwise(bounds))  # each stage's channels in the token

    @staticmethod
    def teacher_count(encoder: Encoder) -> int:
        return len(encoder.taps)

    def token_grid(self, encoder: Encoder) -> tuple[int, int]:
        return sum(encoder.channels), encoder.input_size // self.cnn_stride

    def extract(self, images: Tensor) -> Features:
        stages = self.encoder.feature_maps(images)  # per stage (B, C_l, H_l, W_l)
        return {"aligned": align_avgpool(stages, self.encoder.strides, self.cnn_stride)}  # (B, C, h, w)

    def teachers_and_neck(self, features: Features) -> tuple[list[Tensor], Tensor]:
        aligned = features["aligned"]  # (B, C, h, w)
        return [aligned[:, a:b] for a, b in self.slices], aligned.flatten(2).transpose(1, 2)  # (B, h*w, C)

    def compared(self, maps: list[Tensor]) -> list[Tensor]:
        return [m[:, a:b] for m, (a, b) in zip(maps, self.slices, strict=True)]


ViTAD.cnn_variant = ViTADCNN  # ViTAD(cnn_encoder) builds it
