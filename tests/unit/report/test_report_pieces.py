"""The report's pieces without a browser: curves against the metrics, tiles, HTML assembly (uad.report)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from uad.metrics.functional import pixel_metrics, pro_curve, ranking_metrics
from uad.report import html
from uad.report.evidence import gallery_rows, thin
from uad.report.plots import contour, heat, operating_point, pr_points, roc_points, tile_png


def test_roc_and_pr_points_by_hand():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    fpr, tpr = roc_points(scores, labels)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    recall, precision = pr_points(scores, labels)
    assert recall.tolist() == [0.5, 0.5, 1, 1] and precision.tolist() == pytest.approx([1, 0.5, 2 / 3, 0.5])


def test_curves_integrate_to_the_reported_auroc_and_ap_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 12, 300).astype(float)  # many ties
    labels = (rng.random(300) < 0.3).astype(int)
    auroc, ap, _ = ranking_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    fpr, tpr = roc_points(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc, abs=1e-12)
    recall, precision = pr_points(scores, labels)
    assert np.sum(np.diff(np.r_[0, recall]) * precision) == pytest.approx(ap, abs=1e-12)


def test_operating_point_counts_false_alarms_and_misses_at_score_above_threshold():
    counts = operating_point(np.array([1.0, 2.0, 3.0, 2.0, 5.0]), np.array([0, 0, 0, 1, 1]), 2.0)
    assert counts == {"tp": 1, "fp": 1, "fn": 1, "tn": 2}  # 2.0 is not above 2.0: a miss and a pass


def test_pro_curve_thinned_to_the_limit_integrates_to_the_exact_aupro():
    gen = torch.Generator().manual_seed(1)
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[0, 4:10, 4:12] = masks[1, 20:30, 2:6] = masks[2, 0:3, 0:3] = True
    maps = torch.rand(4, 32, 32, generator=gen) + 0.7 * masks
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0, 0, 1, 1) and bool((torch.diff(fpr) >= 0).all())
    x, y = thin(fpr.numpy(), pro.numpy(), 0.3, points=10_000)
    assert x[-1] == 0.3 and np.trapezoid(y, x) / 0.3 == pytest.approx(
        pixel_metrics(maps, masks)["AUPRO"], abs=1e-9
    )
    few = thin(fpr.numpy(), pro.numpy(), 0.3, points=50)
    assert len(few[0]) <= 51 and few[0][-1] == 0.3
    assert pro_curve(maps, torch.zeros_like(masks)) is None


def test_gallery_takes_the_highest_normals_and_the_lowest_defectives():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert gallery_rows(scores, labels, 2) == [
        (0, "normal"),
        (2, "normal"),
        (5, "defective"),
        (3, "defective"),
    ]


def test_contour_heat_and_tile():
    mask = np.zeros((10, 10), bool)
    mask[2:7, 3:8] = True
    edge = contour(mask)
    assert edge.sum() == 16 and not edge[4, 5] and edge[2, 3]
    colours = heat(np.array([[0.0, 1.0, 2.0, 5.0]]), 1.0, 2.0)
    assert (colours[0, 0] == colours[0, 1]).all() and (colours[0, 2] == colours[0, 3]).all()
    assert not (colours[0, 0] == colours[0, 2]).all()
    tile = tile_png(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10)), mask, 0, 1)
    picture = Image.open(io.BytesIO(tile)).convert("RGB")
    assert picture.size == (24, 10)  # two panels and a 4-pixel gap
    assert (np.asarray(picture)[2, 3] == 255).all() and (np.asarray(picture)[2, 14 + 3] == 255).all()


def test_page_forbids_fetches_and_sorts_its_tables():
    body = html.table(["class", "I-AUROC"], [["b", ("90.00", 90)], ["a", "-"]], [["mean", "90.00"]])
    page = html.page("t <x>", body + html.img(b"\x89PNG", "alt", "plot-roc"))
    assert "default-src 'none'" in page and "img-src data:" in page
    assert "<title>t &lt;x&gt;</title>" in page and 'data-value="90"' in page
    assert 'class="data sortable"' in page and "<tfoot>" in page and "sortBy" in page
    assert not re.search(r"(src|href)=\"https?:", page)
