"""The evaluation protocol: how a method's anomaly map becomes the map and image score that are ranked.

Each paper evaluates differently (resolution, smoothing, image-score rule); the protocol is
configuration (`conf/protocol/`), recorded with every result, with one preset per paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from uad.data.transforms import InputTransform, check_choice
from uad.errors import ConfigError
from uad.metrics.functional import FPR_RESCALES

SCORE_RULES = ("net", "max", "avgpool_max", "topk_mean")
SMOOTHING_PADDINGS = ("zeros", "symmetric")
LABEL_RULES = ("folder", "mask")
MAP_DTYPES = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64}
INPUT_KEYS = frozenset(f.name for f in fields(InputTransform))


def gaussian_kernel_1d(sigma: float, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian (kernel_size,); kernel_size 0 means 2 * ceil(4 sigma) + 1."""
    if kernel_size <= 0:
        kernel_size = 2 * int(torch.ceil(torch.tensor(4.0 * sigma))) + 1
    ax = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _band(g: Tensor, n: int) -> Tensor:
    """(n + k - 1, n) matrix whose column j holds the 1-D kernel g (k,) at rows j..j + k - 1: a padded
    row times it is the row's valid convolution with g."""
    k = len(g)
    band = g.new_zeros(n + k - 1, n)
    rows = torch.arange(k, device=g.device)[:, None] + torch.arange(n, device=g.device)  # (k, n)
    band[rows, torch.arange(n, device=g.device).expand(k, n)] = g[:, None].expand(k, n)
    return band


def gaussian_blur(maps: Tensor, sigma: float, kernel_size: int = 0, padding: str = "zeros") -> Tensor:
    """(B, 1, H, W) maps convolved with the normalised 2-D Gaussian (k x k). The 2-D kernel is the outer
    product of the 1-D one (`gaussian_kernel_1d`), so it runs as two 1-D passes, each one matrix product
    with a banded matrix (`_band`): the same sums as the 2-D convolution (to float rounding), 12x faster on
    the CPU for 224 px maps at sigma 4 than the one-channel 33 x 33 convolution, which runs far from peak.
    padding: "zeros", "reflect" (torch's, edge excluded) or "symmetric" (`symmetric_pad`)."""
    g = gaussian_kernel_1d(sigma, kernel_size).to(maps)
    pad = len(g) // 2
    if padding == "symmetric":
        maps = symmetric_pad(maps, pad)
    else:
        maps = F.pad(maps, (pad,) * 4, mode="constant" if padding == "zeros" else padding)
    h, w = maps.shape[-2] - 2 * pad, maps.shape[-1] - 2 * pad
    rows = maps @ _band(g, w)  # (B, 1, H + 2 pad, W): along W
    return (rows.transpose(-1, -2) @ _band(g, h)).transpose(-1, -2).contiguous()  # (B, 1, H, W): along H


def symmetric_pad(maps: Tensor, pad: int) -> Tensor:
    """Pad the last two dims by `pad` with their edge-inclusive mirror image (d c b a | a b c d | d c b a),
    scipy.ndimage's default "reflect" mode, which torch's "reflect" (edge excluded) is not."""
    for dim in (-2, -1):
        n = maps.shape[dim]
        index = torch.arange(-pad, n + pad, device=maps.device)
        index = torch.where(index < 0, -index - 1, torch.where(index >= n, 2 * n - 1 - index, index))
        maps = maps.index_select(dim, index.clamp(0, n - 1))
    return maps


