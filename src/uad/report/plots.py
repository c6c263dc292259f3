"""The report's pictures as PNG bytes: score histograms against a threshold, ROC, PR and PRO curves
(matplotlib, Agg), and gallery tiles (numpy + PIL: image, heat map on a fixed colour scale, the mask's
contour). Curves are computed here from their definitions, on the scores of one class."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

NORMAL_COLOUR, ANOMALOUS_COLOUR, THRESHOLD_COLOUR = "#1f77b4", "#d62728", "#222222"


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of `score > t` over every distinct threshold, from (0, 0) to (1, 1)."""
    tp, fp, _ = _counts(scores, labels)
    positives, negatives = tp[-1], fp[-1]
    fpr = np.concatenate([[0.0], fp / max(negatives, 1)])
    tpr = np.concatenate([[0.0], tp / max(positives, 1)])
    return fpr, tpr


def pr_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of `score > t` over every distinct threshold, highest threshold first."""
    tp, fp, _ = _counts(scores, labels)
    recall = tp / max(tp[-1], 1)
    precision = tp / np.maximum(tp + fp, 1)
    return recall, precision


def _counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) flagging the scores >= each distinct score (highest first), and those scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last = np.r_[ranked[1:] != ranked[:-1], True]  # the last of each group of tied scores
    tp = np.cumsum(hits)[last].astype(np.float64)
    fp = np.cumsum(~hits)[last].astype(np.float64)
    return tp, fp, ranked[last]


def operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of the decision `score > threshold`: false positives are normals flagged, false negatives
    defectives passed."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    flagged = scores > threshold
    return {
        "tp": int((flagged & labels).sum()),
        "fp": int((flagged & ~labels).sum()),
        "fn": int((~flagged & labels).sum()),
        "tn": int((~flagged & ~labels).sum()),
    }


def _figure(
    width: float = 3.6, height: float = 2.8, margins: tuple[float, float, float, float] = (0.6, 0.5, 0.2, 0.3)
):
    """A figure with one axes and fixed margins in inches (left, bottom, right, top): the plots have one
    size, and a layout engine would double their drawing time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    left, bottom, right, top = margins
    fig.subplots_adjust(
        left=left / width, bottom=bottom / height, right=1 - right / width, top=1 - top / height
    )
    return fig, fig.subplots()


def png_of(fig, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def histogram_png(
    normal: np.ndarray,
    anomalous: np.ndarray,
    threshold: float | None,
    title: str,
    threshold_label: str,
    names: tuple[str, str] = ("normal", "anomalous"),
) -> bytes:
    """Image-score histograms of two groups (normal and anomalous images, or those judged so) on shared
    bins, the threshold drawn."""
    fig, ax = _figure(4.2, 2.8)
    values = np.concatenate([normal, anomalous, [] if threshold is None else [threshold]])
    bins = np.histogram_bin_edges(values, bins=min(30, max(8, len(values) // 2))) if len(values) else 10
    ax.hist(normal, bins=bins, alpha=0.6, color=NORMAL_COLOUR, label=f"{names[0]} ({len(normal)})")
    ax.hist(anomalous, bins=bins, alpha=0.6, color=ANOMALOUS_COLOUR, label=f"{names[1]} ({len(anomalous)})")
    if threshold is not None:
        ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2, label=threshold_label)
    ax.set_xlabel("image score")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return png_of(fig)


def curve_png(
    x: np.ndarray,
    y: np.ndarray,
    xlabel: str,
    ylabel: str,
    title: str,
    point: tuple[float, float] | None = None,
    xlim: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
    step: bool = False,
) -> bytes:
    """One curve (ROC, PR or PRO), optionally with the operating point of the threshold marked."""
    fig, ax = _figure()
    if step:
        ax.step(x, y, where="post", color=ANOMALOUS_COLOUR, linewidth=1.4)
    else:
        ax.plot(x, y, color=ANOMALOUS_COLOUR, linewidth=1.4)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1)
    if point is not None:
        ax.plot(*point, "o", color=THRESHOLD_COLOUR, markersize=5, label="at the threshold")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(*xlim)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return png_of(fig)


def _lut(name: str = "jet") -> np.ndarray:
    """(256, 3) uint8 colour table of a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def heat(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(h, w) map -> (h, w, 3) uint8 in the jet colours, clipped to the fixed scale [vmin, vmax]."""
    span = vmax - vmin if vmax > vmin else 1.0
    level = np.clip((np.asarray(amap, dtype=np.float32) - vmin) / span, 0, 1)
    return _lut()[(level * 255).astype(np.uint8)]


def contour(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool: the mask's boundary pixels (the mask minus its 4-neighbour erosion)."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def tile_png(image: np.ndarray | None, amap: np.ndarray, mask: np.ndarray, vmin: float, vmax: float) -> bytes:
    """Two panels side by side: the image and the heat map blended over it, both with the mask's contour in
    white (image (h, w, 3) uint8 or None, map (h, w), mask (h, w) bool, same size); the page scales it."""
    colours = heat(amap, vmin, vmax)
    base = image if image is not None else np.full_like(colours, 128)
    blend = (0.5 * base.astype(np.float32) + 0.5 * colours.astype(np.float32)).astype(np.uint8)
    edge = contour(mask)
    panels = []
    for panel in (base.copy(), blend):
        panel[edge] = (255, 255, 255)
        panels.append(panel)
    gap = np.full((base.shape[0], 4, 3), 255, dtype=np.uint8)
    picture = Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1))
    buffer = io.BytesIO()  # 256 colours: a quarter of the bytes of an RGB PNG, hard to tell apart
    picture.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="png")
    return buffer.getvalue()


def colour_bar_png(vmin: float, vmax: float, ticks: Sequence[float] = ()) -> bytes:
    """The fixed colour scale of a class's anomaly maps, with its ends (and any ticks, e.g. a threshold)."""
    fig, ax = _figure(4.2, 0.6, (0.1, 0.3, 0.1, 0.05))
    ax.imshow(np.linspace(0, 1, 256)[None], cmap="jet", aspect="auto", extent=(vmin, vmax, 0, 1))
    ax.set_yticks([])
    for tick in ticks:
        if vmin <= tick <= vmax:
            ax.axvline(tick, color="white", linewidth=1.5)
    ax.tick_params(labelsize=7)
    return png_of(fig)
