"""Scoring outside the test loop (prediction, threshold calibration, export): one module that turns input
images into the protocol's evaluation maps and image scores by the very calls evaluation makes, so that an
image scores the same in `mode=predict`, in a calibration run, in an exported graph and in `results.json`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from uad.data.batch import Batch
from uad.encoders.registry import IMAGENET_MEAN, IMAGENET_STD
from uad.methods.base import AnomalyNet
from uad.metrics.protocol import EvalProtocol


class Scorer(nn.Module):
    """`net` followed by the protocol's map post-processing (`maps_for_eval`) and image score
    (`image_scores`), as the `Evaluator` applies them to the test step's maps.

    raw_input: the images come as RGB in [0, 1] and are ImageNet-normalised here (an exported graph's
    input); otherwise they come normalised, as the data sets give them.
    """

    def __init__(self, net: AnomalyNet, protocol: EvalProtocol, raw_input: bool = False) -> None:
        super().__init__()
        self.net = net
        self.protocol = protocol
        self.raw_input = raw_input
        device = next(net.parameters()).device
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, images: Tensor, class_id: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, 3, S, S) images -> evaluation maps (N, h, w) float32 and image scores (N,). `class_id` (N,)
        reaches a network that keeps one bank per class (-1: unknown), as in the test step."""
        if self.raw_input:
            images = (images - self.mean) / self.std  # the same arithmetic as InputTransform.finish
        output = self.net(images, class_id)  # as AnomalyModule.test_step
        maps = self.protocol.maps_for_eval(
            self.protocol.chosen_map(output.maps())
        )  # (N, 1, S, S) -> (N, h, w)
        return maps, self.protocol.image_scores(maps, output.image_score)


@torch.no_grad()
def score_loader(scorer: Scorer, batches: Iterable[Batch], keep_maps: bool = False) -> dict[str, Any]:
    """Score every batch of a data loader in eval mode: class names, labels, image scores, the maximum of
    each evaluation map and, with keep_maps, the maps and masks at the evaluation size (on the CPU)."""
    device = next(scorer.net.parameters()).device
    out: dict[str, list] = {"class_name": [], "label": [], "score": [], "map_max": [], "map": [], "mask": []}
    for batch in batches:
        maps, scores = scorer(batch["image"].to(device), torch.as_tensor(batch["class_id"]).to(device))
        out["class_name"] += list(batch["class_name"])
        out["label"].append(scorer.protocol.labels(batch["label"], batch["mask"], batch["has_mask"]))
        out["score"].append(scores.cpu())
        out["map_max"].append(maps.flatten(1).amax(1).cpu())
        if keep_maps:
            out["map"].append(maps.cpu())
            out["mask"].append(scorer.protocol.masks_for_eval(batch["mask"]).cpu())
    return {k: (torch.cat(v) if v and isinstance(v[0], Tensor) else v) for k, v in out.items()}