@dataclass(frozen=True)
class EvalProtocol:
    """One paper's evaluation: its input pipeline, label rule and map post-processing.

    input: the input pipeline (`uad.data.transforms.InputTransform`: resize, crop, mask resize and
    binarisation, mask decoding), the one the data module and `mode=predict` use too. A protocol config
    (`conf/protocol/`) is flat: `from_config` gives the input keys to `input` and the rest to the protocol.
    name: the preset's name, recorded with every result.
    label_rule: `folder` (the dataset's good / defective) or `mask` (defective iff the mask at the input size
    has a defect pixel: UniAD; an image without a mask file keeps its folder label), applied by `labels`
    wherever the evaluation reads labels. `uad.data.transforms` writes out each paper's steps.
    eval_size: maps and masks are resized to this for the metrics (None = the input size); maps bilinearly
    (align_corners=False), masks with nearest neighbour.
    smoothing_sigma: Gaussian smoothing of the map at eval size (0 = none), zero padding, kernel
    smoothing_kernel (0 = 2 * ceil(4 sigma) + 1; Dinomaly uses 5 with sigma 4); smoothing_padding `zeros`
    (Dinomaly's conv2d) or `symmetric` (scipy's gaussian_filter: RD4AD, ADer).
    map_name: which of the network's maps is evaluated: `anomaly_map`, the one it gives as its own
    (`NetOutput.anomaly_map`), or another (B, 1, h, w) map its output names (PatchCore's `patch_map`: the
    nearest-neighbour distances before upsampling and blur); `chosen_map` picks it, upsampled to eval size.
    score: image score rule: "net" (the network's own, `NetOutput.image_score`: PatchCore's); "max";
    "avgpool_max" (max of the score_kernel x score_kernel, stride-1 average-pooled map: UniAD, DualAD);
    "topk_mean" (mean of the top score_ratio of the pixels: Dinomaly).
    fpr_limit: AUPRO integrates PRO over FPR in [0, fpr_limit] (0.3 everywhere in the field).
    pixel_bins: None = exact pixel metrics; an int = rank-space binned pixel metrics with about that many
    bins (within 1e-3 of exact; for Real-IAD-size classes).
    map_dtype: the dtype evaluation maps are kept in on the CPU until the metrics are computed: float32
    (exact) or float16 (half the memory; rounds the maps, moving P-AP / P-F1max by ~1e-4); float64 also
    resizes, smooths and scores them in float64, as code whose maps are numpy float64 does (RD4AD's
    gaussian_filter): a float32 smoothing's rounding (~1e-6 relative) can reorder two near-tied image
    scores. Twice float32's memory.
    aupro_thresholds: None, or T: also report the papers' approximate AUPRO at T evenly spaced thresholds
    as "AUPRO@T", beside the exact AUPRO (Dinomaly, DualAD: 200); aupro_fpr_rescale: how that variant
    rescales its FPRs, "max" (Dinomaly) or "minmax" (DualAD). See `uad.metrics.aupro_thresholded`.
    flip_auroc: report 1 - AUROC for an image or pixel AUROC below 0.5, as UniAD's evaluation does; the
    flipped numbers are listed in results["extra"]["flipped_auroc"]. Off everywhere but paper reproduction.
    description: what the preset's source selects or reports otherwise than uad does (e.g. ADer's binned pixel
    metrics), in words; results.json carries it with the protocol.
    """

    input: InputTransform
    name: str = "default"
    label_rule: str = "folder"
    eval_size: int | None = None
    smoothing_sigma: float = 0.0
    smoothing_kernel: int = 0
    smoothing_padding: str = "zeros"
    map_name: str = "anomaly_map"
    score: str = "avgpool_max"
    score_kernel: int = 16
    score_ratio: float = 0.01
    fpr_limit: float = 0.3
    pixel_bins: int | None = None
    map_dtype: str = "float32"
    aupro_thresholds: int | None = None
    aupro_fpr_rescale: str = "max"
    flip_auroc: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.score not in SCORE_RULES:
            raise ConfigError(f"protocol.score '{self.score}' is not one of {SCORE_RULES}")
        if self.smoothing_padding not in SMOOTHING_PADDINGS:
            raise ConfigError(
                f"protocol.smoothing_padding '{self.smoothing_padding}' is not one of {SMOOTHING_PADDINGS}"
            )
        check_choice("label_rule", self.label_rule, LABEL_RULES)
        if not 0.0 < self.fpr_limit <= 1.0:
            raise ConfigError(f"protocol.fpr_limit must be in (0, 1]; got {self.fpr_limit}")
        if self.pixel_bins is not None and self.pixel_bins < 16:
            raise ConfigError(
                f"protocol.pixel_bins must be null (exact) or an int >= 16; got {self.pixel_bins}"
            )
        if self.map_dtype not in MAP_DTYPES:
            raise ConfigError(f"protocol.map_dtype '{self.map_dtype}' is not one of {tuple(MAP_DTYPES)}")
        if self.aupro_thresholds is not None and not (
            isinstance(self.aupro_thresholds, int) and self.aupro_thresholds >= 2
        ):
            raise ConfigError(
                f"protocol.aupro_thresholds must be null (exact AUPRO only) or an int >= 2, e.g. 200; "
                f"got {self.aupro_thresholds!r}"
            )
        if self.aupro_fpr_rescale not in FPR_RESCALES:
            raise ConfigError(
                f"protocol.aupro_fpr_rescale '{self.aupro_fpr_rescale}' is not one of {FPR_RESCALES}"
            )

    @classmethod
    def from_config(cls, keys: Mapping[str, Any]) -> EvalProtocol:
        """A protocol from its flat config (`conf/protocol/<name>.yaml`, or a dict of the same keys)."""
        own = {key: value for key, value in keys.items() if key not in INPUT_KEYS}
        return cls(InputTransform.from_protocol(keys), **own)

    @property
    def input_size(self) -> int:
        """The side of the images the network sees (after any crop)."""
        return self.input.input_size

    @property
    def metric_size(self) -> int:
        return self.eval_size or self.input_size

    @property
    def map_torch_dtype(self) -> torch.dtype:
        return MAP_DTYPES[self.map_dtype]

    def as_dict(self) -> dict:
        """The flat form of the config (the `protocol` entry of results.json): name, input keys, the rest."""
        keys = asdict(self)
        return {"name": keys.pop("name"), **keys.pop("input"), **keys}

    def chosen_map(self, maps: Mapping[str, Tensor]) -> Tensor:
        """The map `map_name` chooses (B, 1, h, w), from a network's maps by name (`NetOutput.maps()`)."""
        if self.map_name not in maps:
            raise ConfigError(
                f"protocol.map_name '{self.map_name}': the network gives no map of that name; its maps are "
                f"{sorted(maps)}"
            )
        return maps[self.map_name]

    def maps_for_eval(self, maps: Tensor) -> Tensor:
        """(B, 1, H, W) maps at input resolution -> (B, h, w) maps at the evaluation size, float32 (float64
        with map_dtype float64)."""
        maps = maps.to(torch.float64 if self.map_dtype == "float64" else torch.float32)
        size = self.metric_size
        if maps.shape[-2:] != (size, size):
            maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
        if self.smoothing_sigma > 0:
            maps = gaussian_blur(maps, self.smoothing_sigma, self.smoothing_kernel, self.smoothing_padding)
        return maps[:, 0]

    def image_scores(self, maps: Tensor, net_scores: Tensor | None = None) -> Tensor:
        """(B, h, w) evaluation maps -> (B,) image scores by the configured rule; `net_scores` (B,) are the
        network's own (`NetOutput.image_score`), which the rule "net" takes."""
        if self.score == "net":
            if net_scores is None:
                raise ConfigError(
                    "protocol.score=net: this network gives no image score of its own; choose one of "
                    f"{SCORE_RULES[1:]} (conf/protocol/)"
                )
            return net_scores.float()
        if self.score == "max":
            return maps.flatten(1).amax(1)
        if self.score == "avgpool_max":
            k = min(self.score_kernel, *maps.shape[-2:])
            return F.avg_pool2d(maps[:, None], kernel_size=k, stride=1).flatten(1).amax(1)
        flat = maps.flatten(1)
        k = max(1, int(flat.shape[1] * self.score_ratio))
        return torch.topk(flat, k, dim=1).values.mean(1)

    def labels(self, labels: Tensor, masks: Tensor, has_mask: Tensor) -> Tensor:
        """The image labels (B,) the metrics rank by `label_rule`, from the dataset's folder labels (B,), the
        binary masks at the input size (B, 1, H, W) and whether each image has a mask file (B,)."""
        labels = torch.as_tensor(labels)
        if self.label_rule == "folder":
            return labels
        from_masks = masks.flatten(1).any(1).to(labels.dtype).to(labels.device)
        return torch.where(torch.as_tensor(has_mask, device=labels.device).bool(), from_masks, labels)

    def masks_for_eval(self, masks: Tensor) -> Tensor:
        """(B, 1, H, W) binary masks at input resolution -> (B, h, w) bool at the evaluation size: torch
        nearest (source pixel floor(i * H / h)), then > 0, as Dinomaly's evaluation does; binarising before
        this pick (the data module does) gives the same masks as binarising after it."""
        size = self.metric_size
        if masks.shape[-2:] != (size, size):
            masks = F.interpolate(masks.float(), size=(size, size), mode="nearest")
        return masks[:, 0] > 0
