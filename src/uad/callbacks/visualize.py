"""Anomaly-map overlays people would rather look at than read: image, heat map, ground-truth contour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from uad.encoders.registry import IMAGENET_MEAN, IMAGENET_STD
from uad.metrics.records import EvalRecords
from uad.utils.io import atomic_write


def denormalise(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) ImageNet-normalised tensor -> (H, W, 3) float in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def overlay_figure(
    image: np.ndarray, amap: np.ndarray, mask: np.ndarray, vmin: float, vmax: float, title: str
):
    """A three-panel figure: the image, the heat map over it, and the ground-truth contour on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    heat = axes[1].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
    axes[1].set_title("anomaly map")
    axes[2].imshow(image)
    axes[2].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
    if mask.any():
        axes[2].contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.2)
    axes[2].set_title("ground truth (white)")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(heat, ax=axes, fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=9)
    return fig


def save_overlays(folder: Path, kept: dict[str, list[dict[str, Any]]], records: EvalRecords) -> list[Path]:
    """One PNG per kept sample; the colour scale is shared within a class (its 1st-99.9th percentile)."""
    import matplotlib.pyplot as plt

    paths = []
    for class_name, items in kept.items():
        values = records.map[records.of_class(class_name)].float().flatten()
        values = values[torch.randperm(len(values))[:1_000_000]]
        vmin, vmax = (float(q) for q in torch.quantile(values, torch.tensor([0.01, 0.999])))
        for item in items:
            size = item["map"].shape[-1]
            image = torch.nn.functional.interpolate(
                item["image"][None], size=(size, size), mode="bilinear", align_corners=False
            )[0]
            stem = Path(item["path"]).stem
            title = f"{class_name} / {item['defect']} / {stem}"
            fig = overlay_figure(
                denormalise(image), item["map"].float().numpy(), item["mask"].numpy(), vmin, vmax, title
            )
            path = folder / f"{class_name}_{item['defect']}_{stem}.png"
            atomic_write(path, lambda h, fig=fig: fig.savefig(h, dpi=90, format="png"), mode="wb")
            plt.close(fig)
            paths.append(path)
    return paths
