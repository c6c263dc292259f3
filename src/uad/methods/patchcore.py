"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022): training-free.

Each position of the mid-level encoder maps becomes a locally aware patch feature: every level is averaged
over its 3x3 neighbourhood (zero-padded at the border, as the official code unfolds its maps), the levels
are resized to the finest of them and concatenated (optionally average-pooled over channels to
`feature_dim`). The training features of each class form that class's
memory bank, subsampled by greedy coreset selection (k-center: each pick is the feature farthest from
those already picked, distances measured after a random Gaussian projection to `projection_dim`, as the
paper does for speed). A test patch's score is the distance to its nearest bank feature of the image's
class; the patch map is upsampled bilinearly to the input and blurred (Gaussian, sigma 4) as the paper.

Image score (`NetOutput.image_score`, taken by the protocol's `score: net`): the paper's, the largest patch
distance reweighted by how isolated that patch's nearest bank feature is among its `num_neighbors` nearest
bank features (`reweighted_score`); `protocol.score=max` scores the blurred map instead.

Banks are one pair of buffers (`bank` (N, D) and `bank_class` (N,)), so checkpoints carry them; a batch
without class ids (None) is scored against every class's bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uad.encoders import Encoder, EncoderSpec
from uad.methods.base import UNKNOWN_CLASS, Features, MemoryBankNet, NetOutput
from uad.metrics.protocol import gaussian_blur

SEARCH_CHUNK = 4096  # test patches per distance block: bounds the (chunk, bank) distance matrix


def patch_features(maps: list[Tensor], feature_dim: int | None = None) -> Tensor:
    """Per-level maps (B, C_l, H_l, W_l) -> locally aggregated patch features (B, D, H_0, W_0) on the finest
    grid: 3x3 neighbourhood average per level (over 9 cells, zeros beyond the border), bilinear resize,
    channel concatenation (D = sum C_l), then channel average pooling to `feature_dim` when given."""
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    levels = []
    for level in maps:
        level = F.avg_pool2d(level, 3, stride=1, padding=1)  # border windows count the padding's zeros
        if level.shape[-2:] != size:
            level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        levels.append(level)
    features = torch.cat(levels, 1)  # (B, sum C_l, H_0, W_0)
    if feature_dim is None or feature_dim == features.shape[1]:
        return features
    b, c, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(-1, 1, c)  # (B*H_0*W_0, 1, C)
    pooled = F.adaptive_avg_pool1d(flat, feature_dim)  # (B*H_0*W_0, 1, D)
    return pooled.reshape(b, h, w, feature_dim).permute(0, 3, 1, 2)


def greedy_coreset(features: Tensor, count: int, projection_dim: int | None = 128, seed: int = 0) -> Tensor:
    """Indices (count,) of a greedy k-center coreset of `features` (N, D): start from a random feature, then
    repeatedly add the one whose distance to the nearest chosen feature is largest. Distances are taken
    after a random Gaussian projection to `projection_dim` (None or >= D: the raw features)."""
    n, dim = features.shape
    if count >= n:
        return torch.arange(n, device=features.device)
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if projection_dim is not None and projection_dim < dim:
        projection = torch.randn(dim, projection_dim, generator=generator).to(points.device)
        points = points @ projection  # (N, projection_dim)
    norms = points.pow(2).sum(1)  # (N,)
    chosen = torch.empty(count, dtype=torch.long, device=points.device)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    # squared distances as |p|^2 + |c|^2 - 2 p.c: one matrix-vector product per pick (3x faster than p - c)
    nearest = norms + norms[chosen[0]] - 2 * (points @ points[chosen[0]])  # (N,) to the chosen set
    for i in range(1, count):
        chosen[i] = nearest.argmax()
        torch.minimum(nearest, norms + norms[chosen[i]] - 2 * (points @ points[chosen[i]]), out=nearest)
    return chosen


def nearest_neighbours(queries: Tensor, bank: Tensor) -> tuple[Tensor, Tensor]:
    """Euclidean distance (Q,) from each query (Q, D) to its nearest row of `bank` (M, D), and that row's
    index (Q,): exact, chunked."""
    nearest = [torch.cdist(chunk, bank).min(1) for chunk in queries.split(SEARCH_CHUNK)]
    return torch.cat([n.values for n in nearest]), torch.cat([n.indices for n in nearest])


def reweighted_score(
    queries: Tensor, distances: Tensor, nearest: Tensor, bank: Tensor, num_neighbors: int
) -> Tensor:
    """The paper's image score (its eq. 7) of each image (B,), from its patch features `queries` (B, P, D),
    their nearest-neighbour distances (B, P) and nearest bank rows (B, P) in `bank` (M, D):
    s = (1 - exp|m_test* - m*| / sum_{m in N_b(m*)} exp|m_test* - m|) s*, where m_test* is the patch with the
    largest distance s* = |m_test* - m*| to its nearest bank feature m*, and N_b(m*) the b nearest bank
    features of m* (m* among them). The weight is small when m* is far from other normal features (a rare
    normal pattern) and the test patch is as close to those as to m*."""
    rows = torch.arange(len(queries), device=queries.device)
    star = distances.argmax(1)  # (B,) the patch m_test*
    s_star = distances[rows, star]  # (B,)
    m_test, m_star = queries[rows, star], bank[nearest[rows, star]]  # (B, D) each
    support = torch.cdist(m_star, bank).topk(min(num_neighbors, len(bank)), largest=False).indices  # (B, b)
    to_support = torch.cdist(m_test[:, None], bank[support])[:, 0]  # (B, b)
    # exp(s*) / sum exp(d) written as 1 / sum exp(d - s*): no overflow for large distances
    return (1 - 1 / torch.exp(to_support - s_star[:, None]).sum(1)) * s_star


class PatchCore(MemoryBankNet):
    """Per-class memory banks of locally aggregated mid-level patch features, scored by nearest-neighbour
    distance. feature_dim: channel-pool the patch features to this width (None: keep them);
    coreset_ratio: the share of each class's training patches kept; projection_dim: the random projection
    of the coreset distances; blur_sigma: the map's Gaussian blur; num_neighbors: b of the image score's
    reweighting; seed: the coreset start and projection."""

    uses_class_id = True

    def __init__(
        self,
        encoder: Encoder,
        feature_dim: int | None = None,
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        blur_sigma: float = 4.0,
        num_neighbors: int = 9,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder)
        if not 0.0 < coreset_ratio <= 1.0:
            raise ValueError(
                f"method.model.coreset_ratio must be in (0, 1] (1 = keep all); got {coreset_ratio}"
            )
        self.feature_dim = feature_dim
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        if num_neighbors < 2:
            raise ValueError(
                f"method.model.num_neighbors must be >= 2 (with 1, the paper's reweighting makes every image "
                f"score 0); got {num_neighbors}"
            )
        self.blur_sigma = blur_sigma
        self.num_neighbors = num_neighbors
        self.seed = seed
        dim = feature_dim or sum(encoder.channels)
        self.register_buffer("bank", torch.zeros(0, dim))
        self.register_buffer("bank_class", torch.zeros(0, dtype=torch.long))

    @classmethod
    def default_taps(cls, spec: EncoderSpec) -> tuple[int, ...] | None:
        """The paper's mid-level features: a CNN's last two taps (ResNets layer2-3, EfficientNets the
        stride-8 and stride-16 stages); a ViT's blocks at a third and two thirds of its depth."""
        if spec.kind == "cnn":
            return spec.taps[-2:]
        return (spec.depth // 3 - 1, 2 * spec.depth // 3 - 1)

    def extract(self, images: Tensor) -> Features:
        return {"patches": patch_features(self.encoder.feature_maps(images), self.feature_dim)}

    def fit(self, features: Features, class_id: Tensor) -> None:
        patches = features["patches"].permute(0, 2, 3, 1).flatten(1, 2)  # (N, H_0*W_0, D)
        banks, classes = [], []
        for cls in class_id.unique().tolist():
            train = patches[class_id == cls].flatten(0, 1)  # (n * H_0*W_0, D)
            count = max(1, round(self.coreset_ratio * len(train)))
            banks.append(train[greedy_coreset(train, count, self.projection_dim, self.seed)])
            classes.append(torch.full((count,), cls, dtype=torch.long))
        device = self.bank.device
        self.bank = torch.cat(banks).to(device)
        self.bank_class = torch.cat(classes).to(device)

    def reconstruct(self, features: Features, size: tuple[int, int]) -> NetOutput:
        """The nearest-neighbour search (the contract's `reconstruct`: this network's non-encoder part)."""
        if len(self.bank) == 0:
            raise RuntimeError(
                "PatchCore has no memory bank: fit it (one training epoch) or load a checkpoint"
            )
        patches = features["patches"]
        b, d, h, w = patches.shape
        queries = patches.permute(0, 2, 3, 1).reshape(b, h * w, d)  # (B, H_0*W_0, D)
        class_id = features.get("class_id")  # (B,); None or UNKNOWN_CLASS: every class's bank
        if class_id is None:
            class_id = torch.full((b,), UNKNOWN_CLASS, device=patches.device)
        distances = torch.empty(b, h * w, device=patches.device)
        scores = torch.empty(b, device=patches.device)
        for cls in class_id.unique().tolist():
            bank = self.bank if cls == UNKNOWN_CLASS else self.bank[self.bank_class == cls]
            if len(bank) == 0:
                raise KeyError(f"PatchCore has no memory bank for class id {cls}: it was not in training")
            rows = class_id == cls
            found, nearest = nearest_neighbours(queries[rows].flatten(0, 1), bank)
            distances[rows] = found.view(-1, h * w)
            scores[rows] = reweighted_score(
                queries[rows], distances[rows], nearest.view(-1, h * w), bank, self.num_neighbors
            )
        patch_map = distances.view(b, 1, h, w)
        anomaly_map = F.interpolate(patch_map, size=size, mode="bilinear", align_corners=False)
        if self.blur_sigma > 0:
            anomaly_map = gaussian_blur(anomaly_map, self.blur_sigma, padding="symmetric")  # scipy's reflect
        tensors = {"patches": patches, "patch_map": patch_map}
        return NetOutput(anomaly_map.float(), tensors, image_score=scores)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a bank's size is known only once fitted: take the checkpoint's shapes before copying
        for name in ("bank", "bank_class"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.bank.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
